"""The CTR-label stages of a run: the finetunings (with the LM, CTR-only, LM-only) and the baseline."""

from __future__ import annotations

from prefect import flow

from flows.common import RunId, Stage, project_paths
from flows.training import PRETRAIN, fetch_plm, run_stage
from models.config import TrainConfig


@flow(name="finetune-model")
def finetune_model(cfg: TrainConfig, run_id: RunId, stages: list[Stage], refresh: bool = False) -> dict:
    """Train ``stages`` (``pretrain`` is pretrain_model's), one cached task each, in the order given.
    The finetunings start from the run's pretraining checkpoint when there is one (else they are
    the no-pretraining ablation)."""
    from models.stages import TEXT_STAGES

    paths = project_paths()
    run_dir = paths.runs / run_id
    ordered = [s for s in dict.fromkeys(stages) if s != PRETRAIN]
    if set(TEXT_STAGES) & set(ordered):
        fetch_plm(cfg.plm, paths)
    results = {stage: run_stage(cfg, paths, run_dir, stage, refresh) for stage in ordered}
    return {"run_id": run_id, "run_dir": str(run_dir), "stages": results}
