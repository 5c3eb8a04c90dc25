"""A registered model version: its record (``ModelVersion``) as MLflow version tags, its stages and
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
from models.train.stages import REGISTERED_STAGE, REGISTRABLE_STAGES, Stage

log = logging.getLogger("clickprompt.registry")

CANDIDATE, PRODUCTION, ARCHIVED = "candidate", "production", "archived"
DEFAULT_NAME = "ctr"
DEFAULT_STAGE = REGISTERED_STAGE
# training stage -> the Feast feature service the model needs at serving time
FEATURE_SERVICES: dict[str, str] = {  # one per models.train.stages.REGISTRABLE_STAGES
    Stage.FINETUNE_CTR_ONLY: CTR_SERVICE,  # the deployable CTR-only model: ID features, no language model
    Stage.BASELINE: CTR_SERVICE,
    Stage.FINETUNE_WITH_LM: CLICKPROMPT_SERVICE,  # IDs + text: needs the language model at serving
}
ARTIFACT_FILES = ("model.safetensors", "config.json", "encoder.json", "metrics.json")

CHAMPION = "champion"  # the MLflow alias of the production version
TAG = "clickprompt."  # a version's record, one MLflow tag per field
PROMOTION_TAG = "clickprompt.promotion."  # + decision time: one decision (JSON), refusals too
_JSON_FIELDS = ("metrics", "files")


class RegistryError(ValueError):
    """Bad registry input: an unknown version, an incomplete run folder, a bad name or metric."""


class NoProductionModelError(RegistryError):
    """No version of the model is in production yet."""

    @classmethod
    def of(cls, name: str, uri: str) -> "NoProductionModelError":
        return cls(f"no production version of model {name!r} in {uri}: `clickprompt registry register "
                   "--run RUN_DIR` then `clickprompt registry promote VERSION`")


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
    mlflow_run_id: str | None = None  # lineage: the MLflow run of the training run

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


def record_tags(record: dict) -> dict[str, str]:
    """A version's record as MLflow tags (``clickprompt.<field>``; None left out)."""
    return {f"{TAG}{k}": json.dumps(v, default=float) if k in _JSON_FIELDS else str(v)
            for k, v in record.items() if v is not None}


def version_from_tags(name: str, version: int, tags: dict, source: str, champion: int | None,
                      run_id: str | None = None) -> ModelVersion:
    """The record of MLflow model version ``name`` v``version``; its stage from the ``champion`` alias
    (production) and its own promotion decisions (archived: was production once)."""
    from urllib.parse import unquote, urlparse

    r = {k[len(TAG):]: v for k, v in tags.items() if k.startswith(TAG) and not k.startswith(PROMOTION_TAG)}
    promoted = sorted(json.loads(v)["decided_at"] for k, v in tags.items()
                      if k.startswith(PROMOTION_TAG) and json.loads(v)["promoted"])
    stage = PRODUCTION if champion == version else ARCHIVED if promoted else CANDIDATE
    path = unquote(urlparse(source).path) if source.startswith("file:") else source
    return ModelVersion(
        name=name, version=version, stage=stage, training_stage=r["training_stage"], method=r.get("method"),
        backbone=r.get("backbone"), metrics=json.loads(r.get("metrics", "{}")), snapshot_hash=r.get("snapshot_hash"),
        feature_service=r["feature_service"], train_start=r.get("train_start"), train_end=r.get("train_end"),
        code_version=r.get("code_version", ""), config_hash=r.get("config_hash"), created_at=r["created_at"],
        stage_changed_at=promoted[-1] if promoted else r["created_at"], artifact_dir=path,
        files=json.loads(r.get("files", "{}")), source_run=r.get("source_run"), mlflow_run_id=run_id or None)


def read_run(run_dir: Path, stage: str) -> tuple[dict, dict]:
    """The run's config and the stage's metrics; a RegistryError naming what is missing or not deployable."""
    if not run_dir.is_dir():
        raise RegistryError(f"{run_dir}: no such run folder (training runs are under the project home's "
                            f"artifacts/runs/)")
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
                            f"deployable CTR model (registrable: {', '.join(REGISTRABLE_STAGES)})")
    return config, metrics


def training_window(run_dir: Path) -> tuple[str | None, str | None]:
    """Train split start/end of the training set the run trained on (its ``training_set.json``)."""
    path = run_dir / "training_set.json"
    if not path.is_file():
        log.warning("run %s records no training set: training window not recorded", run_dir)
        return None, None
    train = json.loads(path.read_text(encoding="utf-8"))["manifest"].get("splits", {}).get("train", {})
    return train.get("start") or None, train.get("end") or None
