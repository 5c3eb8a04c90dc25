"""Register a run's CTR-only model and promote it to production when it beats the current one."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from prefect import flow, task
from prefect.context import TaskRunContext

from core.settings import Paths
from flows.common import RunId, cache_key, cached, file_digest, project_paths

# The served model: the plain backbone initialised from PA-MLM, with the baseline's inference graph.
from models.train.stages import REGISTERED_STAGE


def _register_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    run_dir: Path = p["run_dir"]
    return cache_key("register", p, str(run_dir), p["metric"], file_digest(run_dir / REGISTERED_STAGE / "metrics.json"))


@task(cache_key_fn=_register_key, persist_result=True, result_serializer="json")
def register_and_promote(run_dir: Path, paths: Paths, metric: str = "auc") -> dict:
    """Register the run's CTR-only stage as a candidate; promote it when it beats production on
    ``metric`` (the registry decides and logs the decision). Cached per run and stage result, so
    a re-run after a later failure does not register the same model twice."""
    from serving.registry import Registry

    registry = Registry(paths)
    version = registry.register(run_dir, stage=REGISTERED_STAGE)
    decision = registry.promote(version.version, metric=metric)
    return {"stage": REGISTERED_STAGE.value, "name": version.name, "version": version.version,
            "promoted": decision.promoted, "reason": decision.reason, "metric": metric,
            "production_version": registry.production_version(version.name),
            "decided_at": datetime.now(timezone.utc).isoformat()}


@flow(name="register-model")
def register_model(run_id: RunId, metric: Literal["auc", "logloss"] = "auc") -> dict:
    """Register ``artifacts/runs/<run_id>/finetune-ctr-only`` and promote it if it is better. What
    was decided then (possibly a cached result of an earlier run), with the registry as it is now:
    ``production_version`` and the version's ``version_stage`` (promoted then, archived since, say)."""
    from serving.registry import Registry, RegistryError

    paths = project_paths()
    refresh = not paths.registry.exists()  # a cached result vouches for a registry that is gone
    state = cached(register_and_promote, paths, refresh=refresh)(paths.runs / run_id, paths, metric,
                                                                  return_state=True)
    decided = {**state.result(), "earlier_run": state.name == "Cached"}  # a cached decision: said so
    registry = Registry(paths)
    try:
        stage = registry.get(decided["version"], decided["name"]).stage
    except RegistryError:  # a store made anew since the cached decision: that version is not in it
        stage = None
    return {**decided, "production_version": registry.production_version(decided["name"]), "version_stage": stage}
