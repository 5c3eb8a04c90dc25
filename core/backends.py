"""Which engines run the feature store, the flows' independent tasks and training.

The embedded default is one machine: DuckDB as Feast's offline store, SQLite as its online store,
Prefect's thread-pool task runner, one training process. Each can be switched, by configuration
only, to an existing engine that scales past one machine:

==============================  =====================  ===============================================
environment variable            default                other values
==============================  =====================  ===============================================
``CLICKPROMPT_OFFLINE_STORE``   ``duckdb``             ``spark``: Feast's Spark offline store
``CLICKPROMPT_SPARK_MASTER``    ``local[2]``           ``spark://host:7077``, ``yarn``, ...
``CLICKPROMPT_ONLINE_STORE``    ``sqlite``             ``redis``: Feast's Redis online store
``CLICKPROMPT_REDIS``           ``127.0.0.1:6379``     a Feast connection string (``host:port,db=0``)
``CLICKPROMPT_TASK_RUNNER``     ``local``              ``dask`` (a local cluster) / ``dask://host:8786``
``CLICKPROMPT_DASK_WORKERS``    ``2``                  worker processes of a local Dask cluster
==============================  =====================  ===============================================

Training past one process is torchrun's job (``torchrun --nproc-per-node N -m cli train ...``);
``models.train.distributed`` reads torchrun's own variables, so it has no setting here.
The engines are optional extras (``pip install -e '.[spark,redis,dask]'``); see the README.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Mapping

OFFLINE_STORES = ("duckdb", "spark")
ONLINE_STORES = ("sqlite", "redis")


class BackendError(ValueError):
    """A backend setting names an unknown engine, or its engine is not installed."""


@dataclass(frozen=True)
class Backends:
    offline_store: str = "duckdb"
    spark_master: str = "local[2]"
    online_store: str = "sqlite"
    redis: str = "127.0.0.1:6379"
    task_runner: str = "local"  # local | dask | dask://<scheduler address>
    dask_workers: int = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Backends":
        env = os.environ if env is None else env
        d = cls()
        b = cls(
            offline_store=env.get("CLICKPROMPT_OFFLINE_STORE", d.offline_store).strip().lower(),
            spark_master=env.get("CLICKPROMPT_SPARK_MASTER", d.spark_master).strip(),
            online_store=env.get("CLICKPROMPT_ONLINE_STORE", d.online_store).strip().lower(),
            redis=env.get("CLICKPROMPT_REDIS", d.redis).strip(),
            task_runner=env.get("CLICKPROMPT_TASK_RUNNER", d.task_runner).strip(),
            dask_workers=_int(env, "CLICKPROMPT_DASK_WORKERS", d.dask_workers),
        )
        b.check()
        return b

    def check(self) -> None:
        if self.offline_store not in OFFLINE_STORES:
            raise BackendError(f"CLICKPROMPT_OFFLINE_STORE={self.offline_store!r}: expected one of {list(OFFLINE_STORES)}")
        if self.online_store not in ONLINE_STORES:
            raise BackendError(f"CLICKPROMPT_ONLINE_STORE={self.online_store!r}: expected one of {list(ONLINE_STORES)}")
        if not (self.task_runner in ("local", "dask") or self.task_runner.startswith(("dask://", "tcp://"))):
            raise BackendError(f"CLICKPROMPT_TASK_RUNNER={self.task_runner!r}: expected 'local', 'dask' "
                               "(a local Dask cluster) or 'dask://host:port' (a running scheduler)")
        if self.dask_workers < 1:
            raise BackendError(f"CLICKPROMPT_DASK_WORKERS={self.dask_workers}: expected at least 1")
        if self.online_store == "redis" and not self.redis:
            raise BackendError("CLICKPROMPT_REDIS is empty: expected host:port")

    @property
    def feature_store(self) -> dict[str, str]:
        """What the Feast side depends on (part of the feature tasks' cache keys)."""
        out = {"offline_store": self.offline_store, "online_store": self.online_store}
        if self.offline_store == "spark":
            out["spark_master"] = self.spark_master
        if self.online_store == "redis":
            out["redis"] = self.redis
        return out

    @property
    def online_label(self) -> str:
        """The online store as people name it in messages: Redis's host:port only (the connection
        string's options may hold a password)."""
        if self.online_store != "redis":
            return "sqlite"
        return "redis://" + ",".join(part for part in self.redis.split(",") if "=" not in part)

    def to_dict(self) -> dict:
        return asdict(self)


# Spark for a point-in-time join of a few million rows on one host; a cluster's own settings
# (spark-defaults.conf, the master's) apply to what is not set here.
SPARK_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def spark_conf(backends: Backends) -> dict[str, str]:
    """The Spark session's settings (Feast's ``spark_conf``; ``spark_session`` uses the same)."""
    return {"spark.master": backends.spark_master, **SPARK_CONF}


def spark_session(backends: Backends):
    """The process's Spark session, started with ``spark_conf`` if none is active (Feast's Spark
    offline store then finds and shares it)."""
    try:
        from pyspark import SparkConf
        from pyspark.sql import SparkSession
    except ImportError:
        raise BackendError("CLICKPROMPT_OFFLINE_STORE=spark needs pyspark and Java 17+: "
                           "pip install -e '.[spark]' (README: Engines past one machine)") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    return SparkSession.builder.config(conf=SparkConf().setAll(list(spark_conf(backends).items()))).getOrCreate()


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise BackendError(f"{key}={raw!r}: expected an integer") from None


def offline_spark(backends: Backends | None = None):
    """The Spark session when the offline store is Spark (what renders the text view there), else None."""
    backends = backends or Backends.from_env()
    return spark_session(backends) if backends.offline_store == "spark" else None
