"""Cost figures measured side by side in one process: scoring CTR-only vs with the LM, PA-MLM vs plain MLM."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import torch

from core.training_data import TrainingData
from models.builder import ctr_logit, fused_logit
from models.data import batch_at
from models.mlm import mlm_at_labels
from models.prompt import run_plm
from models.runtime import amp_dtype, load_weights, predict
from models.train.config import TrainConfig
from models.train.prepare import prepare
from models.train.setups import pa_mlm
from models.train.stages import CLICKPROMPT_STAGES, Stage


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(cfg: TrainConfig, run_dir: Path, data: TrainingData, plm_source: Path | str, n: int = 5000,
            mlm_batches: int = 12) -> dict:
    """Scoring time per 1,000 test samples of the CTR-only and with-LM models of ``run_dir`` (the
    run's own AMP setting), and PA-MLM training samples/s with prompts vs the plain MLM."""
    ctx = prepare(cfg, data, run_dir / "timing", list(CLICKPROMPT_STAGES), plm_source)
    test = ctx.splits["test"].head(n, seed=0)
    ctr = ctx.new_backbone()
    load_weights(ctr, run_dir / Stage.FINETUNE_CTR_ONLY / "model.safetensors")
    lm = ctx.new_clickprompt()
    load_weights(lm, run_dir / Stage.FINETUNE_WITH_LM / "model.safetensors")
    out: dict = {"samples": len(test), "device": str(ctx.device), "threads": torch.get_num_threads()}
    for name, model, fn in (("ctr_only", ctr, ctr_logit), ("with_lm", lm, fused_logit)):
        predict(model, test.head(1000), fn, 1000, ctx.device, cfg.amp)  # warm-up
        t = time.perf_counter()
        predict(model, test, fn, 1000, ctx.device, cfg.amp)  # returns CPU arrays: the device has finished
        seconds = time.perf_counter() - t
        out[f"{name}_ms_per_1000"] = 1000 * seconds / (len(test) / 1000)
        out[f"{name}_samples_per_s"] = len(test) / seconds
    out["with_lm_over_ctr_only"] = out["with_lm_ms_per_1000"] / out["ctr_only_ms_per_1000"]
    out.update(pamlm_throughput(cfg, ctx, mlm_batches))
    from benchmarks.cost import measure_costs

    # FLOPs per sample, samples/s and utilisation of the LM stages as configured (the choices are
    # benchmarks/bench_training_cost.py's)
    out["training_cost"] = measure_costs(ctx, [Stage.PRETRAIN, Stage.FINETUNE_WITH_LM], n_batches=6, rounds=2, choices=False)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def pamlm_throughput(cfg: TrainConfig, ctx, n_batches: int) -> dict:
    """PA-MLM training samples/s with prompts vs the plain MLM: the same masked batches, each mode
    with a fresh model and optimizer and a warm-up step (optimizer state included) before the timer."""
    masker = ctx.token_masker(seed=0)
    train = ctx.splits["train"].head(cfg.pretrain.batch_size * n_batches, seed=0)
    # the training batch size; smaller on a training split too small for a warm-up and timed batches
    bs = max(1, min(cfg.pretrain.batch_size, len(train) // 3))
    batches = [masker(batch_at(train, idx, ctx.device)) for idx in torch.arange(len(train)).split(bs)]
    if len(batches) < 2:
        raise ValueError("PA-MLM timing needs a warm-up batch and a timed one; "
                         f"the training split has {len(train)} rows")
    dtype = amp_dtype(ctx.device, cfg.amp)

    def plain_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        hidden = run_plm(model.plm, batch["masked_ids"], batch["attention_mask"], None,
                         with_logits=False).last_hidden_state
        return mlm_at_labels(model.plm, hidden, batch["mlm_labels"], model.decoder_vocab).loss  # PA-MLM's head and loss

    def sync() -> None:
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)

    out: dict = {"pamlm_batch_size": bs}
    for name, loss_fn in (("prompted", lambda m, b: pa_mlm(m, b).loss), ("plain", plain_loss)):
        model = ctx.new_clickprompt().to(ctx.device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(batch: dict) -> None:
            opt.zero_grad()
            with torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(model, batch)
            loss.backward()
            opt.step()

        step(batches[0])  # warm-up, AdamW's state allocated here
        sync()
        t = time.perf_counter()
        for batch in batches[1:]:
            step(batch)
        sync()
        samples = sum(len(b["mlm_labels"]) for b in batches[1:])
        out[f"pamlm_{name}_samples_per_s"] = samples / (time.perf_counter() - t)
    out["pamlm_prompted_over_plain"] = out["pamlm_prompted_samples_per_s"] / out["pamlm_plain_samples_per_s"]
    return out
