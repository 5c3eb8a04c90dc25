"""Tasks the training flows share (pretrain_model, finetune_model, train_pipeline, retrain_model):
orchestration only; training itself is ``models.train``'s.

Each training stage is one cached task over ``models.train.run.run_training``: keyed by the run,
the stage, the config hash, the training set's reference (its manifest hash) and the checkpoints it
starts from, so a re-run skips finished stages and a run never trains on another window's sets.
An interrupted stage is not cached; the trainer resumes it from its last checkpoint in
``<run_dir>/<stage>/`` (same config and training set), not from step 0. Every stage task of a run
shares the run's one preparation (``<run_dir>/prepared/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.context import TaskRunContext

from core.settings import Paths
from core.training_data import TrainingSetRef
from flows.common import cache_key, cached, retry_fetch

if TYPE_CHECKING:
    from models.train.config import TrainConfig


def train_config(profile: str, method: str, backbone: str | None, overrides: dict[str, Any]) -> "TrainConfig":
    """The run config, resolved ONCE per pipeline (``models.train.config.build_config``), then passed down typed."""
    from models.train.config import build_config

    return build_config(profile, method, backbone, overrides)


def default_run_id(cfg: "TrainConfig", ref: TrainingSetRef | dict) -> str:
    """Deterministic from the config and the training set's identity (snapshot, service, split,
    window): a re-run after a failure lands in the same run folder (and resumes there); new data,
    another window or another config starts a new run."""
    from models.train.run import default_run_id as run_id

    ref = TrainingSetRef.from_dict(ref) if isinstance(ref, dict) else ref
    return run_id(cfg, ref.identity)


def _stage_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    from models.train.run import stage_fingerprint

    run_dir, stage = p["run_dir"], p["stage"]  # the fingerprint: config, data and, for a finetuning, its pretraining
    return cache_key("train", p, str(run_dir), stage, stage_fingerprint(run_dir, stage, p["cfg"], p["ref"]["manifest_hash"]))


@task(cache_key_fn=_stage_key, persist_result=True, result_serializer="json", task_run_name="train-{stage}")
def train_stage(cfg: "TrainConfig", paths: Paths, run_dir: Path, stage: str, ref: dict,
                run_stages: list[str] | None = None) -> dict:
    """Train one stage into ``run_dir/<stage>/`` on the training set ``ref``; its metrics (also in
    ``<stage>/metrics.json``). ``run_stages``: every stage of the run (its one preparation covers them)."""
    from core.training_data import load_training_data
    from models.train.run import run_training

    data = load_training_data(TrainingSetRef.from_dict(ref))
    return run_training(cfg, data, [stage], run_dir, paths.plm_source(cfg.plm), finish=False,
                        run_stages=run_stages)["stages"][stage]


def run_stage(cfg: "TrainConfig", paths: Paths, run_dir: Path, stage: str, ref: dict, refresh: bool = False,
              run_stages: list[str] | None = None) -> dict:
    """``train_stage`` through the cache; redone when the stage did not finish with this config on this set."""
    from models.train.run import finished_stage

    done = finished_stage(run_dir, stage, cfg, ref["manifest_hash"]) is not None
    return cached(train_stage, paths, refresh or not done)(cfg, paths, run_dir, str(stage), ref,
                                                          [str(s) for s in run_stages or [stage]])


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_fetch)
def fetch_plm(name: str, paths: Paths) -> str:
    """Extract an offline PLM into ``data/plms/<name>`` (no-op when intact); other names (a folder,
    a hub model) are left to the loader."""
    from ingestion.fetch import PLMS
    from ingestion.fetch import fetch_plm as fetch

    if name not in PLMS:
        return name
    return str(fetch(name, paths))
