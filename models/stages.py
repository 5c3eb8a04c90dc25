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
(``METHOD_STAGES``). All read the training sets built through Feast (``feature_repo.training_sets``); each writes
``<run_dir>/<stage>/{model.safetensors, metrics.json}`` and the run keeps config + encoder.
Early stopping uses the validation split; the test split is scored once, at the end.
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

from clickprompt.data.spec import DatasetSpec, load_spec
from clickprompt.settings import Paths
from feature_repo.feature_services import CLICKPROMPT_SERVICE
from feature_repo.training_sets import load_training_sets
from models import prompt as prompt_mod
from models.alt import AltMasker, AltModel, JointCTR, TextCTR, alignment_counts, alignment_metrics, load_prefixed, mlm_at_labels
from models.clickprompt import ClickPrompt, init_ctr_only
from models.config import AltOptions, TrainConfig
from models.ctr import CTRModel, build_ctr_model, count_params
from models.data import EncodedSplit, batch_at, encode_split, mask_tokens
from models.encoding import FeatureEncoder
from models.evaluate import evaluate
from models.plm import load_plm
from models.trainer import (
    Trainer,
    load_weights,
    pick_device,
    predict,
    result_dict,
    save_weights,
    seed_everything,
    write_json_atomic,
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


def alt_objective(cfg: TrainConfig) -> AltOptions:
    """The ALT options a method trains with: ``cfg.alt`` for alt; ctrl keeps the contrastive loss only."""
    if cfg.method == "ctrl":
        return cfg.alt.model_copy(update={"mlm_weight": 0.0, "mtm_weight": 0.0, "contrastive_weight": 1.0})
    return cfg.alt


def resolve_plm(name: str, paths: Paths) -> Path | str:
    """A fetched offline PLM (data/plms/<name>), a local folder, or else a hub name."""
    local = paths.plms / name
    if local.is_dir():
        return local
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    return name


@dataclass
class RunContext:
    cfg: TrainConfig
    paths: Paths
    run_dir: Path
    device: torch.device
    spec: DatasetSpec
    encoder: FeatureEncoder
    splits: dict[str, EncodedSplit]
    snapshot_hash: str
    tokenizer: object | None = None
    plm_source: Path | str | None = None
    results: dict[str, dict] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed: same config, same training data."""
        return f"{self.cfg.config_hash()}-{self.snapshot_hash[:16]}"

    def stage_dir(self, stage: str) -> Path:
        path = self.run_dir / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def new_backbone(self) -> CTRModel:
        c = self.cfg
        return build_ctr_model(c.backbone, self.encoder.fields, c.backbone_config, c.backbone_preset)

    def prompt_config(self) -> prompt_mod.PromptConfig:
        c = self.cfg.prompt
        return prompt_mod.PromptConfig(n_prompts=c.n_prompts, hidden=c.hidden, input_only=c.input_only,
                                       pooling=self.cfg.pooling)

    def new_clickprompt(self) -> ClickPrompt:
        plm, _ = load_plm(self.plm_source)
        model = ClickPrompt(self.new_backbone(), plm, self.prompt_config())
        model.use_prompts = not self.cfg.prompt.disabled
        return model

    def new_alt(self) -> AltModel:
        plm, _ = load_plm(self.plm_source)
        return AltModel(self.new_backbone(), plm, self.prompt_config(), alt_objective(self.cfg))


def prepare(cfg: TrainConfig, paths: Paths, run_dir: Path, stages: list[str]) -> RunContext:
    """Load the Feast training sets, fit vocabularies on train, tokenize when a stage needs text."""
    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    frames, manifest = load_training_sets(paths, CLICKPROMPT_SERVICE)
    spec = load_spec(manifest.dataset)
    encoder = FeatureEncoder.fit(spec, frames["train"])
    tokenizer = plm_source = None
    if TEXT_STAGES & set(stages):
        plm_source = resolve_plm(cfg.plm, paths)
        _, tokenizer = load_plm(plm_source)
    t = time.perf_counter()
    splits = {name: encode_split(f, spec, encoder, tokenizer, cfg.max_len) for name, f in frames.items()}
    log.info("encoded %s in %.1fs", {k: len(v) for k, v in splits.items()}, time.perf_counter() - t)
    run_dir.mkdir(parents=True, exist_ok=True)
    encoder.save(run_dir / "encoder.json")
    write_json_atomic(run_dir / "config.json", cfg.model_dump(mode="json"))
    return RunContext(cfg, paths, run_dir, pick_device(cfg.device), spec, encoder, splits,
                      manifest.snapshot_hash, tokenizer, plm_source)


# --- scoring -------------------------------------------------------------------------------


def ctr_logit(model: nn.Module, batch: dict) -> torch.Tensor:
    return model(batch["x"]).logit


def fused_logit(model: ClickPrompt, batch: dict) -> torch.Tensor:
    return model.ctr(batch["x"], batch["input_ids"], batch["attention_mask"])


def _scorer(ctx: RunContext, model: nn.Module, score_fn: Callable, split: str, batch_size: int, limit=None) -> Callable[[], dict]:
    data = ctx.splits[split].head(limit, seed=ctx.cfg.seed)

    def run() -> dict:
        prob = predict(model, data, score_fn, batch_size, ctx.device, ctx.cfg.amp)
        return evaluate(data.label.numpy(), prob)

    return run


def _bce_step(score_fn: Callable) -> Callable:
    def step(model: nn.Module, batch: dict) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(score_fn(model, batch).float(), batch["label"])

    return step


def _finish(ctx: RunContext, stage: str, model: nn.Module, score_fn: Callable, fit, stage_cfg, extra: dict | None = None) -> dict:
    """Score the test split once with the best weights; write weights and metrics."""
    out_dir = ctx.stage_dir(stage)
    data = ctx.splits["test"]
    prob = predict(model, data, score_fn, stage_cfg.eval_batch_size, ctx.device, ctx.cfg.amp)
    test = evaluate(data.label.numpy(), prob)
    # per-row test predictions: what the long-tail analysis groups by user / item frequency
    data.meta.assign(label=data.label.numpy(), probability=prob).to_parquet(out_dir / "test_predictions.parquet", index=False)
    metrics = {
        "stage": stage,
        "method": ctx.cfg.method,
        "backbone": ctx.cfg.backbone,
        "valid_auc": fit.best_metric,
        "test": test,
        "fit": result_dict(fit),
        "params": count_params(model),
        "config_hash": ctx.cfg.config_hash(),
        "snapshot_hash": ctx.snapshot_hash,
        **(extra or {}),
    }
    save_weights(model, out_dir / "model.safetensors")
    write_json_atomic(out_dir / "metrics.json", metrics)
    log.info("%s: test AUC %.4f, LogLoss %.4f (best valid AUC %.4f)", stage, test["auc"], test["logloss"], fit.best_metric)
    ctx.results[stage] = metrics
    return metrics


# --- stages --------------------------------------------------------------------------------


def stage_baseline(ctx: RunContext) -> dict:
    """The untouched backbone, trained from scratch on the click label."""
    sc = ctx.cfg.baseline
    model = ctx.new_backbone()
    trainer = Trainer(model, sc, {"ctr": list(model.parameters())}, ctx.stage_dir("baseline"), ctx.device,
                      ctx.cfg.amp, ctx.cfg.seed, desc="baseline", fingerprint=ctx.fingerprint)
    fit = trainer.fit(ctx.splits["train"].head(sc.max_train_samples, ctx.cfg.seed), _bce_step(ctr_logit),
                      _scorer(ctx, model, ctr_logit, "valid", sc.eval_batch_size, sc.max_eval_samples))
    return _finish(ctx, "baseline", model, ctr_logit, fit, sc)


def masked_lm_loss(
    model: ClickPrompt, batch: dict, zero_prompts: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PA-MLM loss with the MLM head applied to masked positions only (the vocab projection is the
    costly part of a small LM). Returns (loss, predicted ids (M,), true ids (M,), selected (B, T))."""
    prompts, _ = model.prompts(batch["x"])
    prompt_mask = None
    if zero_prompts:
        prompt_mask = batch["attention_mask"].new_zeros(prompts.batch_size, prompts.n_prompts)  # (B, K)
    fused = prompt_mod.run_plm(model.plm, batch["masked_ids"], batch["attention_mask"], prompts, prompt_mask,
                               with_logits=False)
    out = mlm_at_labels(model.plm, fused.last_hidden_state, batch["mlm_labels"])
    return out.loss, out.pred, out.true, out.selected


class _Masker:
    """Applies BERT masking to a batch (special and padding tokens never masked)."""

    def __init__(self, tokenizer, prob: float, seed: int) -> None:
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.mask_id, self.vocab, self.prob = tokenizer.mask_token_id, len(tokenizer), prob
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: dict) -> dict:
        masked, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], self.special, self.mask_id,
                                     self.vocab, self.prob, self.generator)
        return {**batch, "masked_ids": masked, "mlm_labels": labels}


@torch.no_grad()
def mlm_accuracy(ctx: RunContext, model: ClickPrompt, split: EncodedSplit, batch_size: int) -> dict:
    """Held-out masked-token accuracy and loss, with the prompts and with the prompts zeroed, on
    the SAME masked tokens (fixed masking seed). ``*_values``: only tokens inside a field's value
    (ids, codes, titles, genres), where the ID side carries information the text context lacks;
    the template words ("is", ".") are recovered from context alone and dilute the overall figure.
    """
    model.eval()
    masker = _Masker(ctx.tokenizer, ctx.cfg.pretrain.mask_prob, seed=12345)
    # zero_prompts -> counts: correct, total, loss sum, value-token correct, value-token total
    stats = {zero: np.zeros(5) for zero in (False, True)}
    for index in torch.arange(len(split)).split(batch_size):
        batch = masker(batch_at(split, index, ctx.device))
        for zero in (False, True):
            loss, pred, true, selected = masked_lm_loss(model, batch, zero_prompts=zero)
            hit = pred == true
            values = batch["field_ids"][selected] >= 0  # (M,)
            stats[zero] += [int(hit.sum()), true.numel(), float(loss) * true.numel(),
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


def stage_pretrain(ctx: RunContext, on_step: Callable[[int], None] | None = None) -> dict:
    """The method's pretraining: ALT's losses (alt, ctrl) or PA-MLM (clickprompt, baseline)."""
    if ctx.cfg.method in ALIGNMENT_METHODS:
        return stage_pretrain_alt(ctx, on_step)
    if ctx.cfg.method == "lm_only":
        raise ValueError("method lm_only has no pretraining stage (it finetunes the plain LM)")
    return stage_pretrain_pa_mlm(ctx, on_step)


def stage_pretrain_pa_mlm(ctx: RunContext, on_step: Callable[[int], None] | None = None) -> dict:
    """PA-MLM. Early stopping / best checkpoint on held-out masked-token loss."""
    sc = ctx.cfg.pretrain
    model = ctx.new_clickprompt()
    log.info("prompt generator: %s parameters (K=%d, input_only=%s)", f"{model.prompt.param_count():,}",
             ctx.cfg.prompt.n_prompts, ctx.cfg.prompt.input_only)
    masker = _Masker(ctx.tokenizer, sc.mask_prob, seed=ctx.cfg.seed)
    valid = ctx.splits["valid"].head(sc.max_eval_samples, ctx.cfg.seed)

    def step(m: ClickPrompt, batch: dict) -> torch.Tensor:
        return masked_lm_loss(m, masker(batch))[0]

    out_dir = ctx.stage_dir("pretrain")
    trainer = Trainer(model, sc, model.parameter_groups(), out_dir, ctx.device, ctx.cfg.amp, ctx.cfg.seed,
                      desc="pretrain", fingerprint=ctx.fingerprint)
    fit = trainer.fit(ctx.splits["train"].head(sc.max_train_samples, ctx.cfg.seed), step,
                      lambda: mlm_accuracy(ctx, model, valid, sc.eval_batch_size), monitor="mlm_loss", mode="min",
                      on_step=on_step)
    final = mlm_accuracy(ctx, model, valid, sc.eval_batch_size)
    save_weights(model, out_dir / "model.safetensors")
    metrics = {"stage": "pretrain", "method": ctx.cfg.method, "valid": final, "fit": result_dict(fit),
               "prompt_params": model.prompt.param_count(),
               "config_hash": ctx.cfg.config_hash(), "snapshot_hash": ctx.snapshot_hash}
    write_json_atomic(out_dir / "metrics.json", metrics)
    log.info("pretrain: masked-token acc %.4f with prompts vs %.4f zeroed (value tokens: %.4f vs %.4f)",
             final["mlm_acc"], final["mlm_acc_zero_prompts"], final["mlm_acc_values"],
             final["mlm_acc_values_zero_prompts"])
    ctx.results["pretrain"] = metrics
    return metrics


def alt_metrics(ctx: RunContext, model: AltModel, split: EncodedSplit, batch_size: int) -> dict:
    """Held-out ALT losses and alignment checks (``models.alt.alignment_counts``) on fixed masks
    and negatives (the masking seed is fixed), so successive evaluations are comparable."""
    model.eval()
    masker = AltMasker(ctx.encoder.fields, ctx.tokenizer.mask_token_id, model.opts, seed=12345)
    sums: dict[str, float] = {}
    for index in torch.arange(len(split)).split(batch_size):
        for key, value in alignment_counts(model, masker(batch_at(split, index, ctx.device))).items():
            sums[key] = sums.get(key, 0) + value
    return alignment_metrics(sums)


def stage_pretrain_alt(ctx: RunContext, on_step: Callable[[int], None] | None = None) -> dict:
    """ALT (or CTRL: contrastive only). Early stopping / best checkpoint on the held-out weighted loss."""
    sc = ctx.cfg.pretrain
    model = ctx.new_alt()
    masker = AltMasker(ctx.encoder.fields, ctx.tokenizer.mask_token_id, model.opts, seed=ctx.cfg.seed)
    valid = ctx.splits["valid"].head(sc.max_eval_samples, ctx.cfg.seed)
    out_dir = ctx.stage_dir("pretrain")
    trainer = Trainer(model, sc, model.parameter_groups(), out_dir, ctx.device, ctx.cfg.amp, ctx.cfg.seed,
                      desc=f"pretrain-{ctx.cfg.method}", fingerprint=ctx.fingerprint)
    fit = trainer.fit(ctx.splits["train"].head(sc.max_train_samples, ctx.cfg.seed), lambda m, b: m(masker(b)).loss,
                      lambda: alt_metrics(ctx, model, valid, sc.eval_batch_size), monitor="loss", mode="min",
                      on_step=on_step)
    final = alt_metrics(ctx, model, valid, sc.eval_batch_size)
    save_weights(model, out_dir / "model.safetensors")
    metrics = {"stage": "pretrain", "method": ctx.cfg.method, "objective": model.opts.model_dump(), "valid": final,
               "fit": result_dict(fit), "params": count_params(model),
               "config_hash": ctx.cfg.config_hash(), "snapshot_hash": ctx.snapshot_hash}
    write_json_atomic(out_dir / "metrics.json", metrics)
    log.info("pretrain (%s): %s", ctx.cfg.method, pretrain_summary(metrics))
    ctx.results["pretrain"] = metrics
    return metrics


def pretrain_summary(metrics: dict) -> str:
    """One line of a pretraining stage's held-out alignment checks (for logs and the CLI)."""
    v = metrics["valid"]
    parts = []
    if "retrieval_acc" in v:
        parts.append(f"contrastive loss {v['contrastive_loss']:.3f}, text->ID retrieval {v['retrieval_acc']:.3f} "
                     f"(chance {v['retrieval_chance']:.4f})")
    if "mlm_acc_zero_prompts" in v:
        parts.append(f"masked-token acc {v['mlm_acc']:.4f} with prompts, {v['mlm_acc_zero_prompts']:.4f} zeroed")
    if "mtm_acc" in v:
        parts.append(f"masked-feature acc {v['mtm_acc']:.3f} with text, {v['mtm_acc_text_zeroed']:.3f} zeroed, "
                     f"{v['mtm_acc_text_shuffled']:.3f} another row's (chance {v['mtm_chance']:.3f})")
    return "; ".join(parts)


def _pretrained_state(ctx: RunContext) -> dict | None:
    path = ctx.run_dir / "pretrain" / "model.safetensors"
    if not path.exists():
        level = logging.INFO if ctx.cfg.method in ("lm_only", "baseline") else logging.WARNING
        log.log(level, "no pretraining checkpoint in %s: finetuning starts from scratch (no-pretraining)", path.parent)
        return None
    from safetensors.torch import load_file

    return load_file(str(path))


def stage_finetune_with_lm(ctx: RunContext) -> dict:
    """ClickPrompt's prompted LM (clickprompt, baseline), else the backbone and LM jointly."""
    if ctx.cfg.method in (*ALIGNMENT_METHODS, "lm_only"):
        return stage_finetune_joint(ctx)
    sc = ctx.cfg.finetune_lm
    model = ctx.new_clickprompt()
    if (ctx.run_dir / "pretrain" / "model.safetensors").exists():
        load_weights(model, ctx.run_dir / "pretrain" / "model.safetensors")
    else:
        log.warning("no PA-MLM checkpoint: finetuning with the LM starts from the plain PLM (no-pretraining ablation)")
    trainer = Trainer(model, sc, model.parameter_groups(), ctx.stage_dir("finetune-with-lm"), ctx.device,
                      ctx.cfg.amp, ctx.cfg.seed, desc="finetune-with-lm", fingerprint=ctx.fingerprint)
    fit = trainer.fit(ctx.splits["train"].head(sc.max_train_samples, ctx.cfg.seed), _bce_step(fused_logit),
                      _scorer(ctx, model, fused_logit, "valid", sc.eval_batch_size, sc.max_eval_samples))
    return _finish(ctx, "finetune-with-lm", model, fused_logit, fit, sc, {"a": float(model.a.detach())})


def stage_finetune_ctr_only(ctx: RunContext) -> dict:
    sc = ctx.cfg.finetune_ctr
    state = _pretrained_state(ctx)
    if state is None:
        model = ctx.new_backbone()
    else:
        c = ctx.cfg
        model = init_ctr_only(c.backbone, ctx.encoder.fields, c.backbone_config, state, c.backbone_preset)
    trainer = Trainer(model, sc, {"ctr": list(model.parameters())}, ctx.stage_dir("finetune-ctr-only"), ctx.device,
                      ctx.cfg.amp, ctx.cfg.seed, desc="finetune-ctr-only", fingerprint=ctx.fingerprint)
    fit = trainer.fit(ctx.splits["train"].head(sc.max_train_samples, ctx.cfg.seed), _bce_step(ctr_logit),
                      _scorer(ctx, model, ctr_logit, "valid", sc.eval_batch_size, sc.max_eval_samples))
    return _finish(ctx, "finetune-ctr-only", model, ctr_logit, fit, sc, {"initialised_from_pretrain": state is not None})


def text_logit(model: TextCTR, batch: dict) -> torch.Tensor:
    return model(batch["input_ids"], batch["attention_mask"])


def joint_logit(model: JointCTR, batch: dict) -> torch.Tensor:
    return model(batch["x"], batch["input_ids"], batch["attention_mask"])


def _text_model(ctx: RunContext, state: dict | None) -> TextCTR:
    """The LM with a fresh click head; its weights from the pretraining checkpoint when there is one."""
    plm, _ = load_plm(ctx.plm_source)
    if state is not None:
        load_prefixed(plm, state, "plm.")
    return TextCTR(plm, ctx.cfg.pooling)


def stage_finetune_lm_only(ctx: RunContext) -> dict:
    """The LM alone on the click label: pooled text -> linear head, BCE."""
    sc = ctx.cfg.finetune_lm
    state = _pretrained_state(ctx)
    model = _text_model(ctx, state)
    trainer = Trainer(model, sc, model.parameter_groups(), ctx.stage_dir("finetune-lm-only"), ctx.device,
                      ctx.cfg.amp, ctx.cfg.seed, desc="finetune-lm-only", fingerprint=ctx.fingerprint)
    fit = trainer.fit(ctx.splits["train"].head(sc.max_train_samples, ctx.cfg.seed), _bce_step(text_logit),
                      _scorer(ctx, model, text_logit, "valid", sc.eval_batch_size, sc.max_eval_samples))
    return _finish(ctx, "finetune-lm-only", model, text_logit, fit, sc, {"initialised_from_pretrain": state is not None})


def stage_finetune_joint(ctx: RunContext) -> dict:
    """Backbone and LM jointly, a * ctr_logit + (1 - a) * text_logit, both from the pretraining checkpoint."""
    sc, c = ctx.cfg.finetune_lm, ctx.cfg
    state = _pretrained_state(ctx)
    if state is None:
        ctr = ctx.new_backbone()
    else:
        ctr = init_ctr_only(c.backbone, ctx.encoder.fields, c.backbone_config, state, c.backbone_preset)
    model = JointCTR(ctr, _text_model(ctx, state))
    trainer = Trainer(model, sc, model.parameter_groups(), ctx.stage_dir("finetune-with-lm"), ctx.device,
                      ctx.cfg.amp, ctx.cfg.seed, desc="finetune-with-lm", fingerprint=ctx.fingerprint)
    fit = trainer.fit(ctx.splits["train"].head(sc.max_train_samples, ctx.cfg.seed), _bce_step(joint_logit),
                      _scorer(ctx, model, joint_logit, "valid", sc.eval_batch_size, sc.max_eval_samples))
    return _finish(ctx, "finetune-with-lm", model, joint_logit, fit, sc,
                   {"a": float(model.a.detach()), "initialised_from_pretrain": state is not None})


STAGES: dict[str, Callable[[RunContext], dict]] = {
    "baseline": stage_baseline,
    "pretrain": stage_pretrain,
    "finetune-with-lm": stage_finetune_with_lm,
    "finetune-ctr-only": stage_finetune_ctr_only,
    "finetune-lm-only": stage_finetune_lm_only,
}


def run_training(cfg: TrainConfig, paths: Paths, stages: list[str], run_dir: Path) -> dict:
    """Run ``stages`` in order into ``run_dir``; return {stage: metrics} (also in metrics.json)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    if cfg.method == "lm_only" and "pretrain" in stages:
        raise ValueError("method lm_only has no pretraining stage (it finetunes the plain LM)")
    ctx = prepare(cfg, paths, run_dir, stages)
    for stage in stages:
        t = time.perf_counter()
        STAGES[stage](ctx)
        ctx.results[stage]["seconds"] = round(time.perf_counter() - t, 2)
    summary = {"config_hash": cfg.config_hash(), "profile": cfg.profile, "method": cfg.method,
               "snapshot_hash": ctx.snapshot_hash, "stages": ctx.results}
    write_json_atomic(run_dir / "metrics.json", summary)  # written last: its presence marks a finished run
    return summary
