"""The training stages of ``clickprompt train``, each a thin function over the shared trainer.

    baseline           the plain CTR backbone, trained from scratch (the reference)
    pretrain           PA-MLM: prompts from the complete IDs + masked text -> recover tokens
    finetune-with-lm   ClickPrompt with the LM: a * lm_logit + (1 - a) * ctr_logit
    finetune-ctr-only  the plain backbone initialised from the PA-MLM checkpoint, fresh head

All read the training sets built through Feast (``feature_repo.training_sets``); each writes
``<run_dir>/<stage>/{model.safetensors, metrics.json}`` and the run keeps config + encoder.
Early stopping uses the validation split; the test split is scored once, at the end.
"""

from __future__ import annotations

import json
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
from models.clickprompt import ClickPrompt, init_ctr_only
from models.config import TrainConfig
from models.ctr import build_ctr_model, count_params
from models.data import IGNORE_INDEX, EncodedSplit, batch_at, encode_split, mask_tokens
from models.encoding import FeatureEncoder
from models.evaluate import evaluate
from models.plm import load_plm, mlm_parts
from models.trainer import Trainer, load_weights, pick_device, predict, result_dict, save_weights, seed_everything

log = logging.getLogger("clickprompt.train")

STAGE_NAMES = ("baseline", "pretrain", "finetune-with-lm", "finetune-ctr-only")
TEXT_STAGES = {"pretrain", "finetune-with-lm"}


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

    def new_backbone(self) -> nn.Module:
        c = self.cfg
        return build_ctr_model(c.backbone, self.encoder.fields, c.backbone_config, c.backbone_preset)

    def new_clickprompt(self) -> ClickPrompt:
        plm, _ = load_plm(self.plm_source)
        c = self.cfg.prompt
        pcfg = prompt_mod.PromptConfig(
            n_prompts=c.n_prompts, hidden=c.hidden, input_only=c.input_only, pooling=self.cfg.pooling
        )
        return ClickPrompt(self.new_backbone(), plm, pcfg)


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
    (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
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
    test = _scorer(ctx, model, score_fn, "test", stage_cfg.eval_batch_size)()
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
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
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
    selected = batch["mlm_labels"] != IGNORE_INDEX  # (B, T)
    logits = mlm_parts(model.plm)[1](fused.last_hidden_state[selected])  # (M, vocab)
    targets = batch["mlm_labels"][selected]  # (M,)
    if targets.numel() == 0:
        return logits.sum() * 0.0, targets, targets, selected
    return F.cross_entropy(logits.float(), targets), logits.argmax(-1), targets, selected


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
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    log.info("pretrain: masked-token acc %.4f with prompts vs %.4f zeroed (value tokens: %.4f vs %.4f)",
             final["mlm_acc"], final["mlm_acc_zero_prompts"], final["mlm_acc_values"],
             final["mlm_acc_values_zero_prompts"])
    ctx.results["pretrain"] = metrics
    return metrics


def _pretrained_state(ctx: RunContext) -> dict | None:
    path = ctx.run_dir / "pretrain" / "model.safetensors"
    if not path.exists():
        log.warning("no PA-MLM checkpoint in %s: finetuning starts from scratch (the no-pretraining ablation)", path.parent)
        return None
    from safetensors.torch import load_file

    return load_file(str(path))


def stage_finetune_with_lm(ctx: RunContext) -> dict:
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


STAGES: dict[str, Callable[[RunContext], dict]] = {
    "baseline": stage_baseline,
    "pretrain": stage_pretrain,
    "finetune-with-lm": stage_finetune_with_lm,
    "finetune-ctr-only": stage_finetune_ctr_only,
}


def run_training(cfg: TrainConfig, paths: Paths, stages: list[str], run_dir: Path) -> dict:
    """Run ``stages`` in order into ``run_dir``; return {stage: metrics} (also in metrics.json)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    ctx = prepare(cfg, paths, run_dir, stages)
    for stage in stages:
        t = time.perf_counter()
        STAGES[stage](ctx)
        ctx.results[stage]["seconds"] = round(time.perf_counter() - t, 2)
    summary = {"config_hash": cfg.config_hash(), "profile": cfg.profile, "method": cfg.method,
               "snapshot_hash": ctx.snapshot_hash, "stages": ctx.results}
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
