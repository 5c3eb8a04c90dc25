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

from clickprompt.bench.efficiency import measure
from clickprompt.settings import Paths
from models.config import load_config
from models.stages import STAGE_NAMES, run_training

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


def timings(profile: str, run_dir: Path, paths: Paths) -> dict:
    return measure(load_config(profile, {"seed": 0}), run_dir, paths)


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
