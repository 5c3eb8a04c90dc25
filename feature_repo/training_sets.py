"""Point-in-time-correct train / valid / test sets, built through Feast.

The interactions are the entity dataframe; ``get_historical_features`` joins, for every event,
the profile and text versions valid at that event's time (never a later one). The split is by
event time, so no future event leaks into training: default 80 / 10 / 10 of the events, with
all events of one timestamp on the same side of a boundary.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.io import replace_dir
from core.settings import Paths
from core.snapshots import read_snapshot_manifest
from core.spec import DatasetSpec, Kind, load_spec
from core.training_data import SPLITS, TrainingData
from feature_repo.feature_services import CLICKPROMPT_SERVICE
from feature_repo.store import open_store

log = logging.getLogger("clickprompt.features")

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
CHUNK_EVENTS = 500_000  # events per Feast point-in-time join (~0.6 GB of join memory)


@dataclass
class SplitStats:
    rows: int
    label_rate: float
    start: str  # first event time (ISO, UTC)
    end: str  # last event time


@dataclass
class TrainingSetManifest:
    dataset: str
    feature_service: str
    features: list[str]
    snapshot_hash: str  # hash of the warehouse snapshot the features were read from
    fractions: tuple[float, float, float]
    splits: dict[str, SplitStats]
    created_at: str
    seconds: float
    window: list[str | None] | None = None  # [start, end) of the events it was built from (None: all)
    offline_store: str = "duckdb"  # the engine that ran the point-in-time join (core.backends)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainingSetManifest":
        raw = dict(raw)
        raw["splits"] = {k: SplitStats(**v) for k, v in raw["splits"].items()}
        raw["fractions"] = tuple(raw["fractions"])
        return cls(**raw)


def entity_frame(spec: DatasetSpec, paths: Paths, start: datetime | None = None,
                 end: datetime | None = None) -> pd.DataFrame:
    """The interactions (user, item, time, label, rating) from the snapshot Feast reads, with event
    time in [start, end) when given."""
    keys = [spec.entities["user"].key, spec.entities["item"].key]
    frame = pd.read_parquet(paths.snapshots / "interactions.parquet", columns=[*keys, "event_timestamp", "label", "rating"])
    ts = frame["event_timestamp"]
    keep = pd.Series(True, index=frame.index)
    if start is not None:
        keep &= ts >= pd.Timestamp(start)
    if end is not None:
        keep &= ts < pd.Timestamp(end)
    return frame[keep].reset_index(drop=True)


def _retrieval(store, entity_df: pd.DataFrame, service: str):
    return store.get_historical_features(entity_df=entity_df, features=store.get_feature_service(service))


def historical_features(store, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:
    """Feast's point-in-time join of ``service``'s features onto ``entity_df`` rows."""
    return _retrieval(store, entity_df, service).to_df()


def historical_table(store, entity_df: pd.DataFrame, service: str) -> pa.Table:
    """The same join as an Arrow table (strings in buffers, not Python objects): for large sets.
    Timestamps come back as UTC microseconds whatever the engine (Spark returns them zone-less,
    in its session time zone, which ``feature_repo.store`` sets to UTC)."""
    return utc_timestamps(_retrieval(store, entity_df, service).to_arrow())


def utc_timestamps(table: pa.Table) -> pa.Table:
    """``table`` with every timestamp column as ``timestamp[us, tz=UTC]`` (zone-less ones read as UTC)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and (field.type.tz != "UTC" or field.type.unit != "us"):
            column = table.column(i)
            if field.type.tz is None:
                column = column.cast(pa.timestamp(field.type.unit, tz="UTC"))
            table = table.set_column(i, field.name, column.cast(pa.timestamp("us", tz="UTC")))
    return table


def spec_types(table: pa.Table, spec: DatasetSpec) -> pa.Table:
    """``table`` with the spec's integer fields as int64 where an engine returned them as floats
    (Spark's result goes through pandas, where a chunk with a null turns a nullable integer column
    into float64): every part of every engine then has the same schema."""
    ints = {f.name for e in spec.entity_order for f in spec.fields_of(e) if f.dtype == "int64"
            and f.kind not in (Kind.MULTI, Kind.NUMERIC)}
    for i, field in enumerate(table.schema):
        if field.name in ints and pa.types.is_floating(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.int64()))  # safe: fails on 1.5
    return table


def _split_bounds(con: duckdb.DuckDBPyConnection, fractions: tuple[float, float, float]) -> tuple:
    """The event times where valid and test begin: the times at the 80% and 90% positions (default)
    of the time-ordered events, so all events of one timestamp land on the same side. One scan."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    f_valid, f_test = float(fractions[0]), float(fractions[0] + fractions[1])
    rows = con.execute(
        "SELECT k, event_timestamp FROM (SELECT event_timestamp, row_number() OVER (ORDER BY event_timestamp) - 1 AS k, "
        "count(*) OVER () AS n FROM joined) "
        "WHERE k = least(floor(n * ?), n - 1) OR k = least(floor(n * ?), n - 1)", [f_valid, f_test]).fetchall()
    at = dict(rows)  # one row when both positions fall on the same event
    return at[min(at)], at[max(at)]


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def write_time_splits(parts: Path, fractions: tuple[float, float, float], keys: list[str],
                      folder: Path, memory_limit: str = "2GB") -> dict[str, SplitStats]:
    """``folder/{train,valid,test}.parquet`` from the joined parts (``parts/*.parquet``), split by
    event time, each ordered by (time, *keys).

    DuckDB streams each split, sorted, from the parts into parquet under ``memory_limit`` (its
    sort spills to disk beyond it): no pandas frame, whose Python string objects for the two text
    columns took ~1.5 KB a row, and no whole table in memory."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET temp_directory = {_literal(folder / '.spill')}")
        con.execute(f"CREATE VIEW joined AS SELECT * FROM read_parquet({_literal(parts / '*.parquet')})")
        cut_train, cut_valid = _split_bounds(con, fractions)
        where = {"train": ("event_timestamp < ?", [cut_train]),
                 "valid": ("event_timestamp >= ? AND event_timestamp < ?", [cut_train, cut_valid]),
                 "test": ("event_timestamp >= ?", [cut_valid])}
        order = ", ".join(["event_timestamp", *keys])
        for name, (cond, args) in where.items():
            con.execute(f"COPY (SELECT * FROM joined WHERE {cond} ORDER BY {order}) TO {_literal(folder / (name + '.parquet'))} "
                        "(FORMAT parquet, COMPRESSION zstd)", args)
        found = {row[0]: row[1:] for row in con.execute(  # every split's figures in one scan
            "SELECT CASE WHEN event_timestamp < ? THEN 'train' WHEN event_timestamp < ? THEN 'valid' ELSE 'test' END, "
            "count(*), avg(label), min(event_timestamp), max(event_timestamp) FROM joined GROUP BY 1",
            [cut_train, cut_valid]).fetchall()}
        stats = {}
        for name in where:
            rows, rate, start, end = found.get(name, (0, None, None, None))
            stats[name] = SplitStats(rows=rows, label_rate=round(float(rate), 6) if rows else 0.0,
                                     start=start.isoformat() if rows else "", end=end.isoformat() if rows else "")
    shutil.rmtree(folder / ".spill", ignore_errors=True)
    return stats


def build_training_sets(
    spec: DatasetSpec,
    paths: Paths,
    service: str = CLICKPROMPT_SERVICE,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    store=None,
    start: datetime | None = None,
    end: datetime | None = None,
    chunk_events: int = CHUNK_EVENTS,
) -> TrainingSetManifest:
    """Build and write ``paths.training_sets/<service>/{train,valid,test}.parquet`` + manifest.json,
    from the events with time in [start, end) (default: all; a retrain's window), joined by Feast
    ``chunk_events`` events at a time."""
    started = time.perf_counter()
    snapshot = read_snapshot_manifest(paths.snapshots)
    store = store or open_store(paths)
    engine = store.config.offline_store.type
    entity_df = entity_frame(spec, paths, start, end)
    if len(entity_df) < 3:
        raise ValueError(f"{len(entity_df)} events in the window [{start}, {end}): too few for train / valid / test")
    log.info("point-in-time join of %s onto %d events (%s)", service, len(entity_df), engine)
    final = paths.training_sets / service
    tmp = final.with_name(f".{service}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        parts = tmp / ".parts"
        parts.mkdir(parents=True)
        # the join is row-wise (each event gets the versions valid at its own time), so chunks of
        # events give the same rows as one join, with memory bounded by the chunk instead of the data
        features: list[str] = []
        for k, lo in enumerate(range(0, len(entity_df), chunk_events)):
            joined = spec_types(historical_table(store, entity_df.iloc[lo:lo + chunk_events].reset_index(drop=True),
                                                 service), spec)
            features = [c for c in joined.column_names if c not in entity_df.columns]
            pq.write_table(joined, parts / f"part-{k:05d}.parquet")
            del joined
        keys = [spec.entities["user"].key, spec.entities["item"].key]
        splits = write_time_splits(parts, fractions, keys, tmp)
        shutil.rmtree(parts)
        manifest = TrainingSetManifest(
            dataset=spec.name,
            feature_service=service,
            features=features,
            snapshot_hash=snapshot["snapshot_hash"],
            fractions=tuple(fractions),
            splits=splits,
            created_at=datetime.now(timezone.utc).isoformat(),
            seconds=0.0,
            window=[None if start is None else pd.Timestamp(start).isoformat(),
                    None if end is None else pd.Timestamp(end).isoformat()],
            offline_store=engine,
        )
        manifest.seconds = round(time.perf_counter() - started, 3)
        (tmp / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2), encoding="utf-8")
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-built sets (nor gigabytes of parts) left behind
        raise
    return manifest


def load_training_sets(paths: Paths, service: str = CLICKPROMPT_SERVICE) -> tuple[dict[str, pd.DataFrame], TrainingSetManifest]:
    folder = paths.training_sets / service
    if not (folder / "manifest.json").exists():
        raise FileNotFoundError(f"no training sets in {folder}: run `clickprompt features training-set` first")
    manifest = TrainingSetManifest.from_dict(json.loads((folder / "manifest.json").read_text(encoding="utf-8")))
    return {name: pd.read_parquet(folder / f"{name}.parquet") for name in SPLITS}, manifest


def load_training_data(paths: Paths, service: str = CLICKPROMPT_SERVICE) -> TrainingData:
    """The training sets of ``service`` with their data set's spec and snapshot hash: what training takes."""
    frames, manifest = load_training_sets(paths, service)
    return TrainingData(frames, load_spec(manifest.dataset), manifest.snapshot_hash)
