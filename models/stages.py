"""The training stages of ``clickprompt train``, each a thin function over the shared trainer.

    baseline           the plain CTR backbone, trained from scratch (the reference)
    pretrain           the method's objective: PA-MLM (clickprompt: prompts from the complete IDs
                       + masked text -> recover tokens), ALT's three losses (alt), or ALT's
                       contrastive loss alone (ctrl)
    finetune-with-lm   clickprompt: ClickPrompt with the LM, a * lm_logit + (1 - a) * ctr_logit;
                       alt / ctrl / lm_only: backbone and LM jointly, a * ctr_logit + (1 - a) * text_logit
    finetune-ctr-only  the plain backbone initialised from the pretraining checkpoint, fresh head
    finetune-lm-only   the LM alone (pooled text -> linear head), from the pretraining checkpoint's
                       LM when there is one (method lm_only: the plain LM, CTR-BERT / PTab style)

``method`` (TrainConfig) picks the pretraining objective and the default stage list
(``METHOD_STAGES``). A run trains on ``core.training_data.TrainingData`` (the point-in-time
training sets as frames, with their spec and snapshot hash; the flows load them through Feast);
each stage writes ``<run_dir>/<stage>/{model.safetensors, metrics.json}`` and the run keeps
config, encoder and the MLM decoder's vocabulary.
Early stopping uses the validation split; the test split is scored once, at the end.

Under torchrun (``models.distributed``) every rank runs the same ``run_training``: the trainer
trains data-parallel; rank 0 alone keeps config, encoder and decoder vocabulary, evaluates,
scores the test split and writes, and each stage's metrics reach every rank by broadcast. ``clickprompt train`` runs the
pipeline on rank 0 only; the other ranks ``follow_training``, one announced stage at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.io import write_json_atomic
from core.spec import DatasetSpec
from core.training_data import TrainingData
from models import builder, distributed
from models.alt import AltMasker, AltModel, alignment_counts, alignment_metrics
from models.builder import ctr_logit, fused_logit, joint_logit, text_logit
from models.clickprompt import ClickPrompt, init_ctr_only
from models.config import StageConfig, TrainConfig
from models.ctr import CTRModel, count_params
from models.data import EncodedSplit, batch_at, encode_split
from models.encoding import FeatureEncoder
from models.evaluate import evaluate
from models.metrics import pretrain_summary
from models.mlm import DecoderVocab, MLMResult, TokenMasker
from models.plm import load_plm
from models.text_ctr import JointCTR, TextCTR, load_prefixed
from models.trainer import (
    FitResult,
    Trainer,
    eval_batches,
    load_weights,
    pick_device,
    predict,
    predict_parts,
    result_dict,
    save_weights,
    seed_everything,
)

log = logging.getLogger("clickprompt.train")

STAGE_NAMES = ("baseline", "pretrain", "finetune-with-lm", "finetune-ctr-only")  # ClickPrompt's run ("all")
ALL_STAGES = (*STAGE_NAMES, "finetune-lm-only")
TEXT_STAGES = {"pretrain", "finetune-with-lm", "finetune-lm-only"}
# The default stage list of each method (``clickprompt train --method M``; --stages overrides).
METHOD_STAGES: dict[str, tuple[str, ...]] = {
    "baseline": ("baseline",),
    "clickprompt": STAGE_NAMES,
    "alt": ("pretrain", "finetune-ctr-only", "finetune-lm-only", "finetune-with-lm"),
    "ctrl": ("pretrain", "finetune-ctr-only"),
    "lm_only": ("finetune-lm-only",),
}
ALIGNMENT_METHODS = ("alt", "ctrl")  # methods whose pretraining is ALT's (ctrl: its contrastive loss alone)


def default_stages(method: str) -> list[str]:
    if method not in METHOD_STAGES:
        raise ValueError(f"unknown method {method!r}; known: {sorted(METHOD_STAGES)}")
    return list(METHOD_STAGES[method])


@dataclass
class RunContext:
    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    spec: DatasetSpec
    encoder: FeatureEncoder
    splits: dict[str, EncodedSplit]
    snapshot_hash: str
    tokenizer: object | None = None
    plm_source: Path | str | None = None
    decoder_vocab: DecoderVocab | None = None  # the MLM decoder's rows (None: the whole vocabulary)
    results: dict[str, dict] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed: same config, same training data."""
        return f"{self.cfg.config_hash()}-{self.snapshot_hash[:16]}"

    def stage_dir(self, stage: str) -> Path:
        path = self.run_dir / stage
        if distributed.current().is_main:  # rank 0 alone writes the run folder
            path.mkdir(parents=True, exist_ok=True)
        return path

    def new_backbone(self) -> CTRModel:
        return builder.new_backbone(self.cfg, self.encoder.fields)

    def new_clickprompt(self) -> ClickPrompt:
        return builder.new_clickprompt(self.cfg, self.encoder.fields, self.plm_source, self.decoder_vocab)

    def new_alt(self) -> AltModel:
        return builder.new_alt(self.cfg, self.encoder.fields, self.plm_source, self.decoder_vocab)

    def token_masker(self, seed: int) -> TokenMasker:
        return TokenMasker(self.tokenizer, self.cfg.pretrain.mask_prob, seed, self.decoder_vocab)


DECODER_VOCAB_FILE = "decoder_vocab.json"


def run_decoder_vocab(cfg: TrainConfig, tokenizer, train: EncodedSplit, run_dir: Path) -> DecoderVocab | None:
    """The run's MLM decoder rows: the token ids of its training texts plus the special tokens,
    computed once and kept in ``<run_dir>/decoder_vocab.json`` (evaluation and a resumed run read
    the same set); None with ``pretrain.decoder_vocab=full``."""
    if cfg.pretrain.decoder_vocab == "full":
        return None
    path = run_dir / DECODER_VOCAB_FILE
    special = sorted(set(tokenizer.all_special_ids))
    if path.exists():
        stored = DecoderVocab.load(path)
        seen = train.input_ids[train.attention_mask.bool()].unique()
        if stored.vocab_size == len(tokenizer) and bool(torch.isin(seen, stored.ids).all()):
            return stored
        log.warning("%s does not cover this run's training texts; computed again", path)
    vocab = DecoderVocab.from_texts(train.input_ids, train.attention_mask, special, len(tokenizer))
    vocab.save(path)
    log.info("MLM decoder: %d of %d token ids (the training texts' and the special tokens)", len(vocab), len(tokenizer))
    return vocab


def prepare(cfg: TrainConfig, data: TrainingData, run_dir: Path, stages: list[str],
            plm_source: Path | str | None = None) -> RunContext:
    """Fit vocabularies on the training split, tokenize when a stage needs text (with the PLM at
    ``plm_source``, default ``cfg.plm`` as a folder or hub name), keep config and encoder with the run."""
    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    spec, frames = data.spec, data.frames
    encoder = FeatureEncoder.fit(spec, frames["train"])
    tokenizer = None
    if TEXT_STAGES & set(stages):
        plm_source = plm_source or cfg.plm
        _, tokenizer = load_plm(plm_source)
    t = time.perf_counter()
    splits = {name: encode_split(f, spec, encoder, tokenizer, cfg.max_len) for name, f in frames.items()}
    log.info("encoded %s in %.1fs", {k: len(v) for k, v in splits.items()}, time.perf_counter() - t)
    dist = distributed.current()
    vocab = None
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        encoder.save(run_dir / "encoder.json")
        write_json_atomic(run_dir / "config.json", cfg.model_dump(mode="json"))
        vocab = run_decoder_vocab(cfg, tokenizer, splits["train"], run_dir) if tokenizer is not None else None
    vocab = distributed.broadcast_object(vocab)  # the decoder's rows shape the model: rank 0's on every rank
    device = dist.device or pick_device(cfg.device)  # a rank's own device under torchrun
    return RunContext(cfg, run_dir, device, spec, encoder, splits, data.snapshot_hash, tokenizer, plm_source, vocab)


# --- scoring and losses ------------------------------------------------------------------


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


def _scorer(ctx: RunContext, model: nn.Module, score_fn: Callable, sc: StageConfig) -> Callable[[], dict]:
    """Validation AUC / LogLoss of ``score_fn`` (early stopping)."""
    data = ctx.splits["valid"].head(sc.max_eval_samples, seed=ctx.cfg.seed)

    def run() -> dict:
        prob = predict(model, data, score_fn, sc.eval_batch_size, ctx.device, ctx.cfg.amp)
        return evaluate(data.label.numpy(), prob)

    return run


@torch.no_grad()
def mlm_accuracy(ctx: RunContext, model: ClickPrompt, split: EncodedSplit, batch_size: int) -> dict:
    """Held-out masked-token accuracy and loss, with the prompts and with the prompts zeroed, on
    the SAME masked tokens (fixed masking seed). ``*_values``: only tokens inside a field's value
    (ids, codes, titles, genres), where the ID side carries information the text context lacks;
    the template words ("is", ".") are recovered from context alone and dilute the overall figure.
    """
    model.eval()
    masker = ctx.token_masker(seed=12345)
    # zero_prompts -> counts: correct, total, loss sum, value-token correct, value-token total
    stats = {zero: np.zeros(5) for zero in (False, True)}
    for index in eval_batches(split, batch_size):
        batch = masker(batch_at(split, index, ctx.device))
        for zero in (False, True):
            out = pa_mlm(model, batch, zero_prompts=zero)
            hit = out.pred == out.true
            values = batch["field_ids"][out.selected] >= 0  # (M,)
            stats[zero] += [int(hit.sum()), out.true.numel(), float(out.loss) * out.true.numel(),
                            int(hit[values].sum()), int(values.sum())]
    with_p, zeroed = stats[False], stats[True]
    return {
        "mlm_acc": with_p[0] / max(with_p[1], 1),
        "mlm_acc_zero_prompts": zeroed[0] / max(zeroed[1], 1),
        "mlm_acc_values": with_p[3] / max(with_p[4], 1),
        "mlm_acc_values_zero_prompts": zeroed[3] / max(zeroed[4], 1),
        "mlm_loss": with_p[2] / max(with_p[1], 1),
        "mlm_loss_zero_prompts": zeroed[2] / max(zeroed[1], 1),
        "masked_tokens": int(with_p[1]),
        "masked_value_tokens": int(with_p[4]),
    }


def alt_metrics(ctx: RunContext, model: AltModel, split: EncodedSplit, batch_size: int) -> dict:
    """Held-out ALT losses and alignment checks (``models.alt.alignment_counts``) on fixed masks
    and negatives (the masking seed is fixed), so successive evaluations are comparable."""
    model.eval()
    masker = AltMasker(ctx.encoder.fields, ctx.tokenizer.mask_token_id, model.opts, seed=12345, vocab=ctx.decoder_vocab)
    sums: dict[str, float] = {}
    for index in eval_batches(split, batch_size):
        for key, value in alignment_counts(model, masker(batch_at(split, index, ctx.device))).items():
            sums[key] = sums.get(key, 0) + value
    return alignment_metrics(sums)


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
    fused: bool = False  # a with-LM model: its branches are scored on the test rows too
    extra: Callable[[], dict] = dict  # stage-specific metrics.json fields, read after fitting


def _pretrained_state(ctx: RunContext) -> dict | None:
    path = ctx.run_dir / "pretrain" / "model.safetensors"
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
    return TextCTR(plm, ctx.cfg.pooling)


def _ctr_setup(ctx: RunContext, model: nn.Module, groups: dict, sc: StageConfig, score_fn: Callable,
               fused: bool = False, extra: Callable[[], dict] = dict) -> StageSetup:
    return StageSetup(model, groups, sc, bce_step(score_fn), _scorer(ctx, model, score_fn, sc), score_fn=score_fn,
                      fused=fused, extra=extra)


def setup_baseline(ctx: RunContext) -> StageSetup:
    """The untouched backbone, trained from scratch on the click label."""
    model = ctx.new_backbone()
    return _ctr_setup(ctx, model, {"ctr": list(model.parameters())}, ctx.cfg.baseline, ctr_logit)


def _rank_seed(seed: int) -> int:
    """The training masker's seed: ``seed`` alone or on rank 0, one of its own on each other rank
    (the shares of a batch are masked independently, not all alike)."""
    return seed + 7_919 * distributed.current().rank


def setup_pretrain(ctx: RunContext) -> StageSetup:
    """The method's pretraining: ALT's losses (alt, ctrl) or PA-MLM (clickprompt, baseline). Best
    checkpoint / early stopping on the held-out (masked-token or weighted ALT) loss."""
    c, sc = ctx.cfg, ctx.cfg.pretrain
    if c.method == "lm_only":
        raise ValueError("method lm_only has no pretraining stage (it finetunes the plain LM)")
    valid = ctx.splits["valid"].head(sc.max_eval_samples, c.seed)
    if c.method in ALIGNMENT_METHODS:
        alt = ctx.new_alt()
        masker = AltMasker(ctx.encoder.fields, ctx.tokenizer.mask_token_id, alt.opts, seed=_rank_seed(c.seed),
                           vocab=ctx.decoder_vocab)
        return StageSetup(alt, alt.parameter_groups(), sc, lambda m, b: m(masker(b)).loss,
                          lambda: alt_metrics(ctx, alt, valid, sc.eval_batch_size), monitor="loss", mode="min",
                          extra=lambda: {"objective": alt.opts.model_dump(), "params": count_params(alt)})
    model = ctx.new_clickprompt()
    log.info("prompt generator: %s parameters (K=%d, input_only=%s)", f"{model.prompt.param_count():,}",
             c.prompt.n_prompts, c.prompt.input_only)
    masker = ctx.token_masker(seed=_rank_seed(c.seed))
    return StageSetup(model, model.parameter_groups(), sc, lambda m, b: pa_mlm(m, masker(b)).loss,
                      lambda: mlm_accuracy(ctx, model, valid, sc.eval_batch_size), monitor="mlm_loss", mode="min",
                      extra=lambda: {"prompt_params": model.prompt.param_count()})


def setup_finetune_with_lm(ctx: RunContext) -> StageSetup:
    """ClickPrompt's prompted LM (clickprompt, baseline), else the backbone and LM jointly."""
    sc = ctx.cfg.finetune_lm
    if ctx.cfg.method in (*ALIGNMENT_METHODS, "lm_only"):
        state = _pretrained_state(ctx)
        joint = JointCTR(_ctr_from(ctx, state), _text_model(ctx, state))
        return _ctr_setup(ctx, joint, joint.parameter_groups(), sc, joint_logit, fused=True,
                          extra=lambda: {"a": float(joint.a.detach()), "initialised_from_pretrain": state is not None})
    model = ctx.new_clickprompt()
    if (ctx.run_dir / "pretrain" / "model.safetensors").exists():
        load_weights(model, ctx.run_dir / "pretrain" / "model.safetensors")
    else:
        log.warning("no PA-MLM checkpoint: finetuning with the LM starts from the plain PLM (no-pretraining ablation)")
    return _ctr_setup(ctx, model, model.parameter_groups(), sc, fused_logit, fused=True,
                      extra=lambda: {"a": float(model.a.detach())})


def setup_finetune_ctr_only(ctx: RunContext) -> StageSetup:
    state = _pretrained_state(ctx)
    model = _ctr_from(ctx, state)
    return _ctr_setup(ctx, model, {"ctr": list(model.parameters())}, ctx.cfg.finetune_ctr, ctr_logit,
                      extra=lambda: {"initialised_from_pretrain": state is not None})


def setup_finetune_lm_only(ctx: RunContext) -> StageSetup:
    """The LM alone on the click label: pooled text -> linear head, BCE."""
    state = _pretrained_state(ctx)
    model = _text_model(ctx, state)
    return _ctr_setup(ctx, model, model.parameter_groups(), ctx.cfg.finetune_lm, text_logit,
                      extra=lambda: {"initialised_from_pretrain": state is not None})


SETUPS: dict[str, Callable[[RunContext], StageSetup]] = {
    "baseline": setup_baseline,
    "pretrain": setup_pretrain,
    "finetune-with-lm": setup_finetune_with_lm,
    "finetune-ctr-only": setup_finetune_ctr_only,
    "finetune-lm-only": setup_finetune_lm_only,
}
STAGES = tuple(SETUPS)


def fit_stage(ctx: RunContext, stage: str) -> dict:
    """Train ``stage`` (resumable), then score it once: a CTR stage on the whole test split with its
    best weights (a with-LM model's branches on the same rows too), a pretraining stage on its
    held-out checks. Writes ``<stage>/model.safetensors`` and ``<stage>/metrics.json``."""
    setup = SETUPS[stage](ctx)
    sc, out_dir = setup.stage_cfg, ctx.stage_dir(stage)
    desc = f"{stage}-{ctx.cfg.method}" if stage == "pretrain" and ctx.cfg.method in ALIGNMENT_METHODS else stage
    trainer = Trainer(setup.model, sc, setup.param_groups, out_dir, ctx.device, ctx.cfg.amp, ctx.cfg.seed,
                      desc=desc, fingerprint=ctx.fingerprint)
    fit = trainer.fit(ctx.splits["train"].head(sc.max_train_samples, ctx.cfg.seed), setup.step_fn, setup.eval_fn,
                      monitor=setup.monitor, mode=setup.mode)
    # rank 0 scores and writes; every rank returns its metrics
    metrics = distributed.broadcast_object(_finish_stage(ctx, stage, setup, fit) if distributed.current().is_main
                                           else None)
    ctx.results[stage] = metrics
    return metrics


def _finish_stage(ctx: RunContext, stage: str, setup: StageSetup, fit: FitResult) -> dict:
    """The fitted stage scored (test split or held-out checks), its weights and metrics.json written."""
    out_dir = ctx.stage_dir(stage)
    metrics: dict = {"stage": stage, "method": ctx.cfg.method, "backbone": ctx.cfg.backbone}
    if setup.score_fn is None:
        metrics["valid"] = setup.eval_fn()
    else:
        metrics.update(valid_auc=fit.best_metric, **_test_metrics(ctx, stage, setup))
    metrics.update(trained_on={"rows": fit.train_rows, "epochs": round(fit.epochs_run, 3)}, fit=result_dict(fit),
                   config_hash=ctx.cfg.config_hash(), snapshot_hash=ctx.snapshot_hash, **setup.extra())
    metrics.setdefault("params", count_params(setup.model))
    save_weights(setup.model, out_dir / "model.safetensors")
    write_json_atomic(out_dir / "metrics.json", metrics)
    if setup.score_fn is None:
        log.info("%s (%s): %s", stage, ctx.cfg.method, pretrain_summary(metrics))
    else:
        log.info("%s: test AUC %.4f, LogLoss %.4f (best valid AUC %.4f)", stage, metrics["test"]["auc"],
                 metrics["test"]["logloss"], fit.best_metric)
    if "branches" in metrics:
        b = metrics["branches"]
        log.info("%s on the same test rows: fused AUC %.4f, CTR branch alone %.4f, LM branch alone %.4f, a=%.3f",
                 stage, b["fused"]["auc"], b["ctr_branch"]["auc"], b["lm_branch"]["auc"], metrics["a"])
    return metrics


def _test_metrics(ctx: RunContext, stage: str, setup: StageSetup) -> dict:
    """The test split scored once; per-row predictions kept for the long-tail analysis."""
    data, sc = ctx.splits["test"], setup.stage_cfg
    out: dict = {}
    if setup.fused:
        probs = predict_parts(setup.model, data, fusion_parts, sc.eval_batch_size, ctx.device, ctx.cfg.amp)
        out["branches"] = {name: evaluate(data.label.numpy(), p) for name, p in probs.items()}
        prob = probs["fused"]
    else:
        prob = predict(setup.model, data, setup.score_fn, sc.eval_batch_size, ctx.device, ctx.cfg.amp)
    out["test"] = evaluate(data.label.numpy(), prob)
    data.meta.assign(label=data.label.numpy(), probability=prob).to_parquet(
        ctx.stage_dir(stage) / "test_predictions.parquet", index=False)
    return out


def run_training(cfg: TrainConfig, data: TrainingData, stages: list[str], run_dir: Path,
                 plm_source: Path | str | None = None) -> dict:
    """Run ``stages`` in order into ``run_dir`` on ``data``; return {stage: metrics} (also in metrics.json)."""
    unknown = [s for s in stages if s not in SETUPS]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {list(SETUPS)}")
    if cfg.method == "lm_only" and "pretrain" in stages:
        raise ValueError("method lm_only has no pretraining stage (it finetunes the plain LM)")
    distributed.announce((cfg, data, stages, run_dir, plm_source))  # the waiting ranks of a CLI run join in
    ctx = prepare(cfg, data, run_dir, stages, plm_source)
    for stage in stages:
        t = time.perf_counter()
        fit_stage(ctx, stage)
        ctx.results[stage]["seconds"] = round(time.perf_counter() - t, 2)
    summary = {"config_hash": cfg.config_hash(), "profile": cfg.profile, "method": cfg.method,
               "snapshot_hash": ctx.snapshot_hash, "stages": ctx.results}
    if distributed.current().is_main:
        write_json_atomic(run_dir / "metrics.json", summary)  # written last: its presence marks a finished run
    return summary


def follow_training() -> None:
    """A rank after 0 of ``clickprompt train`` under torchrun: train every run rank 0's pipeline
    announces (cached stages are never announced), until rank 0 has finished."""
    while (job := distributed.next_job()) is not None:
        run_training(*job)
