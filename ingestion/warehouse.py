"""The DuckDB warehouse: typed tables users / items / interactions (+ rendered text), loaded atomically.

Ingest = parse raw files -> stage typed rows -> quality gate -> upsert -> render text -> gate on
the text -> COMMIT, all in ONE transaction: any failure rolls back and leaves the
previous contents exactly as they were. Upserts are keyed by each table's primary key, so
re-running on the same input changes nothing. Parquet snapshots of the committed tables (the
Feast file sources) are then written atomically (write a temp file, then rename): ``ingestion.snapshots``.

One writer at a time: every write holds the warehouse lock (``warehouse_lock``: a second writer
waits, bounded, then fails with ``Busy``: "warehouse is busy (pid N since T)"), and renews the
warehouse state (``meta.state``) in its transaction. Snapshots made from another state than the
current one (a writer killed between its commit and the end of its export) are rebuilt by
``reconcile_snapshots``, which the next writer runs first.

The gate is passed in (``Gate``): the flows and the CLI pass ``validation.gate``, the Great
Expectations suites derived from the spec; this module never imports them.

Profiles (users, items) are versioned: one row per (key, event_timestamp), the time from which
that version is valid. MovieLens profiles carry no time, so they are valid from the data set's
earliest plausible time (spec.time.min); a later version of a profile is a row with a later
event_timestamp, and Feast's point-in-time join picks the version valid at each event.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Protocol

import duckdb
import numpy as np
import pandas as pd

from core.faults import fault_point
from core.locks import Busy
from core.snapshots import busy_warehouse, has_table, temp_files
from core.spec import DatasetSpec, EntityName, FieldSpec, Kind
from ingestion.snapshots import SNAPSHOT_TABLES, bump_state, export_snapshots, reconcile_snapshots, warehouse_lock
from ingestion.text_sql import render_spark, render_tables

if TYPE_CHECKING:
    from ingestion.loaders import RawTables

log = logging.getLogger("clickprompt.warehouse")

__all__ = ["SNAPSHOT_TABLES", "Busy", "export_snapshots", "reconcile_snapshots", "warehouse_lock"]  # re-exported: callers import them from here


class Gate(Protocol):
    """Checks frames named by table / view (users, interactions, user_text, ...) and raises on
    failure; ``lines`` (the loader's ``RawTables.lines``) lets it name the raw lines of bad rows."""

    def __call__(self, spec: DatasetSpec, frames: Mapping[str, pd.DataFrame], *,
                 lines: Mapping[str, tuple[str, np.ndarray]] | None = None) -> object: ...


class WarehouseError(RuntimeError):
    """The warehouse cannot be used as asked (wrong data set, missing tables)."""


# --- schema ----------------------------------------------------------------------------


def _sql_type(f: FieldSpec) -> str:
    if f.kind == Kind.MULTI:
        return "VARCHAR[]"
    if f.kind == Kind.NUMERIC:
        return "DOUBLE"
    return "BIGINT" if f.dtype == "int64" else "VARCHAR"


def rating_sql_type(spec: DatasetSpec) -> str:
    return "DOUBLE" if spec.rating.dtype == "float64" else "INTEGER"


def _profile_ddl(spec: DatasetSpec, entity: EntityName) -> str:
    ent = spec.entities[entity]
    cols = [f'"{f.name}" {_sql_type(f)}' + (" NOT NULL" if f.name == ent.key else "") for f in spec.fields_of(entity)]
    cols.append("event_timestamp TIMESTAMPTZ NOT NULL")
    return f'CREATE TABLE IF NOT EXISTS {ent.table} ({", ".join(cols)}, PRIMARY KEY ("{ent.key}", event_timestamp))'


def schema_ddl(spec: DatasetSpec) -> list[str]:
    user_key, item_key = spec.entities["user"].key, spec.entities["item"].key
    return [
        "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
        _profile_ddl(spec, "user"),
        _profile_ddl(spec, "item"),
        f"""CREATE TABLE IF NOT EXISTS interactions (
            "{user_key}" BIGINT NOT NULL, "{item_key}" BIGINT NOT NULL, rating {rating_sql_type(spec)} NOT NULL,
            label INTEGER NOT NULL, event_timestamp TIMESTAMPTZ NOT NULL,
            PRIMARY KEY ("{user_key}", "{item_key}", event_timestamp))""",
        """CREATE TABLE IF NOT EXISTS quarantine (
            table_name VARCHAR NOT NULL, file VARCHAR NOT NULL, line BIGINT NOT NULL, field VARCHAR,
            reason VARCHAR NOT NULL, raw VARCHAR, ingest_id VARCHAR NOT NULL,
            PRIMARY KEY (file, line))""",
        """CREATE TABLE IF NOT EXISTS ingest_log (
            ingest_id VARCHAR PRIMARY KEY, dataset VARCHAR, source VARCHAR, files VARCHAR,
            rows_in VARCHAR, rejected BIGINT, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ)""",
    ]


def create_schema(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, extra: list[str] | tuple = ()) -> None:
    """The warehouse's tables (and ``extra`` DDL) where missing, and the rating column as the spec
    types it: every writer's first step inside its transaction."""
    for ddl in [*schema_ddl(spec), *extra]:
        con.execute(ddl)
    _widen_rating(con, spec)


def _widen_rating(con: duckdb.DuckDBPyConnection, spec: DatasetSpec) -> None:
    """A warehouse made while the spec's ratings were whole numbers, now ``dtype: float64``: its
    rating column becomes DOUBLE (lossless, in the caller's transaction), else DuckDB would round
    every fractional rating into the INTEGER column without a word."""
    held = con.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'interactions' "
                       "AND column_name = 'rating'").fetchone()
    if held and held[0] != rating_sql_type(spec) and rating_sql_type(spec) == "DOUBLE":
        con.execute("ALTER TABLE interactions ALTER rating SET DATA TYPE DOUBLE")
        log.info("interactions.rating widened from %s to DOUBLE: spec %s has rating dtype float64", held[0], spec.name)


def require_warehouse(path: Path) -> None:
    """A command that reads or changes committed data needs a warehouse: never create an empty one."""
    if not path.exists():
        raise WarehouseError(f"no warehouse at {path}: run `clickprompt data ingest` first (all the data at once), or "
                             "`clickprompt data replay` then `clickprompt data update` (the data as weekly batches)")


@contextmanager
def connect(path: Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    if read_only:
        require_warehouse(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:  # another process has the file open for writing
        if "lock" in str(exc).lower():
            raise busy_warehouse(path, exc) from None
        raise
    try:
        con.execute("SET TimeZone = 'UTC'")
        yield con
    finally:
        con.close()


def warehouse_dataset(path: Path) -> str | None:
    """The data set a warehouse holds, or None when it is empty / absent. While another process writes
    it (DuckDB then refuses even a read-only open), the snapshots written beside it say, so a command
    that only needs the name goes on to wait for the warehouse's lock instead of failing busy."""
    if not path.exists():
        return None
    try:
        return _dataset_in(path)
    except Busy:
        manifest = path.parent / "snapshots" / "manifest.json"
        if manifest.is_file():
            return json.loads(manifest.read_text(encoding="utf-8")).get("dataset")
        raise


def _dataset_in(path: Path) -> str | None:
    with connect(path, read_only=True) as con:
        if not has_table(con, "meta"):
            return None
        row = con.execute("SELECT value FROM meta WHERE key = 'dataset'").fetchone()
    return row[0] if row else None


# --- staging ---------------------------------------------------------------------------


def _select_typed(spec: DatasetSpec, entity: EntityName, src: str, valid_from: datetime | None = None,
                  per_row: bool = False) -> str:
    """Typed profile rows; ``per_row``: the frame carries each version's ``valid_from`` (unix seconds,
    profiles a loader derived from the events), else every row is valid from ``valid_from``."""
    cols = [f'CAST("{f.name}" AS {_sql_type(f)}) AS "{f.name}"' for f in spec.fields_of(entity)]
    since = f"CAST('{(valid_from or spec.time.min).isoformat()}' AS TIMESTAMPTZ)"
    if per_row:
        since = f"COALESCE(to_timestamp(CAST(valid_from AS BIGINT)), {since})"
    return f"SELECT {', '.join(cols)}, {since} AS event_timestamp FROM {src}"


def stage(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, raw: RawTables,
          valid_from: datetime | None = None) -> dict[str, pd.DataFrame]:
    """Typed staging tables from the parsed raw frames; returns them as the GX gates will see them.

    Profile rows become versions valid from ``valid_from`` (default: the data set's earliest time,
    MovieLens profiles carry none)."""
    user_key, item_key = spec.entities["user"].key, spec.entities["item"].key
    con.register("raw_users", raw.users)
    con.register("raw_items", raw.items)
    con.register("raw_interactions", raw.interactions)
    try:
        for entity, frame in (("user", raw.users), ("item", raw.items)):
            select = _select_typed(spec, entity, f"raw_{entity}s", valid_from, "valid_from" in frame.columns)
            con.execute(f"CREATE OR REPLACE TEMP TABLE stage_{entity}s AS {select}")
        threshold = spec.label.threshold
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE stage_interactions AS SELECT
                CAST("{user_key}" AS BIGINT) AS "{user_key}", CAST("{item_key}" AS BIGINT) AS "{item_key}",
                CAST(rating AS {rating_sql_type(spec)}) AS rating, CAST(rating >= {threshold} AS INTEGER) AS label,
                to_timestamp(CAST("timestamp" AS BIGINT)) AS event_timestamp
              FROM raw_interactions"""
        )
    finally:
        for name in ("raw_users", "raw_items", "raw_interactions"):
            con.unregister(name)
    return {t: con.execute(f"SELECT * FROM stage_{t}").df() for t in ("users", "items", "interactions")}


# --- ingest ----------------------------------------------------------------------------


@dataclass
class IngestReport:
    dataset: str
    warehouse: str
    ingest_id: str
    rows_in: dict[str, int]  # rows parsed per table (after quarantine)
    rows_after: dict[str, int]  # rows in each table after commit
    rejected: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    snapshot_hash: str = ""
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step (parse, stage, gate rows, ...)

    def to_dict(self) -> dict:
        return asdict(self)


def ingest(
    spec: DatasetSpec,
    source: Path,
    warehouse: Path,
    snapshot_dir: Path,
    gate: Gate,
    quarantine: bool = False,
) -> IngestReport:
    """Load raw files of ``spec``'s data set from ``source`` into the warehouse, all or nothing:
    ``gate`` checks the staged rows and the rendered text before the commit."""
    with warehouse_lock(warehouse):
        return _ingest(spec, source, warehouse, snapshot_dir, gate, quarantine)


def _ingest(spec: DatasetSpec, source: Path, warehouse: Path, snapshot_dir: Path, gate: Gate,
            quarantine: bool) -> IngestReport:
    from ingestion.loaders import load_raw

    started = time.perf_counter()
    for tmp in temp_files(snapshot_dir):  # a killed writer's; this ingest exports every table again
        tmp.unlink(missing_ok=True)
    held = warehouse_dataset(warehouse)
    if held is not None and held != spec.name:
        raise WarehouseError(
            f"{warehouse} holds data set {held!r}, not {spec.name!r}: pass --warehouse to use another file"
        )
    steps: dict[str, float] = {}
    step = _stepper(steps)
    raw = step("parse", lambda: load_raw(spec, Path(source), quarantine=quarantine))  # RawDataError before any write
    ingest_id = uuid.uuid4().hex[:12]
    first = not warehouse.exists()
    committed = False
    try:
        with connect(warehouse) as con:
            con.begin()
            try:
                create_schema(con, spec)
                staged = step("stage", lambda: stage(con, spec, raw))
                step("gate rows", lambda: gate(spec, staged, lines=raw.lines))
                staged = None  # the frames the gate saw: released before the upsert
                step("upsert", lambda: [con.execute(f"INSERT OR REPLACE INTO {table} SELECT * FROM stage_{table}")
                                        for table in ("users", "items", "interactions")])
                step("render text", lambda: render_tables(con, spec))
                step("gate text", lambda: gate(spec, {t: con.execute(f"SELECT * FROM {t}").df()
                                                      for t in ("user_text", "item_text")}))
                _record(con, spec, raw, ingest_id, source)
                rows_after = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in SNAPSHOT_TABLES}
                step("commit", con.commit)
                committed = True
            except BaseException:
                con.rollback()
                raise
            fault_point("after:ingest-commit")
            snapshot_hash = step("snapshots", lambda: export_snapshots(con, spec, snapshot_dir))
    except BaseException:
        if first and not committed:  # a failed first ingest leaves no empty warehouse (status would call it current)
            for path in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
                path.unlink(missing_ok=True)
        raise
    reasons: dict[str, int] = {}
    for r in raw.rejected:  # by file and field ("duplicate event" has none); a reason's own text may hold ':'
        key = f"{r.file}, field {r.field}" if r.field else f"{r.file}, {r.reason.split(':')[0]}"
        reasons[key] = reasons.get(key, 0) + 1
    return IngestReport(
        dataset=spec.name,
        warehouse=str(warehouse),
        ingest_id=ingest_id,
        rows_in={"users": len(raw.users), "items": len(raw.items), "interactions": len(raw.interactions)},
        rows_after=rows_after,
        rejected=len(raw.rejected),
        rejected_by_reason=reasons,
        snapshot_hash=snapshot_hash,
        seconds=round(time.perf_counter() - started, 3),
        steps=steps,
    )


def _stepper(steps: dict[str, float]):
    """``step(name, fn)``: run ``fn``, add its seconds to ``steps[name]`` (the report's breakdown)."""
    def step(name: str, fn):
        t = time.perf_counter()
        try:
            return fn()
        finally:
            steps[name] = round(steps.get(name, 0.0) + time.perf_counter() - t, 4)
    return step


def _record(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, raw: RawTables, ingest_id: str, source: Path) -> None:
    con.execute("INSERT OR REPLACE INTO meta VALUES ('dataset', ?)", [spec.name])
    bump_state(con)
    if raw.rejected:
        rows = pd.DataFrame(
            [(r.table, r.file, r.line if r.line is not None else 0, r.field, r.reason, r.raw, ingest_id) for r in raw.rejected],
            columns=["table_name", "file", "line", "field", "reason", "raw", "ingest_id"],
        ).drop_duplicates(["file", "line"])
        con.register("rejected_rows", rows)
        con.execute("INSERT OR REPLACE INTO quarantine SELECT * FROM rejected_rows")
        con.unregister("rejected_rows")
    con.execute(
        "INSERT INTO ingest_log VALUES (?, ?, ?, ?, ?, ?, now(), now())",
        [
            ingest_id,
            spec.name,
            str(source),
            json.dumps(raw.files, sort_keys=True),
            json.dumps({"users": len(raw.users), "items": len(raw.items), "interactions": len(raw.interactions)}),
            len(raw.rejected),
        ],
    )


def rerender_text(spec: DatasetSpec, warehouse: Path, snapshot_dir: Path, gate: Gate, spark=None) -> dict[str, int]:
    """Re-render the text tables from the committed profiles (after a template or spec change;
    ingest renders them itself), gated before the commit. ``spark``: a Spark session (the Spark
    offline store's engine) renders them instead, in Spark SQL from the profile snapshots."""
    require_warehouse(warehouse)  # re-rendering needs committed profiles; an empty file would look current
    with warehouse_lock(warehouse), connect(warehouse) as con:
        con.begin()
        try:
            counts = render_tables(con, spec) if spark is None else _load_rendered(con, spec, render_spark(spark, spec, snapshot_dir))
            gate(spec, {t: con.execute(f"SELECT * FROM {t}").df() for t in counts})
            bump_state(con)
            con.commit()
        except BaseException:
            con.rollback()
            raise
        export_snapshots(con, spec, snapshot_dir)
    return counts


def _load_rendered(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, frames: dict) -> dict[str, int]:
    """Replace the text tables with Spark-rendered ones (Arrow across), typed as DuckDB renders them."""
    counts = {}
    for entity in spec.entity_order:
        name, key = spec.text_column(entity), spec.entities[entity].key
        con.register("rendered", frames[name].toArrow())
        con.execute(f'CREATE OR REPLACE TABLE {name} AS SELECT CAST("{key}" AS BIGINT) AS "{key}", '
                    f'CAST("{name}" AS VARCHAR) AS "{name}", CAST(event_timestamp AS TIMESTAMPTZ) AS event_timestamp '
                    "FROM rendered")
        con.unregister("rendered")
        counts[name] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    return counts


# --- snapshots (ingestion.export) and reconciling them -----------------------------------


def read_tables(warehouse: Path, tables: tuple[str, ...] = ("users", "items", "interactions", "user_text", "item_text")) -> dict[str, pd.DataFrame]:
    with connect(warehouse, read_only=True) as con:
        return {t: con.execute(f"SELECT * FROM {t}").df() for t in tables}


def validation_frames(spec: DatasetSpec, warehouse: Path, snapshot_dir: Path) -> dict[str, pd.DataFrame]:
    """What the GX suites check: the warehouse tables, and the snapshots the feature views read."""
    frames = read_tables(warehouse, ("users", "items", "interactions"))
    views = {
        "user_profile": spec.entities["user"].table,
        "item_profile": spec.entities["item"].table,
        "user_text": "user_text",
        "item_text": "item_text",
    }
    for view, table in views.items():
        path = snapshot_dir / f"{table}.parquet"
        if not path.exists():
            raise WarehouseError(f"snapshot {path} is missing: run `clickprompt data ingest` first")
        frames[view] = pd.read_parquet(path)
    return frames
