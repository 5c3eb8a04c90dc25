"""Data sources: the warehouse's parquet snapshots, read by Feast's DuckDB offline store."""

from pathlib import Path

from feast import FileSource


def snapshot_source(table: str, snapshot_dir: Path) -> FileSource:
    """One snapshot table (``<table>.parquet``) as a file source.

    The path is absolute (built from the snapshot folder), because Feast resolves relative
    FileSource paths from the current directory, not from the repo.
    """
    return FileSource(
        name=f"{table}_source",
        path=str(Path(snapshot_dir).resolve() / f"{table}.parquet"),
        timestamp_field="event_timestamp",
        description=f"Warehouse table {table}, snapshotted to parquet after each validated ingest",
    )
