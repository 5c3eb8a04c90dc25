"""Re-render the text view (user_text / item_text) from the committed profiles, in DuckDB SQL."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.context import TaskRunContext

from clickprompt.settings import Paths
from flows.common import DEFAULT_DATASET, Dataset, cache_key, cached, project_paths, snapshot_hash


def _render_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return cache_key("render-text", p, p["dataset"], snapshot_hash(p["paths"]))


@task(cache_key_fn=_render_key, persist_result=True, result_serializer="json")
def render(dataset: str, paths: Paths) -> dict:
    """Render, gate the text (GX), commit, re-export the snapshots; rows per text table + new hash."""
    from clickprompt.data.spec import load_spec
    from clickprompt.data.warehouse import rerender_text

    rows = rerender_text(load_spec(dataset), paths.warehouse, paths.snapshots)
    return {"rows": rows, "snapshot_hash": snapshot_hash(paths)}


@flow(name="render-text")
def render_text(dataset: Dataset = DEFAULT_DATASET, refresh: bool = False) -> dict:
    """Cached by the snapshot hash: text already rendered from these tables is not redone."""
    paths = project_paths()
    return cached(render, paths, refresh=refresh)(dataset, paths)
