"""What the command groups share."""

from __future__ import annotations

import json

from core.names import DEFAULT_DATASET
from core.settings import Paths


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def spec_of(paths: Paths, name: str | None):
    """The spec named, or the one of the data set the warehouse holds (default: the embedded one)."""
    from core.spec import load_spec
    from ingestion.warehouse import warehouse_dataset

    return load_spec(name or warehouse_dataset(paths.warehouse) or DEFAULT_DATASET)
