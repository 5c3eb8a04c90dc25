"""The CTR-label stages of a run: the finetunings (with the LM, CTR-only) and the baseline reference."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import DEFAULT_DATASET, Backbone, Dataset, Profile, RunId, Stage, project_paths
from flows.training import PRETRAIN, TEXT_STAGES, default_stages, fetch_plm, prepare_run, run_stage
from models.config import Method


@flow(name="finetune-model")
def finetune_model(
    dataset: Dataset = DEFAULT_DATASET,
    profile: Profile = "demo",
    method: Method = "clickprompt",
    backbone: Backbone | None = None,
    run_id: RunId | None = None,
    stages: list[Stage] | None = None,
    overrides: dict[str, Any] | None = None,
    refresh: bool = False,
) -> dict:
    """Train ``stages`` (default: the method's stages; ``pretrain`` is pretrain_model's) one cached
    task each, in the library's stage order. The finetunings start from the run's PA-MLM
    checkpoint when there is one (else they are the no-pretraining ablation)."""
    from models.stages import STAGE_NAMES

    paths = project_paths()
    cfg, run_id, run_dir = prepare_run(dataset, profile, method, backbone, run_id, overrides or {}, paths)
    wanted = set(stages or default_stages(method)) - {PRETRAIN}
    ordered = [s for s in STAGE_NAMES if s in wanted]
    if set(TEXT_STAGES) & wanted:
        fetch_plm(cfg.plm, paths)
    results = {stage: run_stage(cfg, paths, run_dir, stage, refresh) for stage in ordered}
    return {"run_id": run_id, "run_dir": str(run_dir), "stages": results}
