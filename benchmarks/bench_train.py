"""ClickPrompt on real MovieLens-100K: quality over seeds, inference cost, PA-MLM throughput.

    .venv/bin/python benchmarks/bench_train.py [--profile demo] [--seeds 1 2 3] [--out DIR]

Needs the data path done (``make demo`` or the README's data commands) and the default LM
fetched. Per seed, on the same temporal split: DCNv2 baseline, ClickPrompt CTR-only,
ClickPrompt with the LM (test AUC / LogLoss). Then, in the same process and on the same
machine, side by side: scoring time per 1,000 samples of CTR-only vs with-LM, and PA-MLM
training samples/s with prompts vs plain MLM on the same LM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from clickprompt.settings import Paths
from models.config import load_config
from models.data import IGNORE_INDEX, batch_at
from models.plm import mlm_parts
from models.prompt import run_plm
from models.stages import STAGE_NAMES, _Masker, ctr_logit, fused_logit, masked_lm_loss, prepare, run_training
from models.trainer import load_weights, predict

ROWS = {"baseline": "DCNv2 (baseline)", "finetune-ctr-only": "ClickPrompt CTR-only", "finetune-with-lm": "ClickPrompt with LM"}


def quality(profile: str, seeds: list[int], out: Path, paths: Paths) -> dict:
    runs = {}
    for seed in seeds:
        cfg = load_config(profile, {"seed": seed})
        t = time.perf_counter()
        summary = run_training(cfg, paths, list(STAGE_NAMES), out / f"seed-{seed}")
        runs[seed] = {s: m for s, m in summary["stages"].items()}
        print(f"seed {seed}: done in {time.perf_counter() - t:.0f}s", flush=True)
    table = {}
    for stage, label in ROWS.items():
        aucs = [runs[s][stage]["test"]["auc"] for s in seeds]
        losses = [runs[s][stage]["test"]["logloss"] for s in seeds]
        diffs = [runs[s][stage]["test"]["auc"] - runs[s]["baseline"]["test"]["auc"] for s in seeds]
        table[label] = {
            "auc_mean": statistics.mean(aucs), "auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
            "logloss_mean": statistics.mean(losses), "logloss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
            "auc_minus_baseline_per_seed": diffs,
        }
    pre = [runs[s]["pretrain"]["valid"] for s in seeds]
    table["PA-MLM value-token acc (prompts / zeroed)"] = {
        "with_prompts": statistics.mean(p["mlm_acc_values"] for p in pre),
        "zeroed": statistics.mean(p["mlm_acc_values_zero_prompts"] for p in pre),
    }
    return {"per_seed": runs, "table": table}


def timings(profile: str, run_dir: Path, paths: Paths, n: int = 5000) -> dict:
    cfg = load_config(profile, {"seed": 0})
    ctx = prepare(cfg, paths, run_dir / "timing", list(STAGE_NAMES))
    test = ctx.splits["test"].head(n, seed=0)
    ctr = ctx.new_backbone()
    load_weights(ctr, run_dir / "finetune-ctr-only" / "model.safetensors")
    lm = ctx.new_clickprompt()
    load_weights(lm, run_dir / "finetune-with-lm" / "model.safetensors")
    out = {"samples": len(test), "device": str(ctx.device), "threads": torch.get_num_threads()}
    for name, model, fn in (("ctr_only", ctr, ctr_logit), ("with_lm", lm, fused_logit)):
        predict(model, test.head(1000), fn, 1000, ctx.device)  # warm-up
        t = time.perf_counter()
        predict(model, test, fn, 1000, ctx.device)
        out[f"{name}_ms_per_1000"] = 1000 * (time.perf_counter() - t) / (len(test) / 1000)
    out["with_lm_over_ctr_only"] = out["with_lm_ms_per_1000"] / out["ctr_only_ms_per_1000"]

    # PA-MLM training throughput: prompts vs the plain MLM on the same LM, same batches
    masker = _Masker(ctx.tokenizer, cfg.pretrain.mask_prob, seed=0)
    train = ctx.splits["train"].head(64 * 12, seed=0)
    batches = [masker(batch_at(train, idx, ctx.device)) for idx in torch.arange(len(train)).split(64)]
    model = ctx.new_clickprompt().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def plain_step(batch):
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
        out[f"pamlm_{name}_samples_per_s"] = 64 * (len(batches) - 1) / (time.perf_counter() - t)
    out["pamlm_prompted_over_plain"] = out["pamlm_prompted_samples_per_s"] / out["pamlm_plain_samples_per_s"]
    return out


def markdown(result: dict) -> str:
    lines = ["| model | test AUC (mean ± sd) | test LogLoss (mean ± sd) | AUC − baseline per seed |", "|---|---|---|---|"]
    for label, row in result["quality"]["table"].items():
        if "auc_mean" in row:
            diffs = ", ".join(f"{d:+.4f}" for d in row["auc_minus_baseline_per_seed"])
            lines.append(f"| {label} | {row['auc_mean']:.4f} ± {row['auc_std']:.4f} | "
                         f"{row['logloss_mean']:.4f} ± {row['logloss_std']:.4f} | {diffs} |")
    acc = result["quality"]["table"]["PA-MLM value-token acc (prompts / zeroed)"]
    t = result["timing"]
    lines += [
        "",
        f"PA-MLM held-out masked value-token accuracy: {acc['with_prompts']:.4f} with prompts, {acc['zeroed']:.4f} zeroed.",
        f"Scoring ({t['device']}, {t['threads']} threads): CTR-only {t['ctr_only_ms_per_1000']:.1f} ms / 1,000 samples, "
        f"with LM {t['with_lm_ms_per_1000']:.1f} ms / 1,000 ({t['with_lm_over_ctr_only']:.0f}x).",
        f"PA-MLM training: {t['pamlm_prompted_samples_per_s']:.0f} samples/s with prompts vs "
        f"{t['pamlm_plain_samples_per_s']:.0f} plain MLM ({t['pamlm_prompted_over_plain']:.2f}x).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    paths = Paths.default()
    out = args.out or paths.artifacts / "bench" / f"train-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(f"machine: {machine}; profile {args.profile}; seeds {args.seeds}", flush=True)
    result = {"machine": machine, "profile": args.profile, "seeds": args.seeds,
              "quality": quality(args.profile, args.seeds, out, paths)}
    result["timing"] = timings(args.profile, out / f"seed-{args.seeds[-1]}", paths)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=float))
    report = markdown(result)
    (out / "report.md").write_text(report + "\n")
    print(report)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
