"""A registered model version: its record (``ModelVersion``), the registry's tables, its stages and
errors, and what registering reads from a training run (``read_run``, ``training_window``).

``serving.registry`` writes and reads these rows; a version's artifact folder is checked against
the hashes recorded here before a model is loaded (``ModelVersion.verify``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from core.io import sha256_file
from core.names import CLICKPROMPT_SERVICE, CTR_SERVICE
from models.train.stages import REGISTERED_STAGE, Stage

log = logging.getLogger("clickprompt.registry")

CANDIDATE, PRODUCTION, ARCHIVED = "candidate", "production", "archived"
DEFAULT_NAME = "ctr"
DEFAULT_STAGE = REGISTERED_STAGE
# training stage -> the Feast feature service the model needs at serving time
FEATURE_SERVICES: dict[str, str] = {
    Stage.FINETUNE_CTR_ONLY: CTR_SERVICE,  # the deployable CTR-only model: ID features, no language model
    Stage.BASELINE: CTR_SERVICE,
    Stage.FINETUNE_WITH_LM: CLICKPROMPT_SERVICE,  # IDs + text: needs the language model at serving
}
ARTIFACT_FILES = ("model.safetensors", "config.json", "encoder.json", "metrics.json")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS model_versions (
        name VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        stage VARCHAR NOT NULL,
        training_stage VARCHAR NOT NULL,
        method VARCHAR,
        backbone VARCHAR,
        auc DOUBLE,
        logloss DOUBLE,
        metrics VARCHAR,
        snapshot_hash VARCHAR,
        feature_service VARCHAR,
        train_start VARCHAR,
        train_end VARCHAR,
        code_version VARCHAR,
        config_hash VARCHAR,
        created_at VARCHAR NOT NULL,
        stage_changed_at VARCHAR NOT NULL,
        artifact_dir VARCHAR NOT NULL,
        files VARCHAR NOT NULL,
        source_run VARCHAR,
        PRIMARY KEY (name, version))""",
    """CREATE TABLE IF NOT EXISTS promotions (
        name VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        previous_version INTEGER,
        metric VARCHAR,
        candidate_value DOUBLE,
        production_value DOUBLE,
        forced BOOLEAN,
        promoted BOOLEAN,
        reason VARCHAR,
        decided_at VARCHAR NOT NULL)""",
    # what the figures were measured on ("own test split" or a shared window), and the margin asked for
    "ALTER TABLE promotions ADD COLUMN IF NOT EXISTS basis VARCHAR",
    "ALTER TABLE promotions ADD COLUMN IF NOT EXISTS margin DOUBLE",
]
COLUMNS = ("name", "version", "stage", "training_stage", "method", "backbone", "auc", "logloss", "metrics",
            "snapshot_hash", "feature_service", "train_start", "train_end", "code_version", "config_hash",
            "created_at", "stage_changed_at", "artifact_dir", "files", "source_run")


class RegistryError(ValueError):
    """Bad registry input: an unknown version, an incomplete run folder, a bad name or metric."""


class ArtifactIntegrityError(RegistryError):
    """A registered artifact no longer matches the hashes recorded when it was registered."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    stage: str  # candidate | production | archived
    training_stage: str  # the run's stage this artifact came from, e.g. finetune-ctr-only
    method: str | None
    backbone: str | None
    metrics: dict  # test metrics of the stage: auc, logloss, n
    snapshot_hash: str | None  # warehouse snapshot the training sets were built from
    feature_service: str  # Feast service to serve on (ctr_v1 for CTR-only models)
    train_start: str | None  # training split time window (ISO, UTC)
    train_end: str | None
    code_version: str
    config_hash: str | None
    created_at: str
    stage_changed_at: str
    artifact_dir: str
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    source_run: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.artifact_dir)

    def to_dict(self) -> dict:
        return asdict(self)

    def verify(self) -> None:
        """Raise ArtifactIntegrityError if any artifact file is missing or changed since registration."""
        for name, expected in self.files.items():
            path = self.path / name
            if not path.is_file():
                raise ArtifactIntegrityError(f"{self.name} v{self.version}: artifact file {path} is missing")
            actual = sha256_file(path)
            if actual != expected:
                raise ArtifactIntegrityError(
                    f"{self.name} v{self.version}: {path} changed since registration "
                    f"(sha256 {actual[:12]}, registered {expected[:12]})")

    @classmethod
    def _from_row(cls, row: tuple) -> "ModelVersion":
        r = dict(zip(COLUMNS, row))
        return cls(
            name=r["name"], version=int(r["version"]), stage=r["stage"], training_stage=r["training_stage"],
            method=r["method"], backbone=r["backbone"], metrics=json.loads(r["metrics"] or "{}"),
            snapshot_hash=r["snapshot_hash"], feature_service=r["feature_service"],
            train_start=r["train_start"], train_end=r["train_end"], code_version=r["code_version"],
            config_hash=r["config_hash"], created_at=r["created_at"], stage_changed_at=r["stage_changed_at"],
            artifact_dir=r["artifact_dir"], files=json.loads(r["files"]), source_run=r["source_run"],
        )


def read_run(run_dir: Path, stage: str) -> tuple[dict, dict]:
    """The run's config and the stage's metrics; a RegistryError naming what is missing or not deployable."""
    stage_dir = run_dir / stage
    needed = [run_dir / "config.json", run_dir / "encoder.json", stage_dir / "model.safetensors",
              stage_dir / "metrics.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise RegistryError(f"{run_dir} is not a complete run of stage {stage!r}: missing {missing}")
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    metrics = json.loads((stage_dir / "metrics.json").read_text(encoding="utf-8"))
    if "test" not in metrics or "auc" not in metrics["test"]:
        raise RegistryError(f"{stage_dir / 'metrics.json'} has no test metrics: stage {stage!r} is not a "
                            f"deployable CTR model (registrable: {sorted(FEATURE_SERVICES)})")
    return config, metrics


def training_window(run_dir: Path) -> tuple[str | None, str | None]:
    """Train split start/end of the training set the run trained on (its ``training_set.json``)."""
    path = run_dir / "training_set.json"
    if not path.is_file():
        log.warning("run %s records no training set: training window not recorded", run_dir)
        return None, None
    train = json.loads(path.read_text(encoding="utf-8"))["manifest"].get("splits", {}).get("train", {})
    return train.get("start") or None, train.get("end") or None
