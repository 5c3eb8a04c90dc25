"""What a training run takes: a training set as a value.

A build of the point-in-time training sets is stored under its own identity (snapshot hash,
feature service, split policy and fractions, window) in ``<training_sets>/<service>/<identity>/``:
``{train,valid,test}.parquet``, ``spec.json`` (the data set's spec) and ``manifest.json`` (what
was built, how it was split, each file's sha256). A ``TrainingSetRef`` (folder + the manifest's
sha256) names one build: the flows pass it from the build to training, cache keys include it, a
run folder records it, and a training bundle carries it. ``feature_repo.training_sets`` builds
the sets through Feast; loading one needs only pandas / pyarrow / pydantic (no Feast, DuckDB,
Prefect or GX), so a bundle trains anywhere torch runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from core.io import digest, sha256_file
from core.spec import DatasetSpec

SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"
SPEC_FILE = "spec.json"
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
RANDOM_SPLIT_SEED = 2023  # the random policy's row order (fixed: one identity, one split)


def fractions_problem(fractions) -> str | None:
    """Why ``fractions`` are no train / valid / test split (three numbers > 0 summing to 1), or None."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-9:
        return f"split fractions must be three positive numbers summing to 1, got {tuple(fractions)}"
    return None


@dataclass
class SplitStats:
    rows: int
    label_rate: float
    start: str  # first event time (ISO, UTC)
    end: str  # last event time
    # share of this split's rows whose user / item never occurs in the train split (0 for train):
    # their ID embeddings are never trained, so a split policy's cost shows here
    unseen_users: float = 0.0
    unseen_items: float = 0.0


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
    split_policy: str = "global-temporal"  # core.spec.SplitPolicy
    identity: str = ""  # the folder name: digest of what the build depends on (training_set_identity)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainingSetManifest":
        raw = dict(raw)
        raw["splits"] = {k: SplitStats(**v) for k, v in raw["splits"].items()}
        raw["fractions"] = tuple(raw["fractions"])
        return cls(**raw)

    def unseen(self) -> dict[str, dict[str, float]]:
        """{valid|test: {users, items}}: the shares of rows whose user / item never occurs in train."""
        return {s: {"users": self.splits[s].unseen_users, "items": self.splits[s].unseen_items}
                for s in SPLITS if s != "train" and s in self.splits}


def training_set_identity(snapshot_hash: str | None, service: str, policy: str,
                          fractions: tuple[float, float, float], window: list[str | None] | None) -> str:
    """The folder name of a build: the same inputs always name the same folder (and rows)."""
    return digest(snapshot_hash, service, policy, [float(f) for f in fractions], window or [None, None])[:16]


@dataclass(frozen=True)
class TrainingSetRef:
    """One training-set build: its folder and the sha256 of its manifest (which holds each file's sha256)."""

    folder: Path
    manifest_hash: str

    @classmethod
    def of(cls, folder: Path | str) -> "TrainingSetRef":
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no training set in {folder} (no {MANIFEST}): build one with "
                                    "`clickprompt features training-set`")
        return cls(folder, sha256_file(path))

    @property
    def identity(self) -> str:
        return self.folder.name

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "manifest_hash": self.manifest_hash}

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainingSetRef":
        return cls(Path(raw["folder"]), raw["manifest_hash"])

    def manifest(self) -> TrainingSetManifest:
        """The manifest, checked against the reference (a rebuilt or edited folder is refused)."""
        found = TrainingSetRef.of(self.folder)
        if found.manifest_hash != self.manifest_hash:
            raise ValueError(f"training set {self.folder} changed since it was referenced (manifest sha256 "
                             f"{found.manifest_hash[:12]} != {self.manifest_hash[:12]}): build it again or "
                             "train on the new reference")
        return TrainingSetManifest.from_dict(json.loads((self.folder / MANIFEST).read_text(encoding="utf-8")))

    def spec(self) -> DatasetSpec:
        return DatasetSpec.model_validate_json((self.folder / SPEC_FILE).read_text(encoding="utf-8"))

    def verify_files(self, manifest: TrainingSetManifest) -> None:
        """Each split file's sha256 as the manifest recorded it (a bundle copied elsewhere, say)."""
        for name, expected in manifest.files.items():
            if sha256_file(self.folder / name) != expected:
                raise ValueError(f"{self.folder / name}: sha256 differs from its manifest: the training set is "
                                 "damaged; export or build it again")


@dataclass
class TrainingData:
    frames: dict[str, pd.DataFrame]  # split name -> rows (ids, label, event_timestamp, features, texts)
    spec: DatasetSpec
    snapshot_hash: str  # the warehouse snapshot the features were read from
    ref: TrainingSetRef | None = None  # the build the frames were read from (None: frames made in memory)

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.frames]
        if missing:
            raise ValueError(f"training data lacks split(s) {missing}")

    @property
    def data_id(self) -> str:
        """What a checkpoint or a prepared run must match: the build's manifest hash, else the snapshot."""
        return self.ref.manifest_hash if self.ref is not None else self.snapshot_hash


def load_training_data(ref: TrainingSetRef, verify: bool = False) -> TrainingData:
    """The frames, spec and snapshot hash of one build (``verify``: each file's sha256 too)."""
    manifest = ref.manifest()
    if verify:
        ref.verify_files(manifest)
    frames = {name: pd.read_parquet(ref.folder / f"{name}.parquet") for name in SPLITS}
    return TrainingData(frames, ref.spec(), manifest.snapshot_hash, ref)
