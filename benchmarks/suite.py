"""What the benchmark trains and reports: baselines, ClickPrompt and its ablations, ALT and CTRL.

Each ``RunSpec`` is one training run (one method, backbone and stage list) per seed; each
``Variant`` is a row of the report: one stage's test metrics of one run, compared per seed with
its reference (its untouched backbone). ``plan_suite`` fixes profile, seeds, runs and output
folder; benchmarks/results.py trains the runs and aggregates them, and
flows/run_benchmark.py drives both (``make bench`` / ``clickprompt bench`` run that flow).
Kept free of torch imports: the CLI builds its ``--only`` choices from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from models.train.config import TrainConfig, build_config
from models.train.stages import Stage


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


HEADLINE_RUNS = ("base-dcnv2", "cp-dcnv2")  # DCNv2, ClickPrompt CTR-only and with LM


@dataclass(frozen=True)
class BenchProfile:
    train_profile: str  # the training profile every run starts from (models/train/config.py)
    overrides: dict[str, Any]  # applied to every run
    runs: tuple[str, ...] | None = None  # the runs it trains (None: the whole suite); --only narrows further


BENCH_PROFILES: dict[str, BenchProfile] = {
    # minutes on 2 cores: the LM stages on explicit 800-row sub-samples; CI runs it to keep the suite
    # working, not for its numbers (every report row states the rows and epochs it trained on)
    "smoke": BenchProfile("smoke", {"pretrain.epochs": 1, "pretrain.max_train_samples": 800,
                                    "pretrain.max_eval_samples": 300, "finetune_lm.max_train_samples": 800,
                                    "finetune_lm.max_eval_samples": 300, "baseline.epochs": 2,
                                    "finetune_ctr.epochs": 2}),
    # the headline on 2 CPU cores within an hour (3 seeds): DCNv2 and ClickPrompt (CTR-only and with
    # the LM), every stage on every training row, the demo profile's epochs
    "cpu": BenchProfile("demo", {}, HEADLINE_RUNS),
    # the whole suite (four backbones, ablations, ALT, CTRL, LM-only) the same way: ~5 h on 2 cores
    "cpu-full": BenchProfile("demo", {}),
    # paper scale on a GPU: RoBERTa-base (or --plm), full data; MovieLens-1M when its files were ingested
    "gpu": BenchProfile("paper", {}),
    # the authors' finetuning choices, each against ClickPrompt as configured, same seeds (paired), the
    # `cpu` profile's budget: ~1 h per choice for 3 seeds on 2 cores (cp-dcnv2's folders are reused
    # when --out holds them, e.g. a copy of a map cell's runs/)
    "choices": BenchProfile("demo", {}, ("base-dcnv2", "cp-dcnv2", "cp-mlp-head", "cp-train-valid", "cp-no-decay")),
}

BACKBONES = {"dcnv2": "DCNv2", "dnn": "DNN", "autoint": "AutoInt", "deepfm": "DeepFM"}
CP_BACKBONES = tuple(BACKBONES)  # each gets a ClickPrompt CTR-only model (long-tail comparison)


def suite() -> tuple[list[RunSpec], list[Variant]]:
    BASE, PRE, WITH_LM, CTR_ONLY, LM_ONLY = (Stage.BASELINE, Stage.PRETRAIN, Stage.FINETUNE_WITH_LM,
                                             Stage.FINETUNE_CTR_ONLY, Stage.FINETUNE_LM_ONLY)
    runs = [RunSpec(f"base-{b}", "baseline", b, (BASE,)) for b in BACKBONES]
    runs += [RunSpec("lm-only", "lm_only", "dcnv2", (LM_ONLY,))]
    runs += [RunSpec("cp-dcnv2", "clickprompt", "dcnv2", (PRE, WITH_LM, CTR_ONLY))]
    runs += [RunSpec(f"cp-{b}", "clickprompt", b, (PRE, CTR_ONLY)) for b in CP_BACKBONES if b != "dcnv2"]
    runs += [
        RunSpec("cp-input-only", "clickprompt", "dcnv2", (PRE, WITH_LM, CTR_ONLY),
                {"prompt.input_only": True}),
        RunSpec("cp-no-pretrain", "clickprompt", "dcnv2", (WITH_LM,)),
        RunSpec("cp-no-prompts", "clickprompt", "dcnv2", (WITH_LM,), {"prompt.disabled": True}),
        RunSpec("alt", "alt", "dcnv2", (PRE, CTR_ONLY, LM_ONLY, WITH_LM)),
        RunSpec("ctrl", "ctrl", "dcnv2", (PRE, CTR_ONLY)),
    ]
    # the authors' choices (CHOICE_RUNS: only profiles or --only that name them train them)
    runs += [
        RunSpec("cp-mlp-head", "clickprompt", "dcnv2", (PRE, WITH_LM), {"head": "mlp"}),
        RunSpec("cp-train-valid", "clickprompt", "dcnv2", (PRE, WITH_LM, CTR_ONLY), {"pretrain.rows": "train+valid"}),
        RunSpec("cp-no-decay", "clickprompt", "dcnv2", (PRE, WITH_LM, CTR_ONLY),
                {f"{stage}.no_decay": True for stage in ("pretrain", "finetune_lm", "finetune_ctr")}),
    ]
    variants = [Variant(label, f"base-{b}", BASE) for b, label in BACKBONES.items()]
    variants += [Variant("LM-only (text classifier)", "lm-only", LM_ONLY)]
    variants += [Variant(f"ClickPrompt CTR-only ({BACKBONES[b]})", f"cp-{b}", CTR_ONLY, BACKBONES[b])
                 for b in CP_BACKBONES]
    variants += [
        Variant("ClickPrompt with LM", "cp-dcnv2", WITH_LM, "DCNv2"),
        Variant("ablation: input-layer prompts, CTR-only", "cp-input-only", CTR_ONLY, "DCNv2"),
        Variant("ablation: input-layer prompts, with LM", "cp-input-only", WITH_LM, "DCNv2"),
        Variant("ablation: no PA-MLM, with LM", "cp-no-pretrain", WITH_LM, "DCNv2"),
        Variant("ablation: no prompts, with LM", "cp-no-prompts", WITH_LM, "DCNv2"),
        Variant("ALT CTR-only", "alt", CTR_ONLY, "DCNv2"),
        Variant("ALT LM-only", "alt", LM_ONLY, "DCNv2"),
        Variant("ALT joint", "alt", WITH_LM, "DCNv2"),
        Variant("CTRL CTR-only", "ctrl", CTR_ONLY, "DCNv2"),
        # each choice against ClickPrompt as configured, same seed
        Variant("choice: MLP click head, with LM", "cp-mlp-head", WITH_LM, "ClickPrompt with LM"),
        Variant("choice: PA-MLM on train+valid, with LM", "cp-train-valid", WITH_LM, "ClickPrompt with LM"),
        Variant("choice: PA-MLM on train+valid, CTR-only", "cp-train-valid", CTR_ONLY, "ClickPrompt CTR-only (DCNv2)"),
        Variant("choice: no decay of biases / norms / embeddings, with LM", "cp-no-decay", WITH_LM,
                "ClickPrompt with LM"),
        Variant("choice: no decay of biases / norms / embeddings, CTR-only", "cp-no-decay", CTR_ONLY,
                "ClickPrompt CTR-only (DCNv2)"),
    ]
    return runs, variants


CHOICE_RUNS = ("cp-mlp-head", "cp-train-valid", "cp-no-decay")  # trained only where named (profile or --only)


@dataclass
class SuitePlan:
    """What one benchmark trains and reports: the training profile, the overrides every run gets,
    the runs and the report rows, the seeds, and the output folder."""

    profile: str
    train_profile: str
    overrides: dict[str, Any]
    runs: list[RunSpec]
    variants: list[Variant]
    seeds: list[int]
    out: Path

    def config(self, run: RunSpec, seed: int) -> TrainConfig:
        """The one profile -> config builder (``models.train.config.build_config``) with the run's settings."""
        return build_config(self.train_profile, run.method, run.backbone, {**self.overrides, **run.overrides}, seed)

    def run_dir(self, run: RunSpec, seed: int) -> Path:
        return self.out / "runs" / f"{run.name}-seed{seed}"


def plan_suite(
    profile: str, seeds: list[int], out: Path, only: list[str] | None = None, overrides: dict[str, Any] | None = None,
) -> SuitePlan:
    if profile not in BENCH_PROFILES:
        raise ValueError(f"unknown benchmark profile {profile!r}; known: {sorted(BENCH_PROFILES)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    chosen = BENCH_PROFILES[profile]
    train_profile, base = chosen.train_profile, chosen.overrides
    runs, variants = suite()
    only = only or (list(chosen.runs) if chosen.runs else [r.name for r in runs if r.name not in CHOICE_RUNS])
    if only:
        unknown = sorted(set(only) - {r.name for r in runs})
        if unknown:
            raise ValueError(f"unknown run(s) {unknown}; known: {[r.name for r in runs]}")
        runs = [r for r in runs if r.name in only]
        kept = {v.label for v in variants if v.run in only}
        # a row whose backbone run was left out keeps its own figures, without the paired difference
        variants = [replace(v, reference=v.reference if v.reference in kept else None)
                    for v in variants if v.run in only]
    plan = SuitePlan(profile, train_profile, {**base, **(overrides or {})}, runs, variants, list(seeds), out)
    for r in runs:  # a bad --set or backbone setting fails here, before hours of training
        plan.config(r, seeds[0])
    return plan
