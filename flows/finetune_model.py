"""The CTR-label stages of a run: the finetunings (with the LM, CTR-only) and the baseline reference."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import DEFAULT_DATASET, Backbone, Dataset, Profile, RunId, Stage, project_paths
from flows.training import PRETRAIN, default_stages, fetch_plm, prepare_run, run_stage
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
    """Train ``stages`` (default: the method's; ``pretrain`` is pretrain_model's), one cached task
    each, in the order given. The finetunings start from the run's pretraining checkpoint when
    there is one (else they are the no-pretraining ablation)."""
    from models.stages import TEXT_STAGES

    paths = project_paths()
    cfg, run_id, run_dir = prepare_run(dataset, profile, method, backbone, run_id, overrides or {}, paths)
    ordered = [s for s in dict.fromkeys(stages or default_stages(method)) if s != PRETRAIN]
    if set(TEXT_STAGES) & set(ordered):
        fetch_plm(cfg.plm, paths)
    results = {stage: run_stage(cfg, paths, run_dir, stage, refresh) for stage in ordered}
    return {"run_id": run_id, "run_dir": str(run_dir), "stages": results}
