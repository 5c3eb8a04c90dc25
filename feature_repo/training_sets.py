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

import pandas as pd

from core.io import replace_dir
from core.settings import Paths
from core.snapshots import read_snapshot_manifest
from core.spec import DatasetSpec, load_spec
from core.training_data import SPLITS, TrainingData
from feature_repo.feature_services import CLICKPROMPT_SERVICE
from feature_repo.store import open_store

log = logging.getLogger("clickprompt.features")

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


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


def historical_features(store, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:
    """Feast's point-in-time join of ``service``'s features onto ``entity_df`` rows."""
    fs = store.get_feature_service(service)
    return store.get_historical_features(entity_df=entity_df, features=fs).to_df()


def time_split(frame: pd.DataFrame, fractions: tuple[float, float, float], keys: list[str]) -> dict[str, pd.DataFrame]:
    """Split by event time; all rows of one timestamp fall in the same split (ties ordered by ``keys``)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    ordered = frame.sort_values(["event_timestamp", *keys], kind="stable").reset_index(drop=True)
    ts = ordered["event_timestamp"]
    n = len(ordered)
    cut_train = ts.iloc[min(int(n * fractions[0]), n - 1)]
    cut_valid = ts.iloc[min(int(n * (fractions[0] + fractions[1])), n - 1)]
    return {
        "train": ordered[ts < cut_train].reset_index(drop=True),
        "valid": ordered[(ts >= cut_train) & (ts < cut_valid)].reset_index(drop=True),
        "test": ordered[ts >= cut_valid].reset_index(drop=True),
    }


def _stats(frame: pd.DataFrame) -> SplitStats:
    ts = frame["event_timestamp"]
    return SplitStats(
        rows=len(frame),
        label_rate=round(float(frame["label"].mean()), 6) if len(frame) else 0.0,
        start=ts.min().isoformat() if len(frame) else "",
        end=ts.max().isoformat() if len(frame) else "",
    )


def build_training_sets(
    spec: DatasetSpec,
    paths: Paths,
    service: str = CLICKPROMPT_SERVICE,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    store=None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> TrainingSetManifest:
    """Build and write ``paths.training_sets/<service>/{train,valid,test}.parquet`` + manifest.json,
    from the events with time in [start, end) (default: all; a retrain's window)."""
    started = time.perf_counter()
    snapshot = read_snapshot_manifest(paths.snapshots)
    store = store or open_store(paths)
    entity_df = entity_frame(spec, paths, start, end)
    if len(entity_df) < 3:
        raise ValueError(f"{len(entity_df)} events in the window [{start}, {end}): too few for train / valid / test")
    log.info("point-in-time join of %s onto %d events", service, len(entity_df))
    joined = historical_features(store, entity_df, service)
    splits = time_split(joined, fractions, keys=[spec.entities["user"].key, spec.entities["item"].key])
    features = [c for c in joined.columns if c not in entity_df.columns]
    manifest = TrainingSetManifest(
        dataset=spec.name,
        feature_service=service,
        features=features,
        snapshot_hash=snapshot["snapshot_hash"],
        fractions=tuple(fractions),
        splits={name: _stats(frame) for name, frame in splits.items()},
        created_at=datetime.now(timezone.utc).isoformat(),
        seconds=0.0,
        window=[None if start is None else pd.Timestamp(start).isoformat(),
                None if end is None else pd.Timestamp(end).isoformat()],
    )
    final = paths.training_sets / service
    tmp = final.with_name(f".{service}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, frame in splits.items():
        frame.to_parquet(tmp / f"{name}.parquet", index=False)
    manifest.seconds = round(time.perf_counter() - started, 3)
    (tmp / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2), encoding="utf-8")
    replace_dir(tmp, final)
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
