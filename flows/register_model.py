"""Register a run's CTR-only model and promote it to production when it beats the current one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.context import TaskRunContext

from clickprompt.settings import Paths
from flows.common import RunId, cache_key, cached, file_digest, project_paths

# The served model: the plain backbone initialised from PA-MLM, with the baseline's inference graph.
REGISTERED_STAGE = "finetune-ctr-only"


def _register_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    run_dir: Path = p["run_dir"]
    return cache_key("register", p, str(run_dir), file_digest(run_dir / REGISTERED_STAGE / "metrics.json"))


@task(cache_key_fn=_register_key, persist_result=True, result_serializer="json")
def register_and_promote(run_dir: Path, paths: Paths) -> dict:
    """Register the run; promote the new version if it beats production. Cached per run and stage
    result, so a re-run does not register the same model twice."""
    from clickprompt.registry import Registry

    registry = Registry(paths)
    version = registry.register(run_dir)
    promoted = registry.promote(version.version)
    return {"stage": REGISTERED_STAGE, "version": version.version, "promoted": bool(promoted), "reason": ""}


@flow(name="register-model")
def register_model(run_id: RunId) -> dict:
    paths = project_paths()
    registry_there = paths.registry.exists()
    return cached(register_and_promote, paths, refresh=not registry_there)(paths.runs / run_id, paths)
