"""One adapter per online engine behind one interface: SQLite (the embedded default) and Redis.

An adapter owns what differs between Feast's online stores: the ``online_store`` section of the
store's configuration, the connection and its timeouts (SQLite's busy timeout, Redis's socket
timeouts), fault detection (a missing, corrupt or locked SQLite file; a Redis that does not answer),
the health probe, and the "this home's features are loaded" marker the flows check before they
materialize. ``online_engine`` is the one place that picks the adapter (by ``Backends.online_store``);
callers (the server, ``feature_repo.online``, the CLI) never branch on the engine.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import datetime

from core.backends import Backends
from core.settings import Paths

log = logging.getLogger("clickprompt.features")

MARKER_TABLE = "clickprompt_materialized"  # SQLite: set by each materialization, read by ``holds_features``


class OnlineStoreFault(RuntimeError):
    """The online store cannot answer (missing, corrupt, locked past the timeout, unreachable); the
    message names the store and why."""


class OnlineEngine:
    """The interface every online engine answers. ``timeout_ms``: how long one lookup or probe may
    wait for the store (None: the engine's own default, for batch work such as materializing)."""

    name = ""

    def __init__(self, paths: Paths, backends: Backends, timeout_ms: int | None = None) -> None:
        self.paths, self.timeout_ms = paths, timeout_ms
        self.backends = backends

    @property
    def label(self) -> str:
        """The store as messages name it (never a password)."""
        raise NotImplementedError

    def store_config(self) -> dict:
        """The ``online_store`` section of Feast's configuration for this engine."""
        raise NotImplementedError

    def public_config(self) -> dict:
        """``store_config`` without secrets, for people to read."""
        return self.store_config()

    def check(self) -> bool:
        """Before a lookup: raise ``OnlineStoreFault`` when the store is known to be gone; True when
        it was replaced since the last check (a held connection must then be dropped)."""
        return False

    def prepare(self, store) -> None:
        """Before each lookup on ``store`` (a Feast ``FeatureStore``): apply the timeouts to its connection."""

    def close(self, store) -> None:
        """Close ``store``'s connection (it may point at a broken or replaced store); never raises."""

    def probe(self, store) -> None:
        """Health: one round trip to the store; ``OnlineStoreFault`` naming it when it fails."""
        raise NotImplementedError

    def fault(self, exc: BaseException) -> OnlineStoreFault:
        """``exc`` from a lookup or probe as the fault that names this store."""
        return OnlineStoreFault(f"online store {self.label}: {type(exc).__name__}: {exc}")

    def mark_loaded(self, store, end: datetime) -> None:
        """After a materialization up to ``end``: record that this home's features are loaded."""

    def holds_features(self, store=None) -> bool:
        """Whether the store holds this home's materialized features (False when it does not answer)."""
        raise NotImplementedError

    @staticmethod
    def _online(store):
        return getattr(store._get_provider(), "online_store", None)


class SQLiteEngine(OnlineEngine):
    """Feast's SQLite online store: one file, ``paths.online_store``."""

    name = "sqlite"

    def __init__(self, paths: Paths, backends: Backends, timeout_ms: int | None = None) -> None:
        super().__init__(paths, backends, timeout_ms)
        self._file = self._file_id()
        self._timed_conn = None

    @property
    def label(self) -> str:
        return str(self.paths.online_store)

    def store_config(self) -> dict:
        return {"type": "sqlite", "path": str(self.paths.online_store)}

    def _file_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.paths.online_store)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _missing(self) -> OnlineStoreFault:
        return OnlineStoreFault(f"online store {self.paths.online_store}: the file is missing")

    def check(self) -> bool:
        """The file must be there (an open connection would go on reading a deleted file, and
        opening one would create an empty file); a replaced file means a new connection."""
        file_id = self._file_id()
        if file_id is None:
            raise self._missing()
        replaced, self._file = file_id != self._file, file_id
        return replaced

    def _conn(self, store, open_it: bool = False):
        online = self._online(store)
        if open_it and hasattr(online, "_get_conn"):
            return online._get_conn(store.config)  # Feast opens it lazily
        return getattr(online, "_conn", None)

    def prepare(self, store) -> None:
        """Every lookup, the first on a new connection too, waits at most ``timeout_ms`` for a
        writer's lock (Python's sqlite3 waits 5 s)."""
        if self.timeout_ms is None:
            return
        conn = self._conn(store, open_it=True)
        if conn is not None and self._timed_conn is not conn:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_ms)}")
            self._timed_conn = conn

    def close(self, store) -> None:
        try:
            conn = self._conn(store)
            if conn is not None:
                conn.close()
        except Exception:  # closing a broken connection may fail too; it is dropped either way
            pass

    def probe(self, store) -> None:
        """Reads the file's header and schema: a missing, corrupt or locked file fails here."""
        if self._file_id() is None:
            raise self._missing()
        try:
            self.prepare(store)
            self._conn(store, open_it=True).execute("PRAGMA schema_version").fetchone()
        except Exception as exc:
            raise self.fault(exc) from exc

    def mark_loaded(self, store, end: datetime) -> None:
        """A one-row table in the store's own file (``feast apply`` creates the file, so its being
        there does not say features were loaded; a replaced file reads as "not loaded yet")."""
        with closing(sqlite3.connect(self.paths.online_store, timeout=30)) as con, con:
            con.execute(f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (materialized_until TEXT NOT NULL)")
            con.execute(f"DELETE FROM {MARKER_TABLE}")
            con.execute(f"INSERT INTO {MARKER_TABLE} VALUES (?)", [end.isoformat()])

    def holds_features(self, store=None) -> bool:
        if not self.paths.online_store.exists():  # read-only below: never creates the file
            return False
        try:
            with closing(sqlite3.connect(f"{self.paths.online_store.resolve().as_uri()}?mode=ro", uri=True,
                                         timeout=5)) as con:
                return con.execute(f"SELECT count(*) FROM {MARKER_TABLE}").fetchone()[0] > 0
        except sqlite3.Error as exc:  # no marker table (never materialized), or a broken file: materialize
            log.info("online store %s holds no materialized features (%s)", self.label, exc)
            return False


class RedisEngine(OnlineEngine):
    """Feast's Redis online store at ``Backends.redis``; a marker key per home says it is loaded."""

    name = "redis"

    def __init__(self, paths: Paths, backends: Backends, timeout_ms: int | None = None) -> None:
        super().__init__(paths, _with_timeouts(backends, timeout_ms), timeout_ms)
        self._timed_client = None

    @property
    def label(self) -> str:
        return self.backends.online_label

    def store_config(self) -> dict:
        return {"type": "redis", "connection_string": self.backends.redis}

    def public_config(self) -> dict:
        return {"type": "redis", "connection_string": self.label.removeprefix("redis://")}  # options may hold a password

    def client(self, store):
        """The Redis client of ``store``'s online store."""
        return self._online(store)._get_client(store.config.online_store)

    def prepare(self, store) -> None:
        """With a timeout: one immediate reconnect (a Redis that restarted) and no more, so a Redis
        that is down fails within the socket timeouts (redis-py retries 3 times with backoff)."""
        if self.timeout_ms is None:
            return
        client = self.client(store)
        if self._timed_client is not client:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            client.set_retry(Retry(NoBackoff(), 1))
            self._timed_client = client

    def close(self, store) -> None:
        try:
            client = getattr(self._online(store), "_client", None)
            if client is not None:
                client.close()
        except Exception:  # a client of a Redis that went away may fail to close; it is dropped either way
            pass

    def probe(self, store) -> None:
        try:
            self.prepare(store)
            self.client(store).ping()
        except Exception as exc:
            raise self.fault(exc) from exc

    def marker(self) -> str:
        # one Redis may hold several project homes' features (Feast keys them by project); the marker
        # is per home, so a flushed or different Redis reads as "not loaded yet"
        return f"clickprompt:materialized:{self.paths.feast_registry}"

    def mark_loaded(self, store, end: datetime) -> None:
        self.client(store).set(self.marker(), end.isoformat())

    def holds_features(self, store=None) -> bool:
        from feature_repo.store import open_store

        try:
            store = store or open_store(self.paths, self.backends)
            self.prepare(store)
            return bool(self.client(store).exists(self.marker()))
        except Exception as exc:  # a Redis that does not answer: materialize (which will say why) rather than skip
            log.warning("online store %s does not answer (%s): treating it as empty", self.label, exc)
            return False


def _with_timeouts(backends: Backends, timeout_ms: int | None) -> Backends:
    """Redis answers within ``timeout_ms`` or the call fails (as SQLite's busy timeout): socket
    timeouts added to the connection string unless it sets its own."""
    if timeout_ms is None or "socket_timeout" in backends.redis:
        return backends
    seconds = timeout_ms / 1000
    return replace(backends, redis=f"{backends.redis},socket_timeout={seconds},socket_connect_timeout={seconds}")


ENGINES: dict[str, type[OnlineEngine]] = {"sqlite": SQLiteEngine, "redis": RedisEngine}


def online_engine(paths: Paths, backends: Backends | None = None, timeout_ms: int | None = None) -> OnlineEngine:
    """The adapter of the configured online engine (``backends``, default from the environment)."""
    backends = backends or Backends.from_env()
    return ENGINES[backends.online_store](paths, backends, timeout_ms)
