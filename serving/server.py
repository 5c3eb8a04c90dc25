"""Online serving of the registry's production model: ``create_app(paths)`` and ``clickprompt serve``.

    POST /predict        {"user_id": 196, "item_id": 242}
                         -> {"click_probability", "model_version", "feature_timestamps": {view: iso},
                             "unknown": {"user": bool, "item": bool}, ...}
    POST /predict/batch  {"requests": [{"user_id": .., "item_id": ..}, ...]}  (one model version for all)
    GET  /health         the model version loaded (503 while there is none)

Features come from Feast's ONLINE store through the model's feature service (``ctr_v1`` for a
CTR-only model: ID features, no language model), and are scored by ``serving.scoring.score_frame``
- the same function batch scoring uses on the offline store's point-in-time rows.

An unknown user or item (not in the model's vocabulary, with or without features in the store)
is scored through the out-of-vocabulary embeddings and flagged in ``unknown``.

Promotions are picked up without a restart: each request stats the registry file (microseconds);
when it changed, or every ``poll_seconds``, the production version is read; a new version is
loaded beside the old one and swapped in with one reference assignment, so a request uses exactly
one model from start to end. A version that fails to load is logged and the old one keeps serving.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from core.backends import Backends
from core.settings import Paths
from serving import requests as request_bodies
from serving.registry import DEFAULT_NAME, Registry
from serving.requests import MAX_BATCH, BatchRequest, PredictRequest  # noqa: F401  (MAX_BATCH: the limit)
from serving.scoring import LoadedModel, NoProductionModelError, load_model, score_frame
from serving.timing import NO_LAPS, ServerTiming

log = logging.getLogger("clickprompt.serving")

MAX_BODY_BYTES = 256 * 1024  # a full batch is ~40 KB (more: 413 naming the limit)
RETRY_SECONDS = 1.0  # without a model, how often a request may try to load one


# --- response bodies (requests: serving.requests) -------------------------------------------------


class Unknown(BaseModel):
    user: bool  # the user id is outside the model's vocabulary: scored with the OOV embedding
    item: bool


class Prediction(BaseModel):
    user_id: int
    item_id: int
    click_probability: float
    model_name: str
    model_version: int
    feature_timestamps: dict[str, str | None]  # feature view -> event time of the version served (None: no row)
    unknown: Unknown


class BatchPrediction(BaseModel):
    model_name: str
    model_version: int
    predictions: list[Prediction]


# --- online features ------------------------------------------------------------------------------


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
        self.backends = _with_timeouts(backends or Backends.from_env(), busy_ms)
        self.sqlite = self.backends.online_store == "sqlite"
        self.label = str(paths.online_store) if self.sqlite else self.backends.online_label
        self._lock = threading.Lock()
        self._services: dict[str, tuple[Any, dict[str, str]]] = {}
        self.last_error: str | None = None
        self._retry_at = 0.0
        self._online_file = self._file_id()
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
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"
        self._retry_at = time.monotonic() + self.retry_seconds
        raise FeaturesUnavailable(self.last_error) from exc

    def _file_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.paths.online_store)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _call(self, what: str, fn, online: bool = False):
        """``fn(store)`` under the lock; a failure reopens the store on the next try. ``online``:
        first check the SQLite file is there (an open connection would go on reading a deleted
        file, and reopening would create an empty one) and reopen if it was replaced."""
        with self._lock:
            if online and self.sqlite:
                file_id = self._file_id()
                if file_id is None:
                    self.last_error = f"online store {self.paths.online_store}: the file is missing"
                    raise FeaturesUnavailable(self.last_error)
                if file_id != self._online_file:
                    self._drop()
                    self._online_file = file_id
            if self.store is None or self.last_error is not None:
                if time.monotonic() < self._retry_at:
                    raise FeaturesUnavailable(self.last_error or "the online store is not open")
                self._open()
            try:
                out = fn(self.store)
            except Exception as exc:
                self._drop()  # its SQLite connection may point at a replaced or broken file
                self._failed(what, exc)
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
            self._short_busy_timeout(store)
            raw = store.get_online_features(features=fs, entity_rows=entity_rows).to_dict(
                include_event_timestamps=True)
            return raw, views

        raw, views = self._call(f"online store {self.label}", lookup, online=True)
        stamps = [
            {view: _iso(raw[f"{feature}__ts"][r]) for view, feature in views.items()} for r in range(len(pairs))
        ]
        return {k: v for k, v in raw.items() if not k.endswith("__ts")}, stamps

    @staticmethod
    def _sqlite_conn(store, open_it: bool = False):
        """The SQLite connection of Feast's online store (None for another store type)."""
        online = getattr(store._get_provider(), "online_store", None)
        if open_it and hasattr(online, "_get_conn"):
            return online._get_conn(store.config)  # Feast opens it lazily
        return getattr(online, "_conn", None)

    def _short_busy_timeout(self, store) -> None:
        """Every lookup, the first on a new connection too, waits at most ``busy_ms`` for a
        writer's lock (Python's sqlite3 waits 5 s)."""
        conn = self._sqlite_conn(store, open_it=True)
        if conn is not None and getattr(self, "_timed_conn", None) is not conn:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_ms)}")
            self._timed_conn = conn

    def _drop(self) -> None:
        """Forget the store (and close its connection: it may hold a deleted or broken file)."""
        if self.store is not None:
            try:
                conn = self._sqlite_conn(self.store)
                if conn is not None:
                    conn.close()
            except Exception:  # closing a broken connection may fail too; it is dropped either way
                pass
        self.store, self._services = None, {}

    def forget_services(self) -> None:
        """Read feature services from Feast's registry again (after ``feast apply`` changed one)."""
        with self._lock:
            self._services = {}


def _with_timeouts(backends: Backends, busy_ms: int) -> Backends:
    """Redis answers a lookup within ``busy_ms`` or the lookup fails (as SQLite's busy timeout):
    socket timeouts added to the connection string unless it sets its own."""
    if backends.online_store != "redis" or "socket_timeout" in backends.redis:
        return backends
    seconds = busy_ms / 1000
    return replace(backends, redis=f"{backends.redis},socket_timeout={seconds},socket_connect_timeout={seconds}")


def _iso(seconds) -> str | None:
    if not seconds:  # Feast reports 0 for an entity without a row in the view
        return None
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).isoformat()


# --- the production model, hot-swapped ------------------------------------------------------------


class Predictor:
    """Scores user-item pairs with the production version of ``name``; the HTTP app and
    ``clickprompt predict`` both call ``predict``."""

    def __init__(self, paths: Paths, name: str = DEFAULT_NAME, registry: Registry | None = None,
                 features: OnlineFeatures | None = None, poll_seconds: float = 5.0, device: str = "cpu") -> None:
        self.paths, self.name, self.device, self.poll_seconds = paths, name, device, poll_seconds
        base = registry or Registry(paths)
        # the server never waits long for the registry file: another process may hold it briefly
        self.registry = Registry(base.paths, base.db_path, base.root, lock_timeout=0.25)
        self.features = features or OnlineFeatures(paths)
        self._model: LoadedModel | None = None
        self._loaded_at: str | None = None
        self._token: tuple | None = None
        self._checked = -math.inf
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.refresh(force=True)
        if self._model is not None:  # Feast's first lookup initialises its provider (~0.25 s): pay it now
            try:
                self.features.rows(self._model.feature_service, [(0, 0)], self._model.keys)
            except FeaturesUnavailable:
                pass  # /health and /predict report it

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def refresh_due(self) -> bool:
        """With a model: the registry file changed, or a poll is due; without one (none promoted
        yet, or the last load failed): at most once per RETRY_SECONDS. A few stat calls."""
        wait = self.poll_seconds if self._model is not None else RETRY_SECONDS
        if time.monotonic() - self._checked >= wait:
            return True
        return self._model is not None and self.registry.change_token() != self._token

    def refresh(self, force: bool = False) -> LoadedModel | None:
        """The current model, after loading a newly promoted version if the registry changed."""
        if not force and not self.refresh_due():
            return self._model
        # one request checks; the others go on with the model they have (none waits unless none is loaded)
        if not self._lock.acquire(blocking=force or self._model is None):
            return self._model
        token = self.registry.change_token()  # before reading: a change after this is seen next time
        try:
            version = self.registry.production_version(self.name)
            self._token, self._checked = token, time.monotonic()
            current = self._model
            if version is None:
                if current is None:
                    self.last_error = f"no production version of model {self.name!r} in {self.registry.db_path}"
            elif current is None or current.version != version:
                loaded = load_model(self.registry.get(version, self.name), self.paths, self.device)
                self._check_features(loaded)
                self._model, self._loaded_at = loaded, datetime.now(timezone.utc).isoformat(timespec="seconds")
                self.last_error = None
                log.info("serving %s v%d (%s, service %s)%s", self.name, version, loaded.training_stage,
                         loaded.feature_service, f", replacing v{current.version}" if current else "")
            else:
                self.last_error = None  # production is what we serve (e.g. after a failed version was rolled back)
        except Exception as exc:  # keep serving what we have; try again at the next change or poll
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._token, self._checked = token, time.monotonic()
            log.error("registry refresh for %s failed (still serving %s): %s", self.name,
                      f"v{self._model.version}" if self._model else "nothing", self.last_error)
        finally:
            self._lock.release()
        return self._model

    def _check_features(self, lm: LoadedModel) -> None:
        have = self.features.feature_names(lm.feature_service) | set(lm.keys)
        missing = sorted(set(lm.input_columns) - have)
        if missing:
            self.features.forget_services()  # the next try reads the service again (after a `feast apply`)
            raise ValueError(f"feature service {lm.feature_service} lacks {missing} that {lm.name} v{lm.version} needs")

    def health(self) -> dict:
        """``status``: ``ok``; ``degraded`` (the last good model serves, the registry or a new
        version failed: ``last_error``); ``unavailable`` (no model, or the online store fails:
        ``online_store``). The online store is probed with one lookup."""
        lm = self.refresh()
        online = "no model to probe it for"
        if lm is not None:
            try:
                self.features.rows(lm.feature_service, [(0, 0)], lm.keys)
                online = "ok"
            except FeaturesUnavailable as exc:
                online = str(exc)
        status = "unavailable" if lm is None or online != "ok" else "degraded" if self.last_error else "ok"
        return {
            "status": status,
            "model_name": self.name,
            "model_version": lm.version if lm else None,
            "training_stage": lm.training_stage if lm else None,
            "feature_service": lm.feature_service if lm else None,
            "loaded_at": self._loaded_at,
            "last_error": self.last_error,
            "online_store": online,
        }

    def predict(self, pairs: list[tuple[int, int]], laps=NO_LAPS, refresh: bool = True) -> tuple[LoadedModel, list[dict]]:
        """Scores of ``pairs`` by one model version (``refresh=False``: the one held now; the
        coroutine handlers refresh in a thread first, so nothing slow runs on the event loop)."""
        lm = self.refresh() if refresh else self._model
        laps.lap("registry")
        if lm is None:
            raise NoProductionModelError(self.last_error or f"no production version of model {self.name!r}")
        frame, stamps = self.features.rows(lm.feature_service, pairs, lm.keys)
        laps.lap("online")
        scores = score_frame(lm, frame, laps=laps)
        out = [
            {
                "user_id": int(u),
                "item_id": int(i),
                "click_probability": float(scores.probability[r]),
                "model_name": lm.name,
                "model_version": lm.version,
                "feature_timestamps": stamps[r],
                "unknown": {"user": bool(scores.unknown_user[r]), "item": bool(scores.unknown_item[r])},
            }
            for r, (u, i) in enumerate(pairs)
        ]
        laps.lap("response")
        return lm, out


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 naming the limit, by its
    Content-Length or, for a chunked body, as soon as the chunks pass it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self, size: str) -> JSONResponse:
        return JSONResponse(status_code=413, content={
            "detail": f"request body of {size} bytes exceeds the limit of {self.max_bytes} bytes"})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(length.decode())(scope, receive, send)
            return
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI passes an HTTPException raised while reading on
                raise HTTPException(413, f"request body of more than {self.max_bytes} bytes exceeds the limit "
                                         f"of {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)


# --- the app --------------------------------------------------------------------------------------


def create_app(paths: Paths | None = None, name: str = DEFAULT_NAME, registry: Registry | None = None,
               predictor: Predictor | None = None, poll_seconds: float = 5.0) -> FastAPI:
    """The serving app of ``paths``' production model ``name`` (the model loads now, if there is one)."""
    paths = paths or Paths.default()
    predictor = predictor or Predictor(paths, name, registry, poll_seconds=poll_seconds)
    app = FastAPI(title="clickprompt serving", description=__doc__.splitlines()[0], version="1")
    app.state.predictor = predictor
    request_bodies.install(app)  # a bad body: 422 with a bounded, JSON-safe excerpt (never a 500)

    def unavailable(exc: Exception) -> JSONResponse:
        reason = "online_store" if isinstance(exc, FeaturesUnavailable) else "model"
        return JSONResponse(status_code=503, content={"detail": str(exc), "reason": reason})

    @app.get("/health")
    def health():
        body = predictor.health()
        return JSONResponse(status_code=503 if body["status"] == "unavailable" else 200, content=body)

    # The predict handlers are coroutines: a request's work is ~1 ms of CPU with nothing to wait
    # for, so it runs on the event loop (no thread hop per request; measured in the serving
    # benchmark). Loading a new version is the one slow step: it runs in a worker thread, and the
    # requests that arrive meanwhile go on with the version they have.
    async def refreshed() -> None:
        if predictor.refresh_due():
            await run_in_threadpool(predictor.refresh)

    @app.post("/predict", response_model=Prediction)
    async def predict(request: PredictRequest, http: Request):
        laps = http.state.laps
        laps.lap("parse")
        await refreshed()
        try:
            _, rows = predictor.predict([(request.user_id, request.item_id)], laps, refresh=False)
        except (NoProductionModelError, FeaturesUnavailable) as exc:
            return unavailable(exc)
        return JSONResponse(rows[0])  # built to the schema here: no second validation pass

    @app.post("/predict/batch", response_model=BatchPrediction)
    async def predict_batch(request: BatchRequest, http: Request):
        laps = http.state.laps
        laps.lap("parse")
        await refreshed()
        try:
            lm, rows = predictor.predict([(r.user_id, r.item_id) for r in request.requests], laps, refresh=False)
        except (NoProductionModelError, FeaturesUnavailable) as exc:
            return unavailable(exc)
        return JSONResponse({"model_name": lm.name, "model_version": lm.version, "predictions": rows})

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(ServerTiming)

    return app


def app_from_env() -> FastAPI:
    """The app each uvicorn worker builds (``serve``): home, model name, poll interval and an
    optional registry folder from the environment ``serve`` sets before it starts them."""
    paths = Paths.default()
    registry = None
    if root := os.environ.get("CLICKPROMPT_SERVE_REGISTRY"):
        registry = Registry(paths, db_path=Path(root) / "registry.duckdb", artifacts_root=Path(root) / "artifacts")
    return create_app(paths, os.environ.get("CLICKPROMPT_SERVE_MODEL", DEFAULT_NAME), registry,
                      poll_seconds=float(os.environ.get("CLICKPROMPT_SERVE_POLL", "5")))


def serve(paths: Paths, host: str = "127.0.0.1", port: int = 8000, name: str = DEFAULT_NAME,
          poll_seconds: float = 5.0, access_log: bool = False, workers: int = 2,
          registry_dir: Path | None = None, log_level: str = "info") -> None:
    """Run the app under uvicorn (blocking): ``workers`` processes share the port, each with its
    own model and online-store connection; a promotion reaches each on its next request."""
    import uvicorn

    os.environ.update(CLICKPROMPT_HOME=str(paths.home), CLICKPROMPT_SERVE_MODEL=name,
                      CLICKPROMPT_SERVE_POLL=str(poll_seconds))
    if registry_dir is not None:
        os.environ["CLICKPROMPT_SERVE_REGISTRY"] = str(registry_dir)
    uvicorn.run("serving.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=access_log)
