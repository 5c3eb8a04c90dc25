"""The Feast side: apply the definitions, build the point-in-time training sets, load the online store."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.context import TaskRunContext

from core.backends import Backends
from core.names import CLICKPROMPT_SERVICE
from core.settings import Paths
from core.spec import DatasetSpec, SplitPolicy, load_spec
from core.training_data import DEFAULT_FRACTIONS
from flows.common import DEFAULT_DATASET, Dataset, cache_key, cached, project_paths, snapshot_hash

DEFAULT_SERVICE = CLICKPROMPT_SERVICE  # what training reads (IDs + text)


def _spec_key(p: dict[str, Any]) -> dict:
    return p["spec"].model_dump(mode="json")


def _engines() -> dict:
    """The configured Feast engines: switching one (Spark, Redis) redoes the Feast steps."""
    return Backends.from_env().feature_store


def _apply_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return cache_key("feast-apply", p, _spec_key(p), snapshot_hash(p["paths"]), _engines())


def _training_sets_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return cache_key("training-sets", p, _spec_key(p), p["service"], list(p["fractions"]), p["policy"], p["window"],
                     snapshot_hash(p["paths"]), _engines())


def _materialize_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return cache_key("materialize", p, _spec_key(p), snapshot_hash(p["paths"]), _engines())


@task(cache_key_fn=_apply_key, persist_result=True, result_serializer="json")
def apply_definitions(spec: DatasetSpec, paths: Paths) -> dict:
    """Register entities, feature views and services over the current snapshots."""
    from feature_repo.store import apply

    defs = apply(spec, paths)
    return {"entities": [e.name for e in defs.entities], "views": list(defs.views), "services": list(defs.services)}


@task(cache_key_fn=_training_sets_key, persist_result=True, result_serializer="json")
def training_sets(spec: DatasetSpec, paths: Paths, service: str, fractions: tuple[float, float, float],
                  policy: str, window: list[str | None] | None = None) -> dict:
    """Point-in-time train / valid / test sets of ``service`` split by ``policy``, from the events in
    ``window`` ([start, end) ISO times, None: all): {"ref": the build's reference, "manifest": ...}."""
    from feature_repo.training_sets import build_training_sets

    start, end = _times(window)
    ref = build_training_sets(spec, paths, service=service, fractions=fractions, policy=policy, start=start, end=end)
    return {"ref": ref.to_dict(), "manifest": ref.manifest().to_dict()}


def build_training_set(spec: DatasetSpec, paths: Paths, service: str = DEFAULT_SERVICE,
                       fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, policy: str | None = None,
                       window: list[str | None] | None = None, refresh: bool = False) -> dict:
    """``training_sets`` through the cache, redone when its build folder is gone (the retrain and
    the pipeline each get the build of their own window and policy). A folder rebuilt since it was
    cached (the same inputs, so the same rows) is referenced as it is now."""
    from core.training_data import TrainingSetRef
    from feature_repo.training_sets import training_set_folder

    policy = policy or spec.split
    folder = training_set_folder(paths, service, policy, fractions, *_times(window))
    result = cached(training_sets, paths, refresh or not folder.is_dir())(spec, paths, service, tuple(fractions),
                                                                         policy, window)
    current = TrainingSetRef.of(folder)
    if current.manifest_hash != result["ref"]["manifest_hash"]:
        result = {"ref": current.to_dict(), "manifest": current.manifest().to_dict()}
    return result


def _times(window: list[str | None] | None) -> tuple:
    """[start, end) ISO times (None: open) as datetimes."""
    from datetime import datetime

    return tuple(None if t is None else datetime.fromisoformat(t) for t in window) if window else (None, None)


# Feast materialize writes SQLite under a lock another reader may briefly hold (or a Redis that
# is restarting): worth retrying.
@task(cache_key_fn=_materialize_key, persist_result=True, result_serializer="json", retries=2,
      retry_delay_seconds=5)
def materialize_online(spec: DatasetSpec, paths: Paths) -> dict:
    """Load each view's latest feature values into the online store (SQLite, or Redis)."""
    from feature_repo.online import materialize

    return materialize(spec, paths)


@flow(name="build-features")
def build_features(
    dataset: Dataset = DEFAULT_DATASET,
    service: str = DEFAULT_SERVICE,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    refresh: bool = False,
    spec: DatasetSpec | None = None,
    split: SplitPolicy | None = None,
) -> dict:
    """Each step is cached by the spec and the snapshot hash, and redone when its output is missing.
    ``spec``: ``dataset``'s spec when the caller resolved it already (``train_pipeline``); ``split``:
    the split policy (default: the spec's). ``training_sets["ref"]`` is what training takes."""
    paths = project_paths()
    spec = spec or load_spec(dataset)
    applied = cached(apply_definitions, paths, refresh or not paths.feast_registry.exists())(spec, paths)
    sets = build_training_set(spec, paths, service, fractions, split, refresh=refresh)
    from feature_repo.online import online_store_ready

    online = cached(materialize_online, paths, refresh or not online_store_ready(paths))(spec, paths)
    return {"applied": applied, "training_sets": sets, "online": online}
