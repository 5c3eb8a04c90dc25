"""PA-MLM: prompt-augmented masked language modelling, the ClickPrompt pretraining stage."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import DEFAULT_DATASET, Backbone, Dataset, Profile, RunId, project_paths
from flows.training import PRETRAIN, fetch_plm, prepare_run, run_stage
from models.config import Method


@flow(name="pretrain-model")
def pretrain_model(
    dataset: Dataset = DEFAULT_DATASET,
    profile: Profile = "demo",
    method: Method = "clickprompt",
    backbone: Backbone | None = None,
    run_id: RunId | None = None,
    overrides: dict[str, Any] | None = None,
    refresh: bool = False,
) -> dict:
    """Pretrain into ``artifacts/runs/<run_id>/pretrain/`` (run id default: derived from the config
    and the data, see ``flows.training.default_run_id``). Needs the training sets (build_features)."""
    paths = project_paths()
    cfg, run_id, run_dir = prepare_run(dataset, profile, method, backbone, run_id, overrides or {}, paths)
    fetch_plm(cfg.plm, paths)
    return {"run_id": run_id, "run_dir": str(run_dir), PRETRAIN: run_stage(cfg, paths, run_dir, PRETRAIN, refresh)}
