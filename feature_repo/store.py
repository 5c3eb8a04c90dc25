"""Open the Feast store with absolute paths and the configured engines, and apply a data set's definitions.

``feature_store.yaml`` is the embedded default (DuckDB offline, SQLite online); ``core.backends``
switches its offline store to Spark and / or its online store to Redis by configuration.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from core.backends import Backends, spark_conf
from core.settings import Paths
from core.spec import DatasetSpec
from feature_repo.definitions import Definitions, build
from feature_repo.online_engines import online_engine

REPO_DIR = Path(__file__).resolve().parent
log = logging.getLogger("clickprompt.features")


def raw_config(paths: Paths, backends: Backends | None = None) -> dict:
    """feature_store.yaml as a dict, paths made absolute under ``paths.feast``, engines per ``backends``."""
    backends = backends or Backends.from_env()
    raw = yaml.safe_load((REPO_DIR / "feature_store.yaml").read_text(encoding="utf-8"))
    raw["registry"]["path"] = str(paths.feast_registry)
    raw["online_store"] = online_engine(paths, backends).store_config()
    if backends.offline_store == "spark":
        raw["offline_store"] = {"type": "spark", "spark_conf": spark_conf(backends)}
    return raw


def repo_config(paths: Paths, backends: Backends | None = None):
    """The RepoConfig Feast opens: ``raw_config`` with the repo path set."""
    from feast.repo_config import RepoConfig

    paths.feast.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(**raw_config(paths, backends))
    config.repo_path = REPO_DIR
    return config


def open_store(paths: Paths, backends: Backends | None = None):
    from feast import FeatureStore  # imported with the warning filters kept (feature_repo/__init__.py)

    return FeatureStore(config=repo_config(paths, backends))


def apply(spec: DatasetSpec, paths: Paths, store=None, backends: Backends | None = None) -> Definitions:
    """Register entities, views and services of ``spec`` over the snapshots in ``paths.snapshots``
    (as Spark sources when the offline store is Spark)."""
    backends = backends or Backends.from_env()
    store = store or open_store(paths, backends)
    defs = build(spec, paths.snapshots, offline_store=backends.offline_store)
    store.apply(defs.objects)
    log.info("applied %d Feast objects to %s", len(defs.objects), paths.feast_registry)
    return defs
