"""The benchmark suite: baselines, ClickPrompt and its ablations, ALT and CTRL, over seeds, on one split.

Each ``RunSpec`` is one training run (one method, backbone and stage list) per seed; each
``Variant`` is a row of the report: one stage's test metrics of one run, compared per seed with
its reference (its untouched backbone). Long-tail AUCs pool each variant's test predictions over
seeds; efficiency is measured once, side by side, on the first seed's ClickPrompt run.
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clickprompt.bench.efficiency import measure, peak_rss_mb
from clickprompt.bench.longtail import group_aucs, tail_masks
from clickprompt.bench.report import render
from clickprompt.settings import Paths
from feature_repo.training_sets import load_training_sets
from models.config import load_config
from models.stages import run_training

log = logging.getLogger("clickprompt.bench")


@dataclass(frozen=True)
class RunSpec:
    name: str
    method: str
    backbone: str
    stages: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    label: str
    run: str  # RunSpec name
    stage: str  # whose test metrics this row reports
    reference: str | None = None  # label of the backbone it is compared with, per seed


# Suite profiles -> (training profile, overrides applied to every run).
BENCH_PROFILES: dict[str, tuple[str, dict[str, Any]]] = {
    # minutes on 2 cores: tiny sub-samples; CI runs it to keep the suite working, not for its numbers
    "smoke": ("smoke", {"pretrain.epochs": 1, "pretrain.max_train_samples": 800, "pretrain.max_eval_samples": 300,
                        "finetune_lm.max_train_samples": 800, "finetune_lm.max_eval_samples": 300,
                        "baseline.epochs": 2, "finetune_ctr.epochs": 2}),
    # fits 2 CPU cores within ~60 minutes (3 seeds): the demo profile with smaller LM sub-samples
    "cpu": ("demo", {"pretrain.max_train_samples": 12000, "finetune_lm.max_train_samples": 8000,
                     "finetune_lm.max_eval_samples": 2000}),
    # paper scale on a GPU: RoBERTa-base (or --plm), full data; MovieLens-1M when its files were ingested
    "gpu": ("paper", {}),
}

BACKBONES = {"dcnv2": "DCNv2", "dnn": "DNN", "autoint": "AutoInt", "deepfm": "DeepFM"}
CP_BACKBONES = ("dcnv2", "dnn", "autoint")  # each gets a ClickPrompt CTR-only model (long-tail comparison)


def suite() -> tuple[list[RunSpec], list[Variant]]:
    runs = [RunSpec(f"base-{b}", "baseline", b, ("baseline",)) for b in BACKBONES]
    runs += [RunSpec("lm-only", "lm_only", "dcnv2", ("finetune-lm-only",))]
    runs += [RunSpec("cp-dcnv2", "clickprompt", "dcnv2", ("pretrain", "finetune-with-lm", "finetune-ctr-only"))]
    runs += [RunSpec(f"cp-{b}", "clickprompt", b, ("pretrain", "finetune-ctr-only")) for b in CP_BACKBONES[1:]]
    runs += [
        RunSpec("cp-input-only", "clickprompt", "dcnv2", ("pretrain", "finetune-with-lm", "finetune-ctr-only"),
                {"prompt.input_only": True}),
        RunSpec("cp-no-pretrain", "clickprompt", "dcnv2", ("finetune-with-lm",)),
        RunSpec("cp-no-prompts", "clickprompt", "dcnv2", ("finetune-with-lm",), {"prompt.disabled": True}),
        RunSpec("alt", "alt", "dcnv2", ("pretrain", "finetune-ctr-only", "finetune-lm-only", "finetune-with-lm")),
        RunSpec("ctrl", "ctrl", "dcnv2", ("pretrain", "finetune-ctr-only")),
    ]
    variants = [Variant(label, f"base-{b}", "baseline") for b, label in BACKBONES.items()]
    variants += [Variant("LM-only (text classifier)", "lm-only", "finetune-lm-only")]
    variants += [Variant(f"ClickPrompt CTR-only ({BACKBONES[b]})", f"cp-{b}", "finetune-ctr-only", BACKBONES[b])
                 for b in CP_BACKBONES]
    variants += [
        Variant("ClickPrompt with LM", "cp-dcnv2", "finetune-with-lm", "DCNv2"),
        Variant("ablation: input-layer prompts, CTR-only", "cp-input-only", "finetune-ctr-only", "DCNv2"),
        Variant("ablation: input-layer prompts, with LM", "cp-input-only", "finetune-with-lm", "DCNv2"),
        Variant("ablation: no PA-MLM, with LM", "cp-no-pretrain", "finetune-with-lm", "DCNv2"),
        Variant("ablation: no prompts, with LM", "cp-no-prompts", "finetune-with-lm", "DCNv2"),
        Variant("ALT CTR-only", "alt", "finetune-ctr-only", "DCNv2"),
        Variant("ALT LM-only", "alt", "finetune-lm-only", "DCNv2"),
        Variant("ALT joint", "alt", "finetune-with-lm", "DCNv2"),
        Variant("CTRL CTR-only", "ctrl", "finetune-ctr-only", "DCNv2"),
    ]
    return runs, variants


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(variants: list[Variant], metrics: dict[str, dict[int, dict]], seeds: list[int]) -> dict:
    """{label: per-seed test metrics, mean / sd, paired AUC difference against the reference}."""
    models: dict[str, dict] = {}
    for v in variants:
        per_seed = {s: metrics[v.run][s]["stages"][v.stage]["test"] for s in seeds}
        auc_m, auc_s = _mean_std([per_seed[s]["auc"] for s in seeds])
        ll_m, ll_s = _mean_std([per_seed[s]["logloss"] for s in seeds])
        row = {"backbone": metrics[v.run][seeds[0]]["backbone"], "method": metrics[v.run][seeds[0]]["method"],
               "reference": v.reference, "per_seed": {str(s): {"auc": per_seed[s]["auc"], "logloss": per_seed[s]["logloss"]} for s in seeds},
               "auc_mean": auc_m, "auc_std": auc_s, "logloss_mean": ll_m, "logloss_std": ll_s,
               "paired_auc_diff": None, "paired_auc_diff_mean": None}
        if v.reference:
            ref = models[v.reference]["per_seed"]
            diffs = [per_seed[s]["auc"] - ref[str(s)]["auc"] for s in seeds]
            row.update(paired_auc_diff=diffs, paired_auc_diff_mean=statistics.mean(diffs))
        models[v.label] = row
    return models


def long_tail(variants: list[Variant], run_dirs: dict[str, dict[int, Path]], paths: Paths, seeds: list[int]) -> dict:
    """Tail-group AUCs of every backbone and its ClickPrompt CTR-only model, seed-pooled."""
    frames, manifest = load_training_sets(paths)
    from clickprompt.data.spec import load_spec

    spec = load_spec(manifest.dataset)
    uk, ik = spec.entities["user"].key, spec.entities["item"].key
    masks = tail_masks(frames["train"], frames["test"], uk, ik)
    out = {}
    wanted = [v for v in variants if v.run.startswith("base-") and v.label in dict(
        (BACKBONES[b], 1) for b in CP_BACKBONES)] + [v for v in variants if v.label.startswith("ClickPrompt CTR-only")]
    for v in wanted:
        labels, probs, pooled = [], [], {k: [] for k in masks}
        for s in seeds:
            pred = pd.read_parquet(run_dirs[v.run][s] / v.stage / "test_predictions.parquet")
            labels.append(pred["label"].to_numpy())
            probs.append(pred["probability"].to_numpy())
            for k in masks:
                pooled[k].append(masks[k])
        out[v.label] = group_aucs(np.concatenate(labels), np.concatenate(probs),
                                  {k: np.concatenate(m) for k, m in pooled.items()})
    return out


def run_suite(
    profile: str, seeds: list[int], paths: Paths, out: Path, only: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Train every run of the suite for every seed into ``out``; write results.json and the report."""
    if profile not in BENCH_PROFILES:
        raise ValueError(f"unknown benchmark profile {profile!r}; known: {sorted(BENCH_PROFILES)}")
    train_profile, base = BENCH_PROFILES[profile]
    base = {**base, **(overrides or {})}
    runs, variants = suite()
    if only:
        runs = [r for r in runs if r.name in only]
        variants = [v for v in variants if v.run in only and (v.reference is None or any(
            w.label == v.reference and w.run in only for w in variants))]
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, dict[int, dict]] = {r.name: {} for r in runs}
    run_dirs: dict[str, dict[int, Path]] = {r.name: {} for r in runs}
    stage_seconds: dict[str, list[float]] = {}
    started = time.perf_counter()
    for seed in seeds:
        for r in runs:
            cfg = load_config(train_profile, {**base, "seed": seed, "method": r.method, "backbone": r.backbone,
                                              **r.overrides})
            run_dir = out / "runs" / f"{r.name}-seed{seed}"
            t = time.perf_counter()
            summary = run_training(cfg, paths, list(r.stages), run_dir)
            summary["backbone"] = r.backbone
            metrics[r.name][seed], run_dirs[r.name][seed] = summary, run_dir
            for stage, m in summary["stages"].items():
                stage_seconds.setdefault(stage, []).append(m.get("seconds", 0.0))
            log.info("bench: %s seed %d in %.0fs (total %.0fs)", r.name, seed, time.perf_counter() - t,
                     time.perf_counter() - started)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{'cuda ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}",
        "profile": profile,
        "dataset": load_training_sets(paths)[1].dataset,
        "seeds": seeds,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "models": aggregate(variants, metrics, seeds),
        "long_tail": long_tail(variants, run_dirs, paths, seeds),
    }
    cp = "cp-dcnv2"
    if cp in run_dirs:
        cfg = load_config(train_profile, {**base, "seed": seeds[0]})
        results["efficiency"] = measure(cfg, run_dirs[cp][seeds[0]], paths)
    results.setdefault("efficiency", {})
    results["efficiency"]["stage_seconds"] = {k: statistics.mean(v) for k, v in stage_seconds.items()}
    results["efficiency"]["peak_rss_mb"] = peak_rss_mb()
    results["efficiency"]["total_seconds"] = time.perf_counter() - started
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, default=float), encoding="utf-8")
    render(path)
    return path
