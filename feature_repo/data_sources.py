"""Data sources: the warehouse's parquet snapshots, read by Feast's offline store.

The same files back both offline engines: a ``FileSource`` for DuckDB (the default), a
``SparkSource`` over the same parquet path when the offline store is Spark.
"""

from pathlib import Path

from feast import FileSource


def snapshot_source(table: str, snapshot_dir: Path, offline_store: str = "duckdb"):
    """One snapshot table (``<table>.parquet``) as a source of ``offline_store``'s kind.

    The path is absolute (built from the snapshot folder), because Feast resolves relative
    FileSource paths from the current directory, not from the repo.
    """
    path = str(Path(snapshot_dir).resolve() / f"{table}.parquet")
    description = f"Warehouse table {table}, snapshotted to parquet after each validated ingest"
    if offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(name=f"{table}_source", path=path, file_format="parquet",
                           timestamp_field="event_timestamp", description=description)
    return FileSource(name=f"{table}_source", path=path, timestamp_field="event_timestamp", description=description)
