"""Re-render the text view (user_text / item_text) from the committed profiles.

Ingest renders (and gates) the text of every data change itself, in DuckDB inside its commit;
this flow is for a changed template or spec (new display names, value maps) over data already in
the warehouse. It renders on the offline store's engine: DuckDB SQL by default, Spark SQL over
the profile snapshots when ``CLICKPROMPT_OFFLINE_STORE=spark`` (the same text, row for row).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.context import TaskRunContext

from core.settings import Paths
from core.spec import DatasetSpec, load_spec
from flows.common import DEFAULT_DATASET, Dataset, cache_key, cached, project_paths, snapshot_hash


def _render_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return cache_key("render-text", p, p["spec"].model_dump(mode="json"), snapshot_hash(p["paths"]))


@task(cache_key_fn=_render_key, persist_result=True, result_serializer="json")
def render(spec: DatasetSpec, paths: Paths) -> dict:
    """Render, gate the text (GX), commit, re-export the snapshots; rows per text table + new hash."""
    from core.backends import offline_spark
    from ingestion.warehouse import rerender_text
    from validation import gate

    rows = rerender_text(spec, paths.warehouse, paths.snapshots, gate, spark=offline_spark())
    return {"rows": rows, "snapshot_hash": snapshot_hash(paths)}


@flow(name="render-text")
def render_text(dataset: Dataset = DEFAULT_DATASET, refresh: bool = False) -> dict:
    """Cached by the spec and the snapshot hash: text already rendered from these tables is not redone."""
    paths = project_paths()
    return cached(render, paths, refresh=refresh)(load_spec(dataset), paths)
