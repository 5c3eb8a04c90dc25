"""PA-MLM: prompt-augmented masked language modelling, the ClickPrompt pretraining stage (ALT's
losses for method alt / ctrl)."""

from __future__ import annotations

from prefect import flow

from flows.common import RunId, project_paths
from flows.training import fetch_plm, run_stage
from models.train.config import TrainConfig
from models.train.stages import Stage


@flow(name="pretrain-model")
def pretrain_model(cfg: TrainConfig, run_id: RunId, training_set: dict, refresh: bool = False,
                   run_stages: list[str] | None = None) -> dict:
    """Pretrain into ``artifacts/runs/<run_id>/pretrain/`` on ``training_set`` (a reference from
    build_features); ``train_pipeline`` resolves ``cfg`` and the run id once and passes them."""
    paths = project_paths()
    fetch_plm(cfg.plm, paths)
    run_dir = paths.runs / run_id
    return {"run_id": run_id, "run_dir": str(run_dir),
            Stage.PRETRAIN.value: run_stage(cfg, paths, run_dir, Stage.PRETRAIN, training_set, refresh, run_stages)}
