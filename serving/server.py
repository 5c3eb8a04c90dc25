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
from datetime import datetime, timezone
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from core.settings import Paths
from serving import requests as request_bodies
from serving.bodies import MAX_BODY_BYTES, BatchPrediction, BodyLimit, Prediction
from serving.online_features import FeaturesUnavailable, OnlineFeatures
from serving.registry import DEFAULT_NAME, NoProductionModelError, Registry
from serving.requests import MAX_BATCH, BatchRequest, PredictRequest  # noqa: F401  (MAX_BATCH: the limit)
from serving.scoring import LoadedModel, load_model, score_frame
from serving.timing import NO_LAPS, ServerTiming

log = logging.getLogger("clickprompt.serving")

RETRY_SECONDS = 1.0  # without a model, how often a request may try to load one


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
                    self.last_error = str(NoProductionModelError.of(self.name, self.registry.uri))
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
        ``online_store``). The online store is probed by its engine and with one lookup."""
        lm = self.refresh()
        online = "no model to probe it for" if lm is None else self.features.probe(lm.feature_service, lm.keys)
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


# --- the app --------------------------------------------------------------------------------------


def create_app(paths: Paths | None = None, name: str = DEFAULT_NAME, registry: Registry | None = None,
               predictor: Predictor | None = None, poll_seconds: float = 5.0) -> FastAPI:
    """The serving app of ``paths``' production model ``name`` (the model loads now, if there is one)."""
    paths = paths or Paths.default()
    predictor = predictor or Predictor(paths, name, registry, poll_seconds=poll_seconds)
    if predictor.model is None:  # the server still starts (a promotion is picked up later): say why it has none
        log.warning("no model to serve yet (/health answers 503 until one is promoted): %s", predictor.last_error)
    # FastAPI's /docs and /redoc pages load their scripts from a CDN; these serve bundled copies (offline hosts)
    app = FastAPIOffline(title="clickprompt serving", description=__doc__.splitlines()[0], version="1")
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
        registry = Registry(paths, db_path=Path(root) / "mlruns.db", artifacts_root=Path(root) / "artifacts")
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
