"""PA-MLM: prompt-augmented masked language modelling, the ClickPrompt pretraining stage (ALT's
losses for method alt / ctrl)."""

from __future__ import annotations

from prefect import flow

from flows.common import RunId, project_paths
from flows.training import PRETRAIN, fetch_plm, run_stage
from models.config import TrainConfig


@flow(name="pretrain-model")
def pretrain_model(cfg: TrainConfig, run_id: RunId, refresh: bool = False) -> dict:
    """Pretrain into ``artifacts/runs/<run_id>/pretrain/``. Needs the training sets (build_features);
    ``train_pipeline`` resolves ``cfg`` and the run id once and passes them."""
    paths = project_paths()
    fetch_plm(cfg.plm, paths)
    run_dir = paths.runs / run_id
    return {"run_id": run_id, "run_dir": str(run_dir), PRETRAIN: run_stage(cfg, paths, run_dir, PRETRAIN, refresh)}
