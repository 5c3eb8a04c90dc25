"""What a training run takes: the point-in-time training sets as frames, the data set's spec and
the hash of the snapshot they were built from. ``feature_repo.training_sets`` builds and loads
them; ``models`` trains on them without knowing where they came from."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.spec import DatasetSpec

SPLITS = ("train", "valid", "test")


@dataclass
class TrainingData:
    frames: dict[str, pd.DataFrame]  # split name -> rows (ids, label, event_timestamp, features, texts)
    spec: DatasetSpec
    snapshot_hash: str  # the warehouse snapshot the features were read from

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.frames]
        if missing:
            raise ValueError(f"training data lacks split(s) {missing}")
