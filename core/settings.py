"""Where things live, and the environment defaults the project sets for itself.

Every path derives from one root, ``CLICKPROMPT_HOME`` (default: the repository
root), so tests point a whole run at a temporary folder with one variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def apply_environment_defaults() -> None:
    """Project-local Prefect home, no telemetry, no hub access. Never overrides a user's value."""
    home = project_home()
    defaults = {
        "PREFECT_HOME": str(home / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "DO_NOT_TRACK": "1",
        "FEAST_USAGE": "False",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "GX_ANALYTICS_ENABLED": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def project_home() -> Path:
    return Path(os.environ.get("CLICKPROMPT_HOME", REPO_ROOT)).resolve()


@dataclass(frozen=True)
class Paths:
    """All on-disk locations of one project home. Nothing here is created on construction."""

    home: Path

    @classmethod
    def default(cls) -> "Paths":
        return cls(project_home())

    @property
    def data(self) -> Path:
        return self.home / "data"

    def raw(self, dataset: str) -> Path:
        """Untouched raw files of one data set, exactly as fetched."""
        return self.data / "raw" / dataset

    def inbox(self, dataset: str) -> Path:
        """Landing area of a data set's arriving batches, one folder each (``ingestion.increments``)."""
        return self.data / "inbox" / dataset

    @property
    def warehouse(self) -> Path:
        return self.data / "warehouse.duckdb"

    @property
    def snapshots(self) -> Path:
        """Parquet snapshots of the warehouse tables: the Feast file sources."""
        return self.data / "snapshots"

    @property
    def feast(self) -> Path:
        """Feast registry and SQLite online store."""
        return self.data / "feast"

    @property
    def feast_registry(self) -> Path:
        return self.feast / "registry.db"

    @property
    def online_store(self) -> Path:
        """The SQLite online store (the embedded default)."""
        return self.feast / "online_store.db"

    @property
    def training_sets(self) -> Path:
        return self.data / "training_sets"

    @property
    def plms(self) -> Path:
        """Pretrained language models extracted from PyPI wheels."""
        return self.data / "plms"

    def plm_source(self, name: str) -> Path | str:
        """A PLM by name: a fetched offline one (data/plms/<name>), a local folder, or else a hub name."""
        local = self.plms / name
        if local.is_dir():
            return local
        if Path(name).expanduser().is_dir():
            return Path(name).expanduser()
        return name

    @property
    def registry(self) -> Path:
        """The MLflow store (SQLite: runs and the model registry); artifacts live under artifacts/registry/."""
        return self.home / "mlruns.db"

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def runs(self) -> Path:
        return self.artifacts / "runs"
