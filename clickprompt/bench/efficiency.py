"""Cost figures measured side by side in one process: scoring CTR-only vs with the LM, PA-MLM vs plain MLM."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from clickprompt.settings import Paths
from models.config import TrainConfig
from models.data import IGNORE_INDEX, batch_at
from models.plm import mlm_parts
from models.prompt import run_plm
from models.stages import STAGE_NAMES, _Masker, ctr_logit, fused_logit, masked_lm_loss, prepare
from models.trainer import load_weights, predict


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(cfg: TrainConfig, run_dir: Path, paths: Paths, n: int = 5000, mlm_batches: int = 12) -> dict:
    """Scoring time per 1,000 test samples of the CTR-only and with-LM models of ``run_dir``, and
    PA-MLM training samples/s with prompts vs the plain MLM on the same LM and batches."""
    ctx = prepare(cfg, paths, run_dir / "timing", list(STAGE_NAMES))
    test = ctx.splits["test"].head(n, seed=0)
    ctr = ctx.new_backbone()
    load_weights(ctr, run_dir / "finetune-ctr-only" / "model.safetensors")
    lm = ctx.new_clickprompt()
    load_weights(lm, run_dir / "finetune-with-lm" / "model.safetensors")
    out: dict = {"samples": len(test), "device": str(ctx.device), "threads": torch.get_num_threads()}
    for name, model, fn in (("ctr_only", ctr, ctr_logit), ("with_lm", lm, fused_logit)):
        predict(model, test.head(1000), fn, 1000, ctx.device)  # warm-up
        t = time.perf_counter()
        predict(model, test, fn, 1000, ctx.device)
        seconds = time.perf_counter() - t
        out[f"{name}_ms_per_1000"] = 1000 * seconds / (len(test) / 1000)
        out[f"{name}_samples_per_s"] = len(test) / seconds
    out["with_lm_over_ctr_only"] = out["with_lm_ms_per_1000"] / out["ctr_only_ms_per_1000"]

    masker = _Masker(ctx.tokenizer, cfg.pretrain.mask_prob, seed=0)
    bs = cfg.pretrain.batch_size
    train = ctx.splits["train"].head(bs * mlm_batches, seed=0)
    batches = [masker(batch_at(train, idx, ctx.device)) for idx in torch.arange(len(train)).split(bs)]
    model = ctx.new_clickprompt().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def plain_step(batch: dict) -> torch.Tensor:
        hidden = run_plm(model.plm, batch["masked_ids"], batch["attention_mask"], None, with_logits=False).last_hidden_state
        selected = batch["mlm_labels"] != IGNORE_INDEX
        return F.cross_entropy(mlm_parts(model.plm)[1](hidden[selected]), batch["mlm_labels"][selected])

    for name, step in (("prompted", lambda b: masked_lm_loss(model, b)[0]), ("plain", plain_step)):
        step(batches[0]).backward()  # warm-up
        t = time.perf_counter()
        for batch in batches[1:]:
            opt.zero_grad()
            step(batch).backward()
            opt.step()
        out[f"pamlm_{name}_samples_per_s"] = bs * (len(batches) - 1) / (time.perf_counter() - t)
    out["pamlm_prompted_over_plain"] = out["pamlm_prompted_samples_per_s"] / out["pamlm_plain_samples_per_s"]
    out["peak_rss_mb"] = peak_rss_mb()
    return out
