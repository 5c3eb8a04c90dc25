"""The warehouse snapshots (parquet files + ``manifest.json``): what the data path writes and the
feature views, the training sets and the flows' caches read.

Each manifest names the warehouse state it was exported from (``warehouse_state``: a token every
committing write of the warehouse renews, in its table ``meta``). Snapshots whose state is not
the warehouse's current one are stale (a writer was killed between its commit and the end of the
export): ``snapshot_problem`` says so, and the data path rebuilds them under the warehouse lock.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from core.locks import Busy, holder, lock_path

MANIFEST = "manifest.json"
STATE_KEY = "state"  # meta key of the warehouse state
TABLES = ("users", "items", "interactions", "user_text", "item_text")
REBUILD = "run `clickprompt data ingest` to rebuild them"
_TEMP = re.compile(r"^\..+\.tmp-\d+$")  # core.io.atomic_write's temp files


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


def has_table(con, name: str) -> bool:
    """Whether the open DuckDB connection's database holds table ``name``."""
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])


def state_of(con) -> str | None:
    """The warehouse state of an open DuckDB connection (None: empty, or written before states existed)."""
    if not has_table(con, "meta"):
        return None
    row = con.execute("SELECT value FROM meta WHERE key = ?", [STATE_KEY]).fetchone()
    return row[0] if row else None


def busy_warehouse(warehouse: Path, exc: Exception) -> Busy:
    """DuckDB's 'Could not set lock' as the one-line ``Busy`` (the holder from the lock file, else DuckDB's PID)."""
    who = holder(lock_path(warehouse))
    if not who:
        found = re.search(r"PID (\d+)", str(exc))
        who = {"pid": found.group(1) if found else "?"}
    return Busy("warehouse", who)


def warehouse_state(warehouse: Path) -> str | None:
    """The current state of the warehouse file (read-only), None when absent or empty."""
    import duckdb

    if not warehouse.exists():
        return None
    try:
        con = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise busy_warehouse(warehouse, exc) from None
        raise
    try:
        return state_of(con)
    finally:
        con.close()


def snapshot_problem(snapshot_dir: Path, warehouse: Path) -> str | None:
    """Why the snapshots do not show the warehouse (None: they do, or there is no warehouse yet)."""
    state = warehouse_state(warehouse)
    path = snapshot_dir / MANIFEST
    if not path.exists():
        return None if state is None else f"the warehouse has data but {snapshot_dir} holds no snapshots"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    made_from = manifest.get("warehouse_state")
    if made_from != state:
        return (f"the snapshots in {snapshot_dir} were exported from warehouse state {str(made_from)[:12]}, "
                f"the warehouse is at state {str(state)[:12]} (a writer stopped before its export finished)")
    missing = [t for t in manifest.get("tables", {}) if not (snapshot_dir / f"{t}.parquet").exists()]
    if missing:
        return f"snapshot files {missing} are missing from {snapshot_dir}"
    return None


def temp_files(folder: Path) -> list[Path]:
    """Temp files ``core.io.atomic_write`` leaves when its writer is killed (``.<name>.tmp-<pid>``)."""
    return sorted(p for p in folder.iterdir() if _TEMP.match(p.name)) if folder.is_dir() else []
