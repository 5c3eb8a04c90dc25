"""What the flows share: typed parameters, the project's paths, and input-keyed task caching.

Resume after a failure works through Prefect's task cache. Every task that does lasting work
has a ``cache_key_fn`` hashing what its output depends on (raw file hashes, snapshot hash,
config hash, run id) together with the project home, and persists its (JSON) result under
``<home>/.prefect/results``. A re-run with the same inputs gets the finished tasks back as
``Cached`` states without running them, and does real work only from the stage that failed.
A cached result vouches for files on disk: when those files are gone (``make clean``, a deleted
run folder), the flow passes ``refresh=True`` and the task runs again. Training stages add a
second level: the trainer's own checkpoints resume an interrupted stage mid-way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

from prefect import Task
from pydantic import AfterValidator, Field

from core.io import digest, sha256_file
from core.names import DEFAULT_DATASET  # noqa: F401 - the flows' default, re-exported
from core.settings import Paths
from core.snapshots import snapshot_hash as read_snapshot_hash

P = ParamSpec("P")
R = TypeVar("R")


# --- typed parameters ----------------------------------------------------------------------


def _known_dataset(name: str) -> str:
    from core.spec import known_datasets

    if name not in known_datasets():
        raise ValueError(f"unknown data set {name!r}; known: {known_datasets()}")
    return name


def _known_profile(name: str) -> str:
    from models.train.config import check_profile

    return check_profile(name)


def _known_stage(name: str) -> str:
    from models.train.stages import stage

    return stage(name).value


Dataset = Annotated[str, AfterValidator(_known_dataset), Field(description="data set spec in core/specs/")]
Profile = Annotated[str, AfterValidator(_known_profile), Field(description="training profile (models/train/config.py)")]
Stage = Annotated[str, AfterValidator(_known_stage), Field(description="a training stage (models/train/stages.py)")]
RunId = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="run folder name under artifacts/runs/"),
]
Backbone = Annotated[str, Field(pattern=r"^[a-z0-9_]+$", description="CTR backbone name (models/ctr/)")]


# --- paths and fingerprints ----------------------------------------------------------------


def project_paths() -> Paths:
    """The project home of this run (``CLICKPROMPT_HOME``, else the repository root)."""
    return Paths.default()


def results_dir(paths: Paths) -> Path:
    """Where cached task results live: inside the project home, so a fresh home starts clean."""
    return paths.home / ".prefect" / "results"


def file_digest(path: Path) -> str | None:
    """sha256 of one file's bytes, or None when it does not exist."""
    return sha256_file(path) if path.is_file() else None


def folder_digest(folder: Path) -> str | None:
    """Hash over the names and contents of a folder's visible files, or None when it is empty / absent."""
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        return None
    return digest([(str(p.relative_to(folder)), file_digest(p)) for p in files])


def snapshot_hash(paths: Paths) -> str | None:
    """The hash of the warehouse snapshots the feature views read, or None before the first ingest."""
    return read_snapshot_hash(paths.snapshots)


# --- caching ---------------------------------------------------------------------------------


def cached(task: Task[P, R], paths: Paths, refresh: bool = False) -> Task[P, R]:
    """``task`` persisting its result under the project home; ``refresh`` ignores a cached result.

    The tasks declare ``cache_key_fn`` and ``persist_result`` themselves; where the records are
    stored is only known at run time (the project home), hence this wrapper.
    """
    return task.with_options(result_storage=results_dir(paths), refresh_cache=refresh)


def cache_key(name: str, parameters: dict[str, Any], *inputs: Any) -> str:
    """``<name>-<hash>`` over the project home (every task takes ``paths``) and ``inputs``.

    Result files are named by the key, so it must be a plain file name.
    """
    return f"{name}-{digest(str(parameters['paths'].home), *inputs)}"


def retry_fetch(task: Task, task_run: Any, state: Any) -> bool:
    """Retry condition of the fetch tasks: a network hiccup is worth retrying, a checksum
    mismatch or an unknown name is not."""
    from ingestion.fetch import ChecksumError, NoRawFiles

    return not isinstance(state.result(raise_on_failure=False), (ChecksumError, NoRawFiles, KeyError, ValueError))
