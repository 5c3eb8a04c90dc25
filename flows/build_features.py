"""The Feast side: apply the definitions, build the point-in-time training sets, load the online store."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.context import TaskRunContext

from clickprompt.settings import Paths
from flows.common import DEFAULT_DATASET, Dataset, cache_key, cached, file_digest, project_paths, snapshot_hash

DEFAULT_SERVICE = "clickprompt_v1"  # what training reads (IDs + text); see feature_repo/feature_services.py
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def _spec_digest(dataset: str) -> str | None:
    from clickprompt.data.spec import SPEC_DIR

    return file_digest(SPEC_DIR / f"{dataset}.yaml")


def _apply_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return cache_key("feast-apply", p, p["dataset"], _spec_digest(p["dataset"]), snapshot_hash(p["paths"]))


def _training_sets_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return cache_key("training-sets", p, p["dataset"], p["service"], list(p["fractions"]), snapshot_hash(p["paths"]))


def _materialize_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return cache_key("materialize", p, p["dataset"], snapshot_hash(p["paths"]))


@task(cache_key_fn=_apply_key, persist_result=True, result_serializer="json")
def apply_definitions(dataset: str, paths: Paths) -> dict:
    """Register entities, feature views and services over the current snapshots."""
    from clickprompt.data.spec import load_spec
    from feature_repo.store import apply

    defs = apply(load_spec(dataset), paths)
    return {"entities": [e.name for e in defs.entities], "views": list(defs.views), "services": list(defs.services)}


@task(cache_key_fn=_training_sets_key, persist_result=True, result_serializer="json")
def training_sets(dataset: str, paths: Paths, service: str, fractions: tuple[float, float, float]) -> dict:
    """Point-in-time train / valid / test sets of ``service`` (parquet + manifest)."""
    from clickprompt.data.spec import load_spec
    from feature_repo.training_sets import build_training_sets

    return build_training_sets(load_spec(dataset), paths, service=service, fractions=fractions).to_dict()


# Feast materialize writes SQLite under a lock another reader may briefly hold: worth retrying.
@task(cache_key_fn=_materialize_key, persist_result=True, result_serializer="json", retries=2,
      retry_delay_seconds=5)
def materialize_online(dataset: str, paths: Paths) -> dict:
    """Load each view's latest feature values into the SQLite online store."""
    from clickprompt.data.spec import load_spec
    from feature_repo.online import materialize

    return materialize(load_spec(dataset), paths)


@flow(name="build-features")
def build_features(
    dataset: Dataset = DEFAULT_DATASET,
    service: str = DEFAULT_SERVICE,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    refresh: bool = False,
) -> dict:
    """Each step is cached by the snapshot hash, and redone when its output is missing."""
    paths = project_paths()
    manifest = paths.training_sets / service / "manifest.json"
    applied = cached(apply_definitions, paths, refresh or not (paths.feast / "registry.db").exists())(dataset, paths)
    sets = cached(training_sets, paths, refresh or not manifest.exists())(dataset, paths, service, fractions)
    online_store = paths.feast / "online_store.db"
    online = cached(materialize_online, paths, refresh or not online_store.exists())(dataset, paths)
    return {"applied": applied, "training_sets": sets, "online": online}
