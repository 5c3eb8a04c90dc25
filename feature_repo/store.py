"""Open the Feast store with absolute paths, and apply the definitions of a data set."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from core.settings import Paths
from core.spec import DatasetSpec
from feature_repo.definitions import Definitions, build

REPO_DIR = Path(__file__).resolve().parent
log = logging.getLogger("clickprompt.features")


def repo_config(paths: Paths):
    """feature_store.yaml with the registry and online store moved under ``paths.feast``."""
    from feast.repo_config import RepoConfig

    raw = yaml.safe_load((REPO_DIR / "feature_store.yaml").read_text(encoding="utf-8"))
    paths.feast.mkdir(parents=True, exist_ok=True)
    raw["registry"]["path"] = str(paths.feast_registry)
    raw["online_store"]["path"] = str(paths.online_store)
    config = RepoConfig(**raw)
    config.repo_path = REPO_DIR
    return config


def open_store(paths: Paths):
    from feast import FeatureStore

    return FeatureStore(config=repo_config(paths))


def apply(spec: DatasetSpec, paths: Paths, store=None) -> Definitions:
    """Register entities, views and services of ``spec`` over the snapshots in ``paths.snapshots``."""
    store = store or open_store(paths)
    defs = build(spec, paths.snapshots)
    store.apply(defs.objects)
    log.info("applied %d Feast objects to %s", len(defs.objects), paths.feast_registry)
    return defs
