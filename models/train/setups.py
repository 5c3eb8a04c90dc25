"""What each stage trains: its model, loss, validation and test scoring (``StageSetup``), one
setup function per ``Stage``. ``models.train.run`` fits any of them the same way."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.alt import AltMasker
from models.alt_eval import alt_metrics
from models.builder import ctr_logit, fused_logit, joint_logit, text_logit
from models.clickprompt import ClickPrompt, init_ctr_only
from models.ctr import CTRModel, count_params
from models.data import EncodedSplit, concat_splits
from models.evaluate import evaluate
from models.mlm import MLMResult, mlm_accuracy
from models.plm import load_plm
from models.runtime import load_weights, predict
from models.text_ctr import JointCTR, TextCTR, load_prefixed
from models.train import distributed
from models.train.config import StageConfig
from models.train.prepare import RunContext
from models.train.stages import ALIGNMENT_METHODS, Stage
from models.train.warmup import warm_up_mlm_head

log = logging.getLogger("clickprompt.train")


def fusion_parts(model: ClickPrompt | JointCTR, batch: dict) -> dict[str, torch.Tensor]:
    """The fused click logit and its two branches (B,) each: ClickPrompt's ``a * lm + (1 - a) * ctr``
    or the joint ``a * ctr + (1 - a) * text``."""
    if isinstance(model, ClickPrompt):
        p = model.ctr_parts(batch["x"], batch["input_ids"], batch["attention_mask"])
        return {"fused": p.logit, "ctr_branch": p.ctr_logit, "lm_branch": p.lm_logit}
    j = model.parts(batch["x"], batch["input_ids"], batch["attention_mask"])
    return {"fused": j.logit, "ctr_branch": j.ctr_logit, "lm_branch": j.text_logit}


def bce_step(score_fn: Callable) -> Callable:
    def step(model: nn.Module, batch: dict) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(score_fn(model, batch).float(), batch["label"])

    return step


def pa_mlm(model: ClickPrompt, batch: dict, zero_prompts: bool = False) -> MLMResult:
    """PA-MLM on a batch from ``TokenMasker``: prompts from the complete IDs, masked text."""
    return model.pa_mlm(batch["x"], batch["masked_ids"], batch["attention_mask"], batch["mlm_labels"], zero_prompts)


def _scorer(ctx: RunContext, stage: Stage, model: nn.Module, score_fn: Callable, sc: StageConfig) -> Callable[[], dict]:
    """Validation AUC / LogLoss of ``score_fn`` (early stopping)."""
    data = ctx.split("valid", stage).head(sc.max_eval_samples, seed=ctx.cfg.seed)

    def run() -> dict:
        prob = predict(model, data, score_fn, sc.eval_batch_size, ctx.device, ctx.cfg.amp)
        return evaluate(data.label.numpy(), prob)

    return run


# --- stages: what each trains, then one fit-and-finish ----------------------------------------


@dataclass
class StageSetup:
    """One stage's model, loss and validation: everything ``fit_stage`` needs (and the training-cost
    benchmark times). ``score_fn`` is the click logit of a CTR stage; None for pretraining, whose
    final validation metrics are its result."""

    model: nn.Module
    param_groups: dict[str, list[nn.Parameter]]
    stage_cfg: StageConfig
    step_fn: Callable[[nn.Module, dict], torch.Tensor]  # training loss of one batch
    eval_fn: Callable[[], dict]  # validation metrics (early stopping / best checkpoint)
    monitor: str = "auc"
    mode: str = "max"
    score_fn: Callable[[nn.Module, dict], torch.Tensor] | None = None
    train: EncodedSplit | None = None  # the rows it trains on (None: the train split), before max_train_samples
    before_fit: Callable[[EncodedSplit], None] | None = None  # run on those rows before fitting (head warm-up)
    fused: bool = False  # a with-LM model: its branches are scored on the test rows too
    extra: Callable[[], dict] = dict  # stage-specific metrics.json fields, read after fitting


def _pretrained_state(ctx: RunContext) -> dict | None:
    path = ctx.run_dir / Stage.PRETRAIN / "model.safetensors"
    if not path.exists():
        level = logging.INFO if ctx.cfg.method in ("lm_only", "baseline") else logging.WARNING
        log.log(level, "no pretraining checkpoint in %s: finetuning starts from scratch (no-pretraining)", path.parent)
        return None
    from safetensors.torch import load_file

    return load_file(str(path))


def _ctr_from(ctx: RunContext, state: dict | None) -> CTRModel:
    """The backbone: from the pretraining checkpoint (fresh head) when there is one, else fresh."""
    if state is None:
        return ctx.new_backbone()
    c = ctx.cfg
    return init_ctr_only(c.backbone, ctx.encoder.fields, c.backbone_config, state, c.backbone_preset)


def _text_model(ctx: RunContext, state: dict | None) -> TextCTR:
    """The LM with a fresh click head; its weights from the pretraining checkpoint when there is one."""
    plm, _ = load_plm(ctx.plm_source)
    if state is not None:
        load_prefixed(plm, state, "plm.")
    return TextCTR(plm, ctx.cfg.pooling, ctx.cfg.head)


def _ctr_setup(ctx: RunContext, stage: Stage, model: nn.Module, groups: dict, sc: StageConfig, score_fn: Callable,
               fused: bool = False, extra: Callable[[], dict] = dict) -> StageSetup:
    return StageSetup(model, groups, sc, bce_step(score_fn), _scorer(ctx, stage, model, score_fn, sc),
                      score_fn=score_fn, fused=fused, extra=extra)


def setup_baseline(ctx: RunContext) -> StageSetup:
    """The untouched backbone, trained from scratch on the click label."""
    model = ctx.new_backbone()
    return _ctr_setup(ctx, Stage.BASELINE, model, {"ctr": list(model.parameters())}, ctx.cfg.baseline, ctr_logit)


def _rank_seed(seed: int) -> int:
    """The training masker's seed: ``seed`` alone or on rank 0, one of its own on each other rank
    (the shares of a batch are masked independently, not all alike)."""
    return seed + 7_919 * distributed.current().rank


def pretrain_rows(ctx: RunContext) -> tuple[EncodedSplit | None, EncodedSplit]:
    """(training rows, held-out rows) of pretraining. ``pretrain.rows=train``: the train split (None)
    and the validation split. ``train+valid``: the train and validation rows together (never test),
    less a fixed random slice of them (``max_eval_samples`` rows, else 5%) held out for the checks."""
    c, sc = ctx.cfg, ctx.cfg.pretrain
    valid = ctx.split("valid", Stage.PRETRAIN)
    if sc.rows == "train":
        return None, valid.head(sc.max_eval_samples, c.seed)
    rows = concat_splits(ctx.split("train", Stage.PRETRAIN), valid)
    n_held = min(sc.max_eval_samples or max(1, len(rows) // 20), len(rows) - 1)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(c.seed))
    log.info("pretraining on %d train + valid rows, %d of them held out for the checks", len(rows) - n_held, n_held)
    return rows.take(order[n_held:].sort().values), rows.take(order[:n_held].sort().values)


def setup_pretrain(ctx: RunContext) -> StageSetup:
    """The method's pretraining: ALT's losses (alt, ctrl) or PA-MLM (clickprompt, baseline). Best
    checkpoint / early stopping on the held-out (masked-token or weighted ALT) loss."""
    c, sc = ctx.cfg, ctx.cfg.pretrain
    if c.method == "lm_only":
        raise ValueError("method lm_only has no pretraining stage (it finetunes the plain LM)")
    train, valid = pretrain_rows(ctx)
    warmup: dict = {}

    def warm_up(model: nn.Module, step: Callable) -> Callable[[EncodedSplit], None] | None:
        if not sc.head_warmup_steps:
            return None
        return lambda rows: warmup.update(warm_up_mlm_head(model, step, rows, sc, ctx.device, c.seed, c.amp))

    if c.method in ALIGNMENT_METHODS:
        alt = ctx.new_alt()
        masker = AltMasker(ctx.encoder.fields, ctx.tokenizer.mask_token_id, alt.opts, seed=_rank_seed(c.seed),
                           vocab=ctx.decoder_vocab)
        alt_step = lambda m, b: m(masker(b)).loss  # noqa: E731
        return StageSetup(alt, alt.parameter_groups(), sc, alt_step,
                          lambda: alt_metrics(alt, ctx.encoder.fields, ctx.tokenizer.mask_token_id, ctx.decoder_vocab, valid,
                                              sc.eval_batch_size, ctx.device), monitor="loss", mode="min",
                          extra=lambda: {"objective": alt.opts.model_dump(), "params": count_params(alt),
                                         **({"head_warmup": warmup} if warmup else {})}, train=train, before_fit=warm_up(alt, alt_step))
    model = ctx.new_clickprompt()
    log.info("prompt generator: %s parameters (K=%d, input_only=%s)", f"{model.prompt.param_count():,}",
             c.prompt.n_prompts, c.prompt.input_only)
    masker = ctx.token_masker(seed=_rank_seed(c.seed))
    step = lambda m, b: pa_mlm(m, masker(b)).loss  # noqa: E731
    return StageSetup(model, model.parameter_groups(), sc, step,
                      lambda: mlm_accuracy(model, ctx.token_masker(seed=12345), valid, sc.eval_batch_size, ctx.device),
                      monitor="mlm_loss", mode="min",
                      extra=lambda: {"prompt_params": model.prompt.param_count(),
                                     **({"head_warmup": warmup} if warmup else {})}, train=train,
                      before_fit=warm_up(model, step))


def setup_finetune_with_lm(ctx: RunContext) -> StageSetup:
    """ClickPrompt's prompted LM (clickprompt, baseline), else the backbone and LM jointly."""
    sc = ctx.cfg.finetune_lm
    if ctx.cfg.method in (*ALIGNMENT_METHODS, "lm_only"):
        state = _pretrained_state(ctx)
        joint = JointCTR(_ctr_from(ctx, state), _text_model(ctx, state))
        return _ctr_setup(ctx, Stage.FINETUNE_WITH_LM, joint, joint.parameter_groups(), sc, joint_logit, fused=True,
                          extra=lambda: {"a": float(joint.a.detach()), "initialised_from_pretrain": state is not None})
    model = ctx.new_clickprompt()
    if (ctx.run_dir / Stage.PRETRAIN / "model.safetensors").exists():
        load_weights(model, ctx.run_dir / Stage.PRETRAIN / "model.safetensors")
    else:
        log.warning("no PA-MLM checkpoint: finetuning with the LM starts from the plain PLM (no-pretraining ablation)")
    return _ctr_setup(ctx, Stage.FINETUNE_WITH_LM, model, model.parameter_groups(), sc, fused_logit, fused=True,
                      extra=lambda: {"a": float(model.a.detach())})


def setup_finetune_ctr_only(ctx: RunContext) -> StageSetup:
    state = _pretrained_state(ctx)
    model = _ctr_from(ctx, state)
    return _ctr_setup(ctx, Stage.FINETUNE_CTR_ONLY, model, {"ctr": list(model.parameters())}, ctx.cfg.finetune_ctr,
                      ctr_logit,
                      extra=lambda: {"initialised_from_pretrain": state is not None})


def setup_finetune_lm_only(ctx: RunContext) -> StageSetup:
    """The LM alone on the click label: pooled text -> linear head, BCE."""
    state = _pretrained_state(ctx)
    model = _text_model(ctx, state)
    return _ctr_setup(ctx, Stage.FINETUNE_LM_ONLY, model, model.parameter_groups(), ctx.cfg.finetune_lm, text_logit,
                      extra=lambda: {"initialised_from_pretrain": state is not None})


SETUPS: dict[Stage, Callable[[RunContext], StageSetup]] = {
    Stage.BASELINE: setup_baseline,
    Stage.PRETRAIN: setup_pretrain,
    Stage.FINETUNE_WITH_LM: setup_finetune_with_lm,
    Stage.FINETUNE_CTR_ONLY: setup_finetune_ctr_only,
    Stage.FINETUNE_LM_ONLY: setup_finetune_lm_only,
}
