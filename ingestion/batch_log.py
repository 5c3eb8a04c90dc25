"""What the warehouse remembers of the landing area's batches: ``batch_log`` (one row per batch and
content hash: accepted, rejected or waiting, and why) and ``data_quality`` (one row per batch and
run: the trend the nightly flow reports).

A batch rejected only because its events need profiles that an earlier batch brings which is not
in (rejected or waiting itself) is WAITING on that batch: it is taken again, unchanged, once any
batch has been accepted after it was set waiting, and the nightly flow fails while anything waits.
Rows of a batch that was not accepted are never counted: its ``new_events`` and versions are 0.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import duckdb
import pandas as pd

from core.io import digest, sha256_file, write_json_atomic
from core.snapshots import has_table
from ingestion.warehouse import WarehouseError, connect

ACCEPTED, REJECTED, WAITING = "accepted", "rejected", "waiting"
LOG_DDL = [
    """CREATE TABLE IF NOT EXISTS batch_log (
        batch_id VARCHAR NOT NULL, digest VARCHAR NOT NULL, status VARCHAR NOT NULL, reason VARCHAR,
        files VARCHAR, valid_from TIMESTAMPTZ, events_start TIMESTAMPTZ, events_end TIMESTAMPTZ,
        new_events BIGINT, new_user_versions BIGINT, new_item_versions BIGINT, ingested_at TIMESTAMPTZ,
        PRIMARY KEY (batch_id, digest))""",
    """CREATE TABLE IF NOT EXISTS data_quality (
        run_id VARCHAR NOT NULL, batch_id VARCHAR NOT NULL, status VARCHAR NOT NULL, recorded_at TIMESTAMPTZ,
        events BIGINT, user_versions BIGINT, item_versions BIGINT, label_rate DOUBLE,
        new_user_share DOUBLE, new_item_share DOUBLE, expectations BIGINT, failed_expectations BIGINT,
        events_start TIMESTAMPTZ, events_end TIMESTAMPTZ, PRIMARY KEY (run_id, batch_id))""",
    # the batch a waiting batch waits on (added after the first release: older warehouses gain it)
    "ALTER TABLE batch_log ADD COLUMN IF NOT EXISTS waiting_on VARCHAR",
    "ALTER TABLE data_quality ADD COLUMN IF NOT EXISTS waiting_on VARCHAR",
    # why a batch was rejected or waits, for the trend report (added later too)
    "ALTER TABLE data_quality ADD COLUMN IF NOT EXISTS reason VARCHAR",
]
_LOG_COLUMNS = ("batch_id, digest, status, reason, files, valid_from, events_start, events_end, new_events, "
                "new_user_versions, new_item_versions, ingested_at, waiting_on")
_QUALITY_COLUMNS = ("run_id, batch_id, status, recorded_at, events, user_versions, item_versions, label_rate, "
                    "new_user_share, new_item_share, expectations, failed_expectations, events_start, events_end, "
                    "waiting_on, reason")


def ensure_log(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in LOG_DDL:
        con.execute(ddl)


class DigestCache:
    """The sha256 of inbox files, remembered beside the warehouse by what git's index keys a file on -
    size, mtime, inode and ctime (which no copy tool can set: `cp -p`, `rsync -a` or an unzip that keep
    mtime still change it) - so that `data status` and each nightly run read a file's bytes only when
    it is new or has changed; and by git's "racy" rule, a file changed within ``RACY_NS`` of being
    hashed is hashed again next time (a coarse clock could hide a rewrite). The cache is a
    convenience: unreadable, it is rebuilt; unwritable, every run hashes as before."""

    RACY_NS = 2_000_000_000

    def __init__(self, path: Path | None):
        self.path, self.entries, self.dirty = path, {}, False
        if path is not None and path.is_file():
            try:
                entries = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                entries = None
            self.entries = entries if isinstance(entries, dict) else {}

    @classmethod
    def beside(cls, warehouse: Path) -> "DigestCache":
        return cls(warehouse.with_name(warehouse.name + ".inbox-digests.json"))

    def sha256(self, file: Path) -> str:
        st, key = file.stat(), str(file.resolve())
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
        known = self.entries.get(key)
        if (isinstance(known, list) and len(known) == 6 and known[:4] == stamp and isinstance(known[5], int)
                and max(st.st_mtime_ns, st.st_ctime_ns) < known[5] - self.RACY_NS):
            return known[4]
        hashed_at = time.time_ns()
        sha = sha256_file(file)
        self.entries[key], self.dirty = [*stamp, sha, hashed_at], True
        return sha

    def save(self) -> None:
        if not self.dirty or self.path is None or not self.path.parent.is_dir():  # makes no folder of its own
            return
        live = {k: v for k, v in self.entries.items() if Path(k).is_file()}  # batches moved out are forgotten
        try:
            write_json_atomic(self.path, live, indent=None)
        except OSError:  # e.g. a read-only folder: nothing is lost but the time saved
            pass
        self.dirty = False


def batch_digest(folder: Path, cache: DigestCache | None = None) -> tuple[str, dict[str, str]]:
    """(hash over the batch's file names and contents, {file: sha256})."""
    sha = cache.sha256 if cache is not None else sha256_file
    files = {p.name: sha(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
    return digest(sorted(files.items())), files


def batch_folders(inbox: Path) -> list[Path]:
    """Batch folders of a landing area, in arrival (name) order; hidden ones are ignored."""
    if not inbox.is_dir():
        return []
    return sorted(p for p in inbox.iterdir() if p.is_dir() and not p.name.startswith("."))


def _log(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    ensure_log(con)
    return con.execute("SELECT batch_id, digest, status, ingested_at FROM batch_log").df()


def _retriable(row: pd.Series, log: pd.DataFrame) -> bool:
    """A waiting batch is taken again once a batch has been accepted after it was set waiting."""
    later = log[(log.status == ACCEPTED) & (log.ingested_at > row.ingested_at)]
    return row.status == WAITING and len(later) > 0


def pending_batches(inbox: Path, warehouse: Path) -> list[tuple[Path, str, dict[str, str]]]:
    """(folder, digest, files) of every batch not taken yet, and of every waiting batch that may pass
    now. A batch accepted before whose files have changed since raises: accepted data is never
    silently replaced."""
    seen = pd.DataFrame(columns=["batch_id", "digest", "status", "ingested_at"])
    if warehouse.exists():
        with connect(warehouse) as con:
            seen = _log(con)
    out, cache = [], DigestCache.beside(warehouse)
    try:
        for folder in batch_folders(inbox):
            h, files = batch_digest(folder, cache)
            mine = seen[seen.batch_id == folder.name]
            same = mine[mine.digest == h]
            if len(same):
                if _retriable(same.iloc[0], seen):
                    out.append((folder, h, files))
                continue  # taken (accepted, rejected, or waiting with nothing new before it) with exactly these files
            accepted = mine[mine.status == ACCEPTED]
            if len(accepted):
                raise WarehouseError(f"batch {folder} changed after it was ingested on {accepted.ingested_at.iloc[0]}: "
                                     "an accepted batch is never replaced; send the correction as a new batch")
            out.append((folder, h, files))
    finally:
        cache.save()  # what was hashed before a refusal is remembered too
    return out


class Held(NamedTuple):
    status: str  # REJECTED (still there, unchanged) | CHANGED (accepted, its files changed since)
    line: str  # what holds and what to do, for a person


CHANGED = "changed"


def held_batches(inbox: Path, warehouse: Path, read_only: bool = False, changed: bool = True) -> dict[str, Held]:
    """What keeps the landing area from being clean, one line each, in arrival order:
    - a batch REJECTED and still in the inbox with the same files: every run names it until its files
      are corrected (then it is taken again) or its folder leaves the inbox (given up);
    - an ACCEPTED batch whose files changed since: the update refuses to go on (no later batch is
      taken) until its files are restored; a correction comes as a new batch.
    Waiting batches are ``waiting_batches``' (they clear on their own once their blocker is in).
    Returns {batch_id: Held}. ``read_only``: for a reader beside a writer (``data status``).
    ``changed=False``: rejected ones only, for a writer (``pending_batches`` has already refused a
    changed accepted batch), which then hashes no accepted batch's files a second time."""
    if not warehouse.exists():
        return {}
    with connect(warehouse, read_only=read_only) as con:
        log = latest_status(con, ("batch_id", "digest", "status", "reason", "ingested_at"))
    latest = {r.batch_id: r for r in log.itertuples()}
    out, cache = {}, DigestCache.beside(warehouse)
    for folder in batch_folders(inbox):
        r = latest.get(folder.name)
        if r is None or r.status not in ((ACCEPTED, REJECTED) if changed else (REJECTED,)):
            continue
        same = batch_digest(folder, cache)[0] == r.digest
        if r.status == REJECTED and same:
            out[r.batch_id] = Held(REJECTED, f"batch {r.batch_id} is still rejected (since {_when(r.ingested_at)}, its files "
                               f"unchanged): {r.reason} - correct its files and it is taken again, or move {folder} "
                               "out of the inbox to give it up")
        elif r.status == ACCEPTED and not same:
            out[r.batch_id] = Held(CHANGED, f"batch {r.batch_id} changed after it was accepted on {_when(r.ingested_at)}: no "
                               "later batch is taken until its files are restored (send the correction as a new batch)")
    cache.save()
    return out


def _when(ts) -> str:
    if pd.isna(ts):
        return "an earlier run"
    ts = pd.Timestamp(ts)
    return (ts.tz_convert("UTC") if ts.tzinfo else ts).strftime("%Y-%m-%d %H:%M UTC")


STATUS_COLUMNS = ("batch_id", "status", "reason", "waiting_on", "new_events", "ingested_at")


def latest_status(con: duckdb.DuckDBPyConnection, columns: tuple[str, ...] = STATUS_COLUMNS) -> pd.DataFrame:
    """The latest batch_log row of each batch (``columns`` of it), in arrival order; none where the
    warehouse has no batch log yet (read-only callers do not create it)."""
    if not has_table(con, "batch_log"):
        return pd.DataFrame(columns=list(columns))
    return con.execute(f"""SELECT {', '.join(columns)} FROM batch_log
        QUALIFY row_number() OVER (PARTITION BY batch_id ORDER BY ingested_at DESC) = 1 ORDER BY batch_id""").df()


def blockers_before(con: duckdb.DuckDBPyConnection, batch_id: str) -> list[str]:
    """Earlier batches (in arrival order) that are not in: what a batch missing profiles may wait on."""
    latest = latest_status(con)
    return list(latest.loc[(latest.batch_id < batch_id) & (latest.status != ACCEPTED), "batch_id"])


def waiting_batches(warehouse: Path) -> pd.DataFrame:
    """Batches waiting now (batch_id, waiting_on, reason); empty when none or no warehouse."""
    if not warehouse.exists():
        return pd.DataFrame(columns=["batch_id", "waiting_on", "reason"])
    with connect(warehouse) as con:
        ensure_log(con)
        latest = latest_status(con)
    return latest.loc[latest.status == WAITING, ["batch_id", "waiting_on", "reason"]].reset_index(drop=True)


def record_batch(con: duckdb.DuckDBPyConnection, r, files_json: str) -> None:
    """The batch_log row of a BatchReport ``r`` (replacing the row of the same batch and content)."""
    con.execute(f"INSERT OR REPLACE INTO batch_log ({_LOG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?)",
                [r.batch_id, r.digest, r.status, r.reason, files_json, r.valid_from, r.events_start, r.events_end,
                 r.events, r.user_versions, r.item_versions, r.waiting_on])


def record_quality(con: duckdb.DuckDBPyConnection, r, run_id: str) -> None:
    con.execute(f"INSERT OR REPLACE INTO data_quality ({_QUALITY_COLUMNS}) "
                "VALUES (?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id or "manual", r.batch_id, r.status, r.events, r.user_versions, r.item_versions, r.label_rate,
                 r.new_user_share, r.new_item_share, r.expectations, r.failed_expectations, r.events_start,
                 r.events_end, r.waiting_on, None if r.status == "accepted" else r.reason])


def quality_history(warehouse: Path) -> pd.DataFrame:
    """Every data-quality row, oldest first (empty before the first batch)."""
    if not warehouse.exists():
        return pd.DataFrame()
    with connect(warehouse) as con:
        ensure_log(con)
        return con.execute("SELECT * FROM data_quality ORDER BY recorded_at, batch_id").df()
