"""The warehouse snapshots (parquet files + ``manifest.json``): what the data path writes and the
feature views, the training sets and the flows' caches read."""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = "manifest.json"


def read_snapshot_manifest(snapshot_dir: Path) -> dict:
    """The snapshot manifest (data set, snapshot hash, tables); FileNotFoundError before the first ingest."""
    path = snapshot_dir / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no snapshots in {snapshot_dir}: run `clickprompt data ingest` first")
    return json.loads(path.read_text(encoding="utf-8"))


def snapshot_hash(snapshot_dir: Path) -> str | None:
    """The hash of the snapshots the feature views read, or None before the first ingest."""
    path = snapshot_dir / MANIFEST
    return json.loads(path.read_text(encoding="utf-8"))["snapshot_hash"] if path.exists() else None
