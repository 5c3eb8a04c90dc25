"""The server's online feature lookups: Feast's online store through the configured engine's adapter
(``feature_repo.online_engines``), one lookup at a time, failing fast and mending itself."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Any

from core.backends import Backends
from core.settings import Paths
from feature_repo.online_engines import OnlineStoreFault, online_engine


class FeaturesUnavailable(RuntimeError):
    """The online store or Feast's registry cannot answer now; the message says which and why."""


class OnlineFeatures:
    """Feast online lookups (SQLite by default, Redis when configured); one lookup at a time, as
    Feast shares one SQLite connection (and one Redis client).

    A failed lookup (the store file missing, corrupt or locked past ``busy_ms``; Redis down or
    slower than ``busy_ms``; Feast's registry unreadable) raises ``FeaturesUnavailable`` naming the
    store, and the next attempt, at most every ``retry_seconds``, opens the store afresh: the server
    mends itself when the store is mended.
    """

    def __init__(self, paths: Paths, store=None, retry_seconds: float = 1.0, busy_ms: int = 250,
                 backends: Backends | None = None) -> None:
        self.paths, self.retry_seconds, self.busy_ms = paths, retry_seconds, busy_ms
        self.engine = online_engine(paths, backends, timeout_ms=busy_ms)
        self.backends, self.label = self.engine.backends, self.engine.label
        self._lock = threading.Lock()
        self._services: dict[str, tuple[Any, dict[str, str]]] = {}
        self.last_error: str | None = None
        self._retry_at = 0.0
        self.store = store
        if store is None:
            with self._lock:
                try:
                    self._open()
                except FeaturesUnavailable:
                    pass  # the app starts anyway: /health and /predict say why until the store is mended

    def _open(self) -> None:
        from feature_repo.store import open_store

        self._drop()
        try:
            self.store = open_store(self.paths, self.backends)
        except Exception as exc:
            self._failed(f"Feast feature store of {self.paths.feast} cannot be opened", exc)

    def _failed(self, what: str, exc: Exception):
        self.last_error = str(exc) if isinstance(exc, OnlineStoreFault) else f"{what}: {type(exc).__name__}: {exc}"
        self._retry_at = time.monotonic() + self.retry_seconds
        raise FeaturesUnavailable(self.last_error) from exc

    def _call(self, what: str, fn, online: bool = False):
        """``fn(store)`` under the lock; a failure reopens the store on the next try. ``online``:
        first the engine checks the store is there (and drops a connection to a replaced one)."""
        with self._lock:
            if online:
                try:
                    if self.engine.check():
                        self._drop()
                except OnlineStoreFault as exc:
                    self.last_error = str(exc)
                    raise FeaturesUnavailable(self.last_error) from exc
            if self.store is None or self.last_error is not None:
                if time.monotonic() < self._retry_at:
                    raise FeaturesUnavailable(self.last_error or "the online store is not open")
                self._open()
            try:
                out = fn(self.store)
            except Exception as exc:
                self._drop()  # its connection may point at a replaced or broken store
                self._failed(what, exc)  # an OnlineStoreFault already names the store
            self.last_error = None
            return out

    def _service(self, store, name: str) -> tuple[Any, dict[str, str]]:
        if name not in self._services:
            fs = store.get_feature_service(name)
            # the first feature of each view stands for the view's event timestamp
            views = {p.name_to_use(): p.features[0].name for p in fs.feature_view_projections if p.features}
            self._services[name] = (fs, views)
        return self._services[name]

    def feature_names(self, service: str) -> set[str]:
        def names(store):
            fs, _ = self._service(store, service)
            return {f.name for p in fs.feature_view_projections for f in p.features}
        return self._call(f"feature service {service!r} of Feast's registry {self.paths.feast}", names)

    def rows(self, service: str, pairs: list[tuple[int, int]], keys: tuple[str, str]) -> tuple[dict[str, list], list[dict]]:
        """Feature rows as {column: list} (entity keys + the service's features) and, per row,
        {view: ISO event time}."""
        entity_rows = [{keys[0]: u, keys[1]: i} for u, i in pairs]

        def lookup(store):
            fs, views = self._service(store, service)
            self.engine.prepare(store)
            raw = store.get_online_features(features=fs, entity_rows=entity_rows).to_dict(
                include_event_timestamps=True)
            return raw, views

        raw, views = self._call(f"online store {self.label}", lookup, online=True)
        stamps = [
            {view: _iso(raw[f"{feature}__ts"][r]) for view, feature in views.items()} for r in range(len(pairs))
        ]
        return {k: v for k, v in raw.items() if not k.endswith("__ts")}, stamps

    def probe(self, service: str, keys: tuple[str, str]) -> str:
        """The health probe: ``ok``, or why the online store cannot answer. The engine's own probe
        (SQLite reads the file, Redis answers a ping), then one lookup through ``service``."""
        try:
            self._call(f"online store {self.label}", self.engine.probe, online=True)
            self.rows(service, [(0, 0)], keys)
        except FeaturesUnavailable as exc:
            return str(exc)
        return "ok"

    def _drop(self) -> None:
        """Forget the store (and close its connection: it may hold a deleted or broken file)."""
        if self.store is not None:
            self.engine.close(self.store)
        self.store, self._services = None, {}

    def forget_services(self) -> None:
        """Read feature services from Feast's registry again (after ``feast apply`` changed one)."""
        with self._lock:
            self._services = {}


def _iso(seconds) -> str | None:
    if not seconds:  # Feast reports 0 for an entity without a row in the view
        return None
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).isoformat()
