"""What the command groups share."""

from __future__ import annotations

import json

from core.names import DEFAULT_DATASET
from core.settings import Paths


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def prefect_home_ready() -> None:
    """Create the project's Prefect home before a flow starts its temporary server (Prefect creates
    only the last level of the folder)."""
    from prefect.settings import PREFECT_HOME

    PREFECT_HOME.value().mkdir(parents=True, exist_ok=True)


def spec_of(paths: Paths, name: str | None):
    """The spec named, or the one of the data set the warehouse holds (default: the embedded one)."""
    from core.spec import load_spec
    from ingestion.warehouse import warehouse_dataset

    return load_spec(name or warehouse_dataset(paths.warehouse) or DEFAULT_DATASET)


def dataset_of(paths: Paths, name: str | None) -> str:
    """The data set named, or the one the warehouse holds (default: the embedded one)."""
    from ingestion.warehouse import warehouse_dataset

    return name or warehouse_dataset(paths.warehouse) or DEFAULT_DATASET
