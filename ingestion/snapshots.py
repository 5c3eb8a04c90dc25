"""Parquet snapshots of the committed warehouse tables (the Feast file sources), their manifest,
the warehouse state they are made from, and the warehouse's one-writer lock.

Each table is written to a temp file and renamed; the manifest (written last, also atomically)
names the warehouse state the files were exported from, so a reader can tell snapshots a killed
writer left half old, half new (``core.snapshots.snapshot_problem``). The named kill points
(``core.faults``) let the tests stop the export at each step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import duckdb

from core.faults import fault_point
from core.io import atomic_write, write_json_atomic
from core.locks import exclusive, lock_path
from core.snapshots import MANIFEST, STATE_KEY, snapshot_problem, state_of, temp_files
from core.snapshots import TABLES as SNAPSHOT_TABLES
from core.spec import DatasetSpec

log = logging.getLogger("clickprompt.warehouse")

__all__ = ["SNAPSHOT_TABLES", "bump_state", "export_snapshots", "reconcile_snapshots", "warehouse_lock"]


@contextmanager
def warehouse_lock(warehouse: Path, wait_s: float | None = None) -> Iterator[None]:
    """The one-writer lock of a warehouse file (``<warehouse>.lock``, ``core.locks``): every writer
    holds it; a second one waits (bounded, with a message), then raises ``core.locks.Busy``."""
    with exclusive(lock_path(warehouse), "warehouse", wait_s):
        yield


def bump_state(con: duckdb.DuckDBPyConnection) -> None:
    """A new warehouse state, in the writer's transaction: the snapshots of the old one are stale."""
    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [STATE_KEY, uuid.uuid4().hex])


def _order_by(spec: DatasetSpec, table: str) -> str:
    user_key, item_key = spec.entities["user"].key, spec.entities["item"].key
    keys = {
        "users": [user_key],
        "user_text": [user_key],
        "items": [item_key],
        "item_text": [item_key],
        "interactions": [user_key, item_key],
    }[table]
    return ", ".join(f'"{k}"' for k in keys) + ", event_timestamp"


def export_snapshots(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, snapshot_dir: Path) -> str:
    """Write one parquet file per table (temp file + rename) and a manifest; return the snapshot hash.

    The hash covers the table contents (as a set of rows: the xor of each row's md5; rows are
    unique by their keys), so the same warehouse gives the same hash.
    """
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}
    for table in SNAPSHOT_TABLES:
        final = snapshot_dir / f"{table}.parquet"
        order = _order_by(spec, table)

        def write(tmp: Path, table: str = table, order: str = order) -> None:
            con.execute(f"COPY (SELECT * FROM {table} ORDER BY {order}) TO '{tmp}' (FORMAT parquet)")
            fault_point(f"during:snapshot-export:{table}")

        atomic_write(final, write)
        fault_point(f"after:snapshot-export:{table}")
        # xor of every row's md5: independent of row order, no sort and no table-sized string
        rows, content = con.execute(
            f"SELECT count(*), bit_xor(md5_number(CAST(t AS VARCHAR))) FROM {table} AS t").fetchone()
        content = f"{content or 0:032x}"
        files[table] = {"file": final.name, "rows": rows, "content_md5x": content}
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    manifest = {
        "dataset": spec.name,
        "snapshot_hash": digest,
        "warehouse_state": state_of(con),
        "tables": files,
        "written_at": datetime.now(timezone.utc).isoformat(),
    }
    fault_point("before:snapshot-manifest")
    write_json_atomic(snapshot_dir / MANIFEST, manifest)
    log.info("snapshots written to %s (hash %s)", snapshot_dir, digest[:12])
    fault_point("after:snapshot-manifest")
    return digest


def reconcile_snapshots(spec: DatasetSpec, warehouse: Path, snapshot_dir: Path) -> str | None:
    """Under the warehouse lock: remove the temp files a killed writer left, and export the
    snapshots again when they are not those of the warehouse's current state. Returns what was
    wrong (None: nothing was)."""
    if not warehouse.exists():
        return None
    with warehouse_lock(warehouse):
        for tmp in temp_files(snapshot_dir):
            log.warning("removing %s, left by a writer that was stopped", tmp)
            tmp.unlink(missing_ok=True)
        problem = snapshot_problem(snapshot_dir, warehouse)
        if problem is not None:
            log.warning("%s: exporting them again", problem)
            con = duckdb.connect(str(warehouse))
            try:
                con.execute("SET TimeZone = 'UTC'")  # the content hash reads times as text
                held = con.execute("SELECT value FROM meta WHERE key = 'dataset'").fetchone()
                if held and held[0] != spec.name:  # not this spec's warehouse: its writer will say so
                    return problem
                export_snapshots(con, spec, snapshot_dir)
            finally:
                con.close()
    return problem
