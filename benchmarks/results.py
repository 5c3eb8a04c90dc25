"""Train the planned runs and turn them into ``results.json``: per-model mean / sd and paired
differences, long-tail AUCs, efficiency (scoring, PA-MLM throughput, time per stage, peak memory).

Long-tail AUCs are computed per seed from each run's test predictions, then averaged; scoring and
PA-MLM figures are measured once, side by side, on the first seed's ClickPrompt (DCNv2) run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.efficiency import measure, peak_rss_mb
from benchmarks.longtail import TAIL_QUANTILE, group_aucs, tail_ids, tail_masks
from benchmarks.report import render
from benchmarks.suite import CP_BACKBONES, RunSpec, SuitePlan, Variant
from core.io import write_json_atomic
from core.settings import Paths
from core.training_data import TrainingData
from models.train.run import RUN_METRICS, finished_run, run_training
from models.train.stages import SERVABLE_STAGES, Stage

log = logging.getLogger("clickprompt.bench")
MEMORY_FILE = "bench_memory.json"  # per run folder: the benchmark process's peak memory after training it


def train_run(plan: SuitePlan, run: RunSpec, seed: int, data: TrainingData, paths: Paths) -> dict:
    """Train one run for one seed, or take it from its folder when a run with the same config
    finished there (re-running a suite into the same ``--out`` resumes where it stopped)."""
    cfg = plan.config(run, seed)
    run_dir = plan.run_dir(run, seed)
    summary = finished_run(run_dir, cfg, data.data_id, list(run.stages))  # the one resume rule (models.train.run)
    if summary is not None:
        log.info("bench: %s seed %d finished before, taken from %s", run.name, seed, run_dir)
        memory = run_dir / MEMORY_FILE
        recorded = json.loads(memory.read_text(encoding="utf-8")) if memory.exists() else {}
        return {**summary, **recorded, "backbone": run.backbone, "reused": True}
    (run_dir / RUN_METRICS).unlink(missing_ok=True)  # another config or data: never left beside the new stages
    t = time.perf_counter()
    summary = run_training(cfg, data, list(run.stages), run_dir, paths.plm_source(cfg.plm))
    # the process's peak memory so far (it only grows): kept with the run, so a resumed suite still reports it
    memory = {"peak_rss_mb_after": peak_rss_mb(), "pid": os.getpid()}  # the process it ran in (a Dask worker's, say)
    if torch.cuda.is_available():
        memory["peak_cuda_mb_after"] = torch.cuda.max_memory_allocated() / 2**20
    write_json_atomic(run_dir / MEMORY_FILE, memory)
    log.info("bench: %s seed %d in %.0f s, peak RSS %.0f MB", run.name, seed, time.perf_counter() - t, peak_rss_mb())
    return {**summary, **memory, "backbone": run.backbone}


def training_set_summary(data: TrainingData) -> dict | None:
    """The build every run trained on: identity, policy, fractions, rows and the unseen shares."""
    if data.ref is None:
        return None
    m = data.ref.manifest()
    return {"identity": data.ref.identity, "manifest_hash": data.ref.manifest_hash, "split_policy": m.split_policy,
            "fractions": list(m.fractions), "rows": {k: v.rows for k, v in m.splits.items()}, "unseen": m.unseen()}


def stage_seconds(plan: SuitePlan, metrics: dict[str, dict[int, dict]]) -> dict[str, dict[str, float]]:
    """{run: {stage: mean seconds over seeds}}, as recorded when each stage ran."""
    return {r.name: {stage: statistics.mean(metrics[r.name][s]["stages"][stage]["seconds"] for s in plan.seeds)
                     for stage in r.stages} for r in plan.runs}


def invocation(argv: list[str], cwd: Path | None = None) -> str:
    """The command as a user types it, for a report that may be published: ``clickprompt ...`` when
    the CLI ran, paths inside the working directory relative to it (no machine paths)."""
    cwd = (cwd or Path.cwd()).resolve()

    def arg(a: str) -> str:
        if os.path.isabs(a) and Path(a).resolve().is_relative_to(cwd):
            return os.path.relpath(a, cwd)
        return a

    prog = Path(argv[0])
    prog_name = "clickprompt" if prog.name == "clickprompt" or prog.parts[-2:] == ("cli", "__main__.py") else arg(argv[0])
    return " ".join([prog_name, *(shlex.quote(arg(a)) for a in argv[1:])])


def write_results(plan: SuitePlan, metrics: dict[str, dict[int, dict]], data: TrainingData, paths: Paths,
                  seconds: float, data_path: dict[str, float] | None = None) -> Path:
    """Aggregate the finished runs into ``results.json`` (atomically) and render the report. ``seconds``:
    the benchmark's time before this step (its flow's start to here); the time this step takes (the
    efficiency measurements, the long tail) is added to it."""
    entered = time.perf_counter()
    run_dirs = {r.name: {s: plan.run_dir(r, s) for s in plan.seeds} for r in plan.runs}
    frames, spec = data.frames, data.spec  # the tail groups come from its train split
    keys = spec.entities["user"].key, spec.entities["item"].key
    results = {
        "machine": machine(),
        "profile": plan.profile,
        "dataset": spec.name,
        "seeds": plan.seeds,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": invocation(sys.argv),
        "overrides": plan.overrides,
        "models": aggregate(plan.variants, metrics, plan.seeds),
        "long_tail": long_tail(plan.variants, run_dirs, frames["train"], keys, plan.seeds),
        "long_tail_definition": tail_definition(frames["train"], keys),
        "training_set": training_set_summary(data),
        "alignment": alignment(plan, metrics),
    }
    eff: dict[str, Any] = {}
    cp = next((r for r in plan.runs if r.name == "cp-dcnv2"), None)
    if cp is not None:
        cfg = plan.config(cp, plan.seeds[0])
        eff = measure(cfg, run_dirs[cp.name][plan.seeds[0]], data, paths.plm_source(cfg.plm))
    eff["stage_seconds"] = stage_seconds(plan, metrics)
    if data_path:
        eff["data_path_seconds"] = data_path
    recorded = [m for by_seed in metrics.values() for m in by_seed.values() if "peak_rss_mb_after" in m]
    eff["peak_rss_mb"] = max([peak_rss_mb()] + [m["peak_rss_mb_after"] for m in recorded])
    cuda = [m["peak_cuda_mb_after"] for m in recorded if "peak_cuda_mb_after" in m]
    if torch.cuda.is_available():
        cuda.append(torch.cuda.max_memory_allocated() / 2**20)
    if cuda:
        eff["peak_cuda_mb"] = max(cuda)
    # this invocation from its flow's start, this step included (small when runs were reused)
    eff["total_seconds"] = seconds + time.perf_counter() - entered
    eff["training_seconds"] = sum(st["seconds"] for by_seed in metrics.values() for m in by_seed.values()
                                  for st in m["stages"].values())  # every run, as recorded when it trained
    eff["reused_runs"] = sorted(f"{name}-seed{s}" for name, by_seed in metrics.items()
                                for s, m in by_seed.items() if m.get("reused"))
    results["efficiency"] = eff
    path = plan.out / "results.json"
    write_json_atomic(path, results)
    render(path)
    return path


# held-out pretraining checks, each with its ablated twin (models/train/run.py, models/alt.py)
ALIGNMENT_KEYS = ("mlm_acc_values", "mlm_acc_values_zero_prompts", "mlm_acc", "mlm_acc_zero_prompts",
                  "mtm_acc", "mtm_acc_text_zeroed", "mtm_chance", "retrieval_acc", "retrieval_chance")


def alignment(plan: SuitePlan, metrics: dict[str, dict[int, dict]]) -> dict[str, dict[str, float]]:
    """{run: {check: mean over seeds}} for every run with a pretraining stage: does each side help
    the other recover masked content (PA-MLM value tokens, ALT's masked features, retrieval)?"""
    out = {}
    for r in plan.runs:
        if Stage.PRETRAIN not in r.stages:
            continue
        valid = [metrics[r.name][s]["stages"][Stage.PRETRAIN].get("valid", {}) for s in plan.seeds]
        out[r.name] = {k: statistics.mean(v[k] for v in valid) for k in ALIGNMENT_KEYS if all(k in v for v in valid)}
    return out


def machine() -> str:
    gpu = f"cuda {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    try:  # Linux: the CPU model (platform.processor() is often empty there)
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = f"{names[0]} ({cpu})" if names else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, {platform.python_version()}"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(variants: list[Variant], metrics: dict[str, dict[int, dict]], seeds: list[int]) -> dict:
    """{label: per-seed test metrics, mean / sd, paired AUC difference against the reference}."""
    models: dict[str, dict] = {}
    for v in variants:
        per_seed = {s: metrics[v.run][s]["stages"][v.stage]["test"] for s in seeds}
        for s in seeds:
            if not all(np.isfinite(per_seed[s][k]) for k in ("auc", "logloss")):
                raise ValueError(f"{v.label}, seed {s}: test AUC {per_seed[s]['auc']}, LogLoss {per_seed[s]['logloss']} "
                                 f"(run folder {v.run}-seed{s}); a test split with a single class has no AUC")
        auc_m, auc_s = _mean_std([per_seed[s]["auc"] for s in seeds])
        ll_m, ll_s = _mean_std([per_seed[s]["logloss"] for s in seeds])
        stages = {s: metrics[v.run][s]["stages"][v.stage] for s in seeds}
        row = {"backbone": metrics[v.run][seeds[0]]["backbone"], "method": metrics[v.run][seeds[0]]["method"],
               "reference": v.reference, "per_seed": {str(s): {"auc": per_seed[s]["auc"], "logloss": per_seed[s]["logloss"]} for s in seeds},
               "auc_mean": auc_m, "auc_std": auc_s, "logloss_mean": ll_m, "logloss_std": ll_s,
               "paired_auc_diff": None, "paired_auc_diff_mean": None, "trained_on": trained_on(stages.values())}
        if all("branches" in st for st in stages.values()):  # a with-LM model: its parts on the same rows
            row["branches"] = {part: _mean_std([stages[s]["branches"][part]["auc"] for s in seeds])[0]
                               for part in ("fused", "ctr_branch", "lm_branch")}
            row["branches"]["a"] = _mean_std([stages[s]["a"] for s in seeds])[0]
        if v.reference:
            ref = models[v.reference]["per_seed"]
            diffs = [per_seed[s]["auc"] - ref[str(s)]["auc"] for s in seeds]
            row.update(paired_auc_diff=diffs, paired_auc_diff_mean=statistics.mean(diffs))
        models[v.label] = row
    return models


def trained_on(stages) -> dict[str, Any]:
    """Rows and epochs a report row trained on (epochs averaged over seeds: early stopping varies)."""
    runs = [st.get("trained_on") or {"rows": st["fit"].get("train_rows"), "epochs": st["fit"]["epochs_run"]}
            for st in stages]
    return {"rows": runs[0]["rows"], "epochs": round(statistics.mean(r["epochs"] for r in runs), 2)}


def tail_definition(train: pd.DataFrame, keys: tuple[str, str]) -> dict[str, Any]:
    """How the tail groups were cut from the training split: per entity, the frequency threshold
    and how many training ids fall at or below it (ties at the threshold all count)."""
    out: dict[str, Any] = {"quantile": TAIL_QUANTILE}
    for entity, key in zip(("users", "items"), keys):
        tail, threshold = tail_ids(train[key], TAIL_QUANTILE)
        out[entity] = {"threshold": threshold, "tail_ids": len(tail), "train_ids": int(train[key].nunique())}
    return out


def long_tail(variants: list[Variant], run_dirs: dict[str, dict[int, Path]], train: pd.DataFrame,
              keys: tuple[str, str], seeds: list[int]) -> dict:
    """Tail-group AUCs of every backbone and its ClickPrompt CTR-only model: per seed, then mean / sd.

    Groups come from each prediction file's own user / item ids (never from row order), so a
    prediction file that does not match the current test split cannot be mis-grouped.
    """
    runs = {f"base-{b}" for b in CP_BACKBONES} | {f"cp-{b}" for b in CP_BACKBONES}
    wanted = [v for v in variants if v.run in runs and v.stage in SERVABLE_STAGES]
    out: dict[str, Any] = {}
    for v in wanted:
        per_seed = []
        for s in seeds:
            pred = pd.read_parquet(run_dirs[v.run][s] / v.stage / "test_predictions.parquet")
            masks = tail_masks(train, pred, *keys)
            per_seed.append(group_aucs(pred["label"].to_numpy(), pred["probability"].to_numpy(), masks))
        row: dict[str, Any] = {}
        for group in ("all", *masks):
            values = [g[group] for g in per_seed]
            if group != "all":
                row[f"n_{group}"] = per_seed[0][f"n_{group}"]  # rows per seed (the same test split)
            if any(x is None for x in values):  # too few rows or one class in some seed
                row[group], row[f"{group}_std"] = None, None
            else:
                row[group], row[f"{group}_std"] = _mean_std(values)
        out[v.label] = row
    return out
