"""Tasks and helpers the training flows share (pretrain_model, finetune_model, train_pipeline).

Each training stage is one cached task over ``models.stages.run_training``: keyed by the run,
the stage, the config hash, the snapshot hash and the checkpoints it starts from, so a re-run
skips finished stages. An interrupted stage is not cached; the trainer resumes it from its last
checkpoint in ``<run_dir>/<stage>/`` (same config and data fingerprint), not from step 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.context import TaskRunContext

from core.settings import Paths
from flows.common import cache_key, cached, digest, file_digest, retry_fetch, snapshot_hash

if TYPE_CHECKING:
    from models.config import TrainConfig

PRETRAIN = "pretrain"
# Every other stage starts from the run's pretraining checkpoint (when there is one), so its cache
# key includes the pretraining result: a retrained checkpoint means retrained finetunings.
FROM_SCRATCH = ("baseline", PRETRAIN)


def train_config(profile: str, method: str, backbone: str | None, overrides: dict[str, Any]) -> "TrainConfig":
    """The profile with the flow's parameters and dotted ``overrides`` (``{"pretrain.epochs": 2}``) on
    top: resolved ONCE per pipeline, then passed down typed."""
    from models.config import load_config

    merged = {**overrides, "method": method}
    if backbone:
        merged["backbone"] = backbone
    return load_config(profile, merged)


def default_run_id(cfg: "TrainConfig", paths: Paths, window: Any = None) -> str:
    """Deterministic from the config and the data (and the training window of a retrain): a re-run
    after a failure lands in the same run folder (and resumes there); new data or another config
    starts a new run."""
    parts = (cfg.config_hash(), snapshot_hash(paths)) + ((window,) if window is not None else ())
    return f"{cfg.profile}-{cfg.method}-{cfg.backbone}-{digest(*parts)[:10]}"


def stage_done(run_dir: Path, stage: str) -> bool:
    return (run_dir / stage / "metrics.json").exists()


def _stage_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    run_dir, stage = p["run_dir"], p["stage"]
    upstream = None if stage in FROM_SCRATCH else file_digest(run_dir / PRETRAIN / "metrics.json")
    return cache_key("train", p, str(run_dir), stage, p["cfg"].config_hash(), snapshot_hash(p["paths"]), upstream)


@task(cache_key_fn=_stage_key, persist_result=True, result_serializer="json", task_run_name="train-{stage}")
def train_stage(cfg: "TrainConfig", paths: Paths, run_dir: Path, stage: str) -> dict:
    """Train one stage into ``run_dir/<stage>/`` on the point-in-time training sets; its metrics
    (also in ``<stage>/metrics.json``)."""
    from feature_repo.training_sets import load_training_data
    from models.stages import run_training

    data = load_training_data(paths)
    return run_training(cfg, data, [stage], run_dir, paths.plm_source(cfg.plm))["stages"][stage]


def run_stage(cfg: "TrainConfig", paths: Paths, run_dir: Path, stage: str, refresh: bool = False) -> dict:
    """``train_stage`` through the cache; redone when its metrics file is gone."""
    return cached(train_stage, paths, refresh or not stage_done(run_dir, stage))(cfg, paths, run_dir, stage)


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_fetch)
def fetch_plm(name: str, paths: Paths) -> str:
    """Extract an offline PLM into ``data/plms/<name>`` (no-op when intact); other names (a folder,
    a hub model) are left to the loader."""
    from ingestion.fetch import PLMS
    from ingestion.fetch import fetch_plm as fetch

    if name not in PLMS:
        return name
    return str(fetch(name, paths))


def default_stages(method: str) -> list[str]:
    """The method's stage list, in training order (``models.stages.METHOD_STAGES``)."""
    from models.stages import default_stages as method_stages

    return method_stages(method)
