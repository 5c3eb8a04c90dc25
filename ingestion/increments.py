"""Data that keeps arriving: batches in a landing area, each gated and committed on its own.

Landing area (``Paths.inbox(dataset)``, ``data/inbox/<dataset>/``): one folder per batch, named so
that name order is arrival order (``ingestion.replay`` writes ``0000-initial``, ``0001-...``), in
the data set's raw layout. A batch may bring new events, new profile versions, or both (a file it
lacks is simply absent) and an optional ``batch.json``::

    {"valid_from": "1998-03-01T00:00:00+00:00"}   # when its profile versions become valid

(default: its earliest event, or the arrival time for a profile-only batch). Raw files are never
moved or changed: what was taken is recorded in the warehouse table ``batch_log`` with the batch's
content hash, so a batch is taken once (re-running it changes nothing), a rejected one is not
retried until its files change, and an accepted one that changes afterwards is an error.

Each batch is one DuckDB transaction: parse (row errors name file, line and field) -> stage ->
gate the staged rows -> append the events (upsert by key, so idempotent) -> add the profile
versions that differ from the version valid before them -> every event must have a profile
version valid at its time -> render the text of the NEW versions only -> gate that text ->
record (batch_log and its data-quality row) -> COMMIT, then the snapshots are rewritten
atomically. Any failure rolls the batch back whole (the warehouse keeps its previous good state)
and records it as rejected with the reason, or as waiting when its events only lack the profiles
of an earlier batch that is not in (``ingestion.batch_log``: retried once a batch is accepted).
A data-quality row per batch and run (rows, label rate, share of events from new users / items,
expectations evaluated / failed) goes to table ``data_quality``: the trend the nightly flow reports.
The whole run holds the warehouse lock and first reconciles the snapshots (a killed writer's).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from core.faults import fault_point
from core.spec import DatasetSpec, EntityName
from ingestion.batch_log import (
    ACCEPTED,
    LOG_DDL,
    REJECTED,
    WAITING,
    batch_digest,
    batch_folders,
    blockers_before,
    ensure_log,
    pending_batches,
    quality_history,
    record_batch,
    record_quality,
)
from ingestion.rows import RawDataError
from ingestion.snapshots import bump_state, reconcile_snapshots, warehouse_lock
from ingestion.text_sql import text_sql
from ingestion.warehouse import Gate, WarehouseError, connect, create_schema, export_snapshots, stage

log = logging.getLogger("clickprompt.warehouse")

BATCH_FILE = "batch.json"
__all__ = ["ACCEPTED", "LOG_DDL", "REJECTED", "WAITING", "batch_digest", "batch_folders", "pending_batches",
           "quality_history"]  # re-exported from ingestion.batch_log


class MissingProfile(RawDataError):
    """Events whose user or item has no profile version valid at their time (``entity``, ``keys``)."""

    entity: EntityName = "user"
    keys: set[int] = set()


def _waits_on(spec: DatasetSpec, folder: Path, exc: MissingProfile, blockers: list[str]) -> str | None:
    """The latest earlier batch that is not in and whose files bring a profile the events lack."""
    from ingestion.loaders import load_raw

    key = spec.entities[exc.entity].key
    for blocker in reversed(blockers):
        try:  # its good rows: the batch may have been rejected for a bad row elsewhere
            raw = load_raw(spec, folder.parent / blocker, quarantine=True, partial=True)
        except (RawDataError, OSError, ValueError):
            continue
        profiles = raw.users if exc.entity == "user" else raw.items
        if len(profiles) and profiles[key].astype("int64").isin(list(exc.keys)).any():
            return blocker
    return None


@dataclass
class BatchReport:
    batch_id: str
    digest: str
    status: str  # accepted | rejected | waiting
    reason: str = ""
    waiting_on: str | None = None  # waiting: the earlier batch whose profiles its events need
    valid_from: str | None = None
    events: int = 0  # events it added (0 unless accepted)
    user_versions: int = 0  # profile versions it added
    item_versions: int = 0
    label_rate: float | None = None
    new_user_share: float | None = None  # share of its events whose user has no earlier profile
    new_item_share: float | None = None
    expectations: int = 0
    failed_expectations: int = 0
    events_start: str | None = None
    events_end: str | None = None
    snapshot_hash: str | None = None
    seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _valid_from(folder: Path, raw) -> datetime:
    meta = folder / BATCH_FILE
    if meta.is_file():
        try:
            value = json.loads(meta.read_text(encoding="utf-8"))["valid_from"]
            ts = pd.Timestamp(value)
        except (KeyError, ValueError, TypeError) as exc:
            raise RawDataError(BATCH_FILE, None, "valid_from", f"needs an ISO time, e.g. 1998-03-01T00:00:00+00:00 "
                               f"({type(exc).__name__}: {exc})", path=meta) from None
        return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()
    if len(raw.interactions):
        return datetime.fromtimestamp(int(raw.interactions["timestamp"].min()), tz=timezone.utc)
    return datetime.now(timezone.utc)


def _add_versions(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, entity: EntityName) -> int:
    """Insert the staged profile rows that differ from the version valid just before them (an
    unchanged profile sent again adds nothing); returns the versions added (left in new_<table>)."""
    ent = spec.entities[entity]
    cols = [f.name for f in spec.fields_of(entity)]
    same = " AND ".join(f'p."{c}" IS NOT DISTINCT FROM s."{c}"' for c in cols)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE new_{ent.table} AS
        SELECT s.* FROM stage_{ent.table} s ASOF LEFT JOIN {ent.table} p
          ON s."{ent.key}" = p."{ent.key}" AND s.event_timestamp >= p.event_timestamp
        WHERE p."{ent.key}" IS NULL OR NOT ({same})""")
    con.execute(f"INSERT OR REPLACE INTO {ent.table} SELECT * FROM new_{ent.table}")
    return con.execute(f"SELECT count(*) FROM new_{ent.table}").fetchone()[0]


def _check_profiles_valid(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, raw) -> None:
    """Every event needs a profile version of its user and its item valid at the event's time."""
    if not len(raw.interactions):
        return
    file, lines = raw.lines["interactions"]
    events = raw.interactions.assign(_ts=pd.to_datetime(raw.interactions["timestamp"], unit="s", utc=True))
    for entity in spec.entity_order:
        ent = spec.entities[entity]
        first = con.execute(f'SELECT "{ent.key}", min(event_timestamp) AS since FROM {ent.table} GROUP BY 1').df()
        since = events[ent.key].map(first.set_index(ent.key)["since"])
        bad = np.flatnonzero((since.isna() | (since > events["_ts"])).to_numpy())
        if len(bad):
            row = bad[0]
            key, ts = int(events[ent.key].iloc[row]), events["_ts"].iloc[row]
            what = "has no profile" if pd.isna(since.iloc[row]) else f"has no profile valid before {since.iloc[row]}"
            exc = MissingProfile(file, int(lines[row]), ent.key,
                                 f"{entity} {key} {what} at the event's time {ts.isoformat()} ({len(bad)} such events): "
                                 "send its profile in this batch or an earlier one")
            exc.entity, exc.keys = entity, set(events[ent.key].iloc[bad].astype(int))
            raise exc


def _render_new_texts(con: duckdb.DuckDBPyConnection, spec: DatasetSpec) -> dict[str, pd.DataFrame]:
    """Text rows of the new profile versions only, appended to the text tables; returns them."""
    out = {}
    for entity in spec.entity_order:
        ent, name = spec.entities[entity], spec.text_column(entity)
        con.execute(f"CREATE TABLE IF NOT EXISTS {name} AS {text_sql(spec, entity)} LIMIT 0")
        rows = con.execute(text_sql(spec, entity, table=f"new_{ent.table}")).df()
        con.register("new_text_rows", rows)
        con.execute(f"INSERT INTO {name} SELECT * FROM new_text_rows")
        con.unregister("new_text_rows")
        out[name] = rows
    return out


def _share_new(events: pd.DataFrame, key: str, before: pd.Series) -> float | None:
    if not len(events):
        return None
    return float((~events[key].isin(before)).mean())


def ingest_batch(spec: DatasetSpec, folder: Path, warehouse: Path, snapshot_dir: Path, gate: Gate,
                 run_id: str = "", batch: tuple[str, dict[str, str]] | None = None) -> BatchReport:
    """Take one batch (see the module doc): accepted and committed, or rejected (or set waiting) whole
    and recorded. Holds the warehouse lock."""
    from ingestion.loaders import load_raw

    started = time.perf_counter()
    h, files = batch or batch_digest(folder)
    report = BatchReport(folder.name, h, REJECTED, files=files)
    checks: list[object] = []
    with warehouse_lock(warehouse):
        try:
            raw = load_raw(spec, folder, partial=True)  # a row problem raises here, before any write
            valid_from = _valid_from(folder, raw)
            report.valid_from = valid_from.isoformat()
            with connect(warehouse) as con:
                _commit_batch(con, spec, raw, valid_from, report, gate, checks, run_id, started)
                fault_point("after:batch-commit")
                report.snapshot_hash = export_snapshots(con, spec, snapshot_dir)
        except Exception as exc:  # a row error, a failed gate (it carries its report), a conflict: not taken
            failed = getattr(exc, "report", None)
            if not isinstance(exc, (RawDataError, WarehouseError, duckdb.ConstraintException)) and failed is None:
                raise  # not a property of the batch: a bug or a broken environment
            if failed is not None:
                checks.append(failed)
            _not_taken(spec, folder, report, exc, warehouse, checks, run_id, started)
            return report
    log.info("batch %s: %d events, %d user / %d item versions (%.1fs)", folder.name, report.events,
             report.user_versions, report.item_versions, report.seconds)
    return report


def _commit_batch(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, raw, valid_from: datetime,
                  report: BatchReport, gate: Gate, checks: list, run_id: str, started: float) -> None:
    """The batch's one transaction, its batch_log and data-quality rows included."""

    def gated(frames: dict[str, pd.DataFrame]) -> None:
        present = {name: frame for name, frame in frames.items() if len(frame)}  # a batch may lack a table
        if present:
            checks.append(gate(spec, present, lines=raw.lines))

    con.begin()
    try:
        create_schema(con, spec, LOG_DDL)
        held = con.execute("SELECT value FROM meta WHERE key = 'dataset'").fetchone()
        if held and held[0] != spec.name:
            raise WarehouseError(f"the warehouse holds data set {held[0]!r}, not {spec.name!r}")
        keys = {e: spec.entities[e].key for e in spec.entity_order}
        known = {e: con.execute(f'SELECT DISTINCT "{keys[e]}" FROM {spec.entities[e].table}').df()[keys[e]]
                 for e in spec.entity_order}
        staged = stage(con, spec, raw, valid_from)
        gated(staged)
        report.user_versions = _add_versions(con, spec, "user")
        report.item_versions = _add_versions(con, spec, "item")
        before = con.execute("SELECT count(*) FROM interactions").fetchone()[0]
        con.execute("INSERT OR REPLACE INTO interactions SELECT * FROM stage_interactions")
        report.events = con.execute("SELECT count(*) FROM interactions").fetchone()[0] - before
        _check_profiles_valid(con, spec, raw)
        gated(_render_new_texts(con, spec))
        events = staged["interactions"]
        if len(events):
            report.label_rate = float(events["label"].mean())
            report.events_start = events["event_timestamp"].min().isoformat()
            report.events_end = events["event_timestamp"].max().isoformat()
            report.new_user_share = _share_new(events, keys["user"], known["user"])
            report.new_item_share = _share_new(events, keys["item"], known["item"])
        con.execute("INSERT OR REPLACE INTO meta VALUES ('dataset', ?)", [spec.name])
        report.status = ACCEPTED
        _finish(report, checks, started)
        bump_state(con)
        record_batch(con, report, json.dumps(report.files, sort_keys=True))
        record_quality(con, report, run_id)  # in the transaction: no accepted batch without its record
        con.commit()
    except BaseException:
        con.rollback()
        report.status = REJECTED
        raise


def _finish(report: BatchReport, checks: list, started: float) -> None:
    report.expectations = sum(int(getattr(c, "evaluated", 0)) for c in checks)
    report.failed_expectations = sum(int(getattr(c, "failed", 0)) for c in checks)
    report.seconds = round(time.perf_counter() - started, 3)


def _not_taken(spec: DatasetSpec, folder: Path, report: BatchReport, exc: Exception, warehouse: Path,
               checks: list, run_id: str, started: float) -> None:
    """Record a batch that was rolled back: rejected, or waiting when its events only lack profiles
    that an earlier batch that is not in brings. Nothing of it was written: no rows are counted."""
    report.events = report.user_versions = report.item_versions = 0
    report.reason = _reason(exc)
    with connect(warehouse) as con:
        ensure_log(con)
        blockers = blockers_before(con, report.batch_id) if isinstance(exc, MissingProfile) else []
        waits_on = _waits_on(spec, folder, exc, blockers) if blockers else None
        if waits_on:
            report.status, report.waiting_on = WAITING, waits_on
        _finish(report, checks, started)
        record_batch(con, report, json.dumps(report.files, sort_keys=True))
        record_quality(con, report, run_id)
    if report.status == WAITING:
        log.warning("batch %s waits on batch %s: %s", report.batch_id, report.waiting_on, report.reason)
    else:
        log.warning("batch %s rejected: %s", report.batch_id, report.reason)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if len(text) < 2000 else text[:2000] + " ..."


MAX_TRIES = 2  # per batch and run: a waiting batch is retried once per run after something was accepted


def ingest_inbox(spec: DatasetSpec, inbox: Path, warehouse: Path, snapshot_dir: Path, gate: Gate,
                 run_id: str = "", limit: int | None = None) -> list[BatchReport]:
    """Take the new batches of ``inbox`` in arrival order, each on its own (a rejected batch does not
    stop the later ones; their events must still find their profiles), then again the waiting ones
    an accepted batch may have freed. ``limit``: at most so many. One report per batch (its last
    outcome). Holds the warehouse lock throughout, and first rebuilds stale snapshots."""
    with warehouse_lock(warehouse):
        reconcile_snapshots(spec, warehouse, snapshot_dir)
        reports: dict[str, BatchReport] = {}
        tries: dict[tuple[str, str], int] = {}
        while limit is None or sum(tries.values()) < limit:
            todo = [p for p in pending_batches(inbox, warehouse) if tries.get((p[0].name, p[1]), 0) < MAX_TRIES]
            if not todo:
                break
            for folder, h, files in todo[: None if limit is None else limit - sum(tries.values())]:
                tries[(folder.name, h)] = tries.get((folder.name, h), 0) + 1
                reports.pop(folder.name, None)
                reports[folder.name] = ingest_batch(spec, folder, warehouse, snapshot_dir, gate, run_id, (h, files))
        return list(reports.values())
