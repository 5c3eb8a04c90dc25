"""The CTR-label stages of a run: the finetunings (with the LM, CTR-only, LM-only) and the baseline."""

from __future__ import annotations

from prefect import flow

from flows.common import RunId, Stage, project_paths
from flows.training import fetch_plm, run_stage
from models.train import stages as train_stages
from models.train.config import TrainConfig


@flow(name="finetune-model")
def finetune_model(cfg: TrainConfig, run_id: RunId, stages: list[Stage], training_set: dict,
                   refresh: bool = False) -> dict:
    """Train ``stages`` (``pretrain`` is pretrain_model's), one cached task each, in the order given,
    on ``training_set`` (a reference from build_features). The finetunings start from the run's
    pretraining checkpoint when there is one (else they are the no-pretraining ablation)."""
    paths = project_paths()
    run_dir = paths.runs / run_id
    ordered = [s for s in train_stages.stages(stages) if s != train_stages.Stage.PRETRAIN]
    if train_stages.TEXT_STAGES & set(ordered):
        fetch_plm(cfg.plm, paths)
    results = {s.value: run_stage(cfg, paths, run_dir, s, training_set, refresh, list(stages)) for s in ordered}
    return {"run_id": run_id, "run_dir": str(run_dir), "stages": results}
