"""Point-in-time-correct train / valid / test sets, built through Feast, each build a value.

The interactions are the entity dataframe; ``get_historical_features`` joins, for every event,
the profile and text versions valid at that event's time (never a later one). The joined events
are split by a policy (``feature_repo.splits``; default global-temporal: no future event leaks
into training). Each build lives in its own folder named by what it depends on
(``core.training_data.training_set_identity``: snapshot, feature service, policy, fractions,
window), so a retrain's window and a pipeline's full history never overwrite each other; the
build returns a ``TrainingSetRef`` that training takes.

Old builds: after each build the ``KEEP_BUILDS`` most recent builds of the feature service are
kept and older ones removed (a run folder records the identity it trained on; building the same
identity again gives the same rows).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.io import replace_dir, sha256_file, write_json_atomic
from core.settings import Paths
from core.snapshots import read_snapshot_manifest
from core.spec import DatasetSpec, Kind
from core.training_data import (
    DEFAULT_FRACTIONS,
    MANIFEST,
    SPEC_FILE,
    SPLITS,
    TrainingSetManifest,
    TrainingSetRef,
    load_training_data,
    training_set_identity,
)
from feature_repo.feature_services import CLICKPROMPT_SERVICE
from feature_repo.splits import write_splits
from feature_repo.store import open_store

log = logging.getLogger("clickprompt.features")

KEEP_BUILDS = 4  # builds kept per feature service (the newest); older ones are removed after a build
CHUNK_EVENTS = 500_000  # events per Feast point-in-time join (~0.6 GB of join memory)


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




def _window(start: datetime | None, end: datetime | None) -> list[str | None]:
    return [None if start is None else pd.Timestamp(start).isoformat(),
            None if end is None else pd.Timestamp(end).isoformat()]


def training_set_folder(paths: Paths, service: str, policy: str, fractions: tuple[float, float, float],
                        start: datetime | None = None, end: datetime | None = None) -> Path:
    """Where the build of these inputs over the current snapshot lives (whether or not it was built)."""
    snapshot = read_snapshot_manifest(paths.snapshots)["snapshot_hash"]
    return paths.training_sets / service / training_set_identity(snapshot, service, policy, tuple(fractions),
                                                                _window(start, end))


def build_training_sets(
    spec: DatasetSpec,
    paths: Paths,
    service: str = CLICKPROMPT_SERVICE,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    store=None,
    start: datetime | None = None,
    end: datetime | None = None,
    chunk_events: int = CHUNK_EVENTS,
    policy: str | None = None,
) -> TrainingSetRef:
    """Build ``<training_sets>/<service>/<identity>/`` ({train,valid,test}.parquet, spec.json,
    manifest.json) from the events with time in [start, end) (default: all; a retrain's window),
    joined by Feast ``chunk_events`` events at a time, split by ``policy`` (default: the spec's)."""
    started = time.perf_counter()
    policy = policy or spec.split
    snapshot = read_snapshot_manifest(paths.snapshots)["snapshot_hash"]
    window = _window(start, end)
    identity = training_set_identity(snapshot, service, policy, tuple(fractions), window)
    store = store or open_store(paths)
    engine = store.config.offline_store.type
    entity_df = entity_frame(spec, paths, start, end)
    if len(entity_df) < 3:
        raise ValueError(f"{len(entity_df)} events in the window [{start}, {end}): too few for train / valid / test")
    log.info("point-in-time join of %s onto %d events (%s), split %s", service, len(entity_df), engine, policy)
    final = paths.training_sets / service / identity
    tmp = final.with_name(f".{identity}.tmp-{os.getpid()}")
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
        splits = write_splits(parts, policy, fractions, keys, tmp)
        shutil.rmtree(parts)
        (tmp / SPEC_FILE).write_text(spec.model_dump_json(indent=2), encoding="utf-8")
        manifest = TrainingSetManifest(
            dataset=spec.name, feature_service=service, features=features, snapshot_hash=snapshot,
            fractions=tuple(fractions), splits=splits, created_at=datetime.now(timezone.utc).isoformat(),
            seconds=round(time.perf_counter() - started, 3), window=window, offline_store=engine,
            split_policy=policy, identity=identity,
            files={f: sha256_file(tmp / f) for f in [*(f"{s}.parquet" for s in SPLITS), SPEC_FILE]},
        )
        write_json_atomic(tmp / MANIFEST, manifest.to_dict())
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-built sets (nor gigabytes of parts) left behind
        raise
    clean_builds(paths, service, keep=final)
    return TrainingSetRef.of(final)


def builds(paths: Paths, service: str = CLICKPROMPT_SERVICE) -> list[Path]:
    """The finished builds of ``service``, newest first."""
    root = paths.training_sets / service
    found = [p for p in root.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith(".")] if root.is_dir() else []
    return sorted(found, key=lambda p: (p / MANIFEST).stat().st_mtime_ns, reverse=True)


def clean_builds(paths: Paths, service: str, keep: Path | None = None, limit: int = KEEP_BUILDS) -> list[Path]:
    """Remove all but the ``limit`` newest builds of ``service`` (never ``keep``), and a killed build's temp folders."""
    root = paths.training_sets / service
    removed = [p for p in builds(paths, service)[limit:] if p != keep]
    removed += [p for p in root.glob(".*.tmp-*") if p.is_dir() and not _alive(p.name.rsplit("-", 1)[-1])]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    if removed:
        log.info("removed %d old training-set build(s) of %s (kept the %d newest)", len(removed), service, limit)
    return removed


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def latest_training_set(paths: Paths, service: str = CLICKPROMPT_SERVICE) -> TrainingSetRef:
    """The newest build of ``service`` (what ``clickprompt features training-set`` last wrote)."""
    found = builds(paths, service)
    if not found:
        raise FileNotFoundError(f"no training sets in {paths.training_sets / service}: run "
                                "`clickprompt features training-set` first")
    return TrainingSetRef.of(found[0])


def load_training_sets(ref: TrainingSetRef) -> tuple[dict[str, pd.DataFrame], TrainingSetManifest]:
    """The frames of one build (``core.training_data.load_training_data``) and its manifest."""
    return load_training_data(ref).frames, ref.manifest()
