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
import threading
import time
from datetime import datetime, timezone
from typing import Annotated, Any

import pandas as pd
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from core.settings import Paths
from serving.registry import DEFAULT_NAME, Registry
from serving.scoring import LoadedModel, NoProductionModelError, load_model, score_frame

log = logging.getLogger("clickprompt.serving")

MAX_BATCH = 1000
EntityId = Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]


# --- request / response bodies --------------------------------------------------------------------


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: EntityId
    item_id: EntityId


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[PredictRequest] = Field(min_length=1, max_length=MAX_BATCH)


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


class OnlineFeatures:
    """Feast online lookups (SQLite); one lookup at a time, as Feast shares one SQLite connection."""

    def __init__(self, paths: Paths, store=None) -> None:
        from feature_repo.store import open_store

        self.store = store or open_store(paths)
        self._lock = threading.Lock()
        self._services: dict[str, tuple[Any, dict[str, str]]] = {}

    def _service(self, name: str) -> tuple[Any, dict[str, str]]:
        if name not in self._services:
            fs = self.store.get_feature_service(name)
            # the first feature of each view stands for the view's event timestamp
            views = {p.name_to_use(): p.features[0].name for p in fs.feature_view_projections if p.features}
            self._services[name] = (fs, views)
        return self._services[name]

    def feature_names(self, service: str) -> set[str]:
        fs, _ = self._service(service)
        return {f.name for p in fs.feature_view_projections for f in p.features}

    def rows(self, service: str, pairs: list[tuple[int, int]], keys: tuple[str, str]) -> tuple[pd.DataFrame, list[dict]]:
        """Feature rows (entity keys + the service's features) and, per row, {view: ISO event time}."""
        fs, views = self._service(service)
        entity_rows = [{keys[0]: u, keys[1]: i} for u, i in pairs]
        with self._lock:
            raw = self.store.get_online_features(features=fs, entity_rows=entity_rows).to_dict(
                include_event_timestamps=True)
        stamps = [
            {view: _iso(raw[f"{feature}__ts"][r]) for view, feature in views.items()} for r in range(len(pairs))
        ]
        frame = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in raw.items() if not k.endswith("__ts")})
        return frame, stamps


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

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def refresh(self, force: bool = False) -> LoadedModel | None:
        """The current model, after loading a newly promoted version if the registry changed."""
        now = time.monotonic()
        if not force and now - self._checked < self.poll_seconds and self.registry.change_token() == self._token:
            return self._model
        # one request checks; the others go on with the model they have (none waits unless none is loaded)
        if not self._lock.acquire(blocking=force or self._model is None):
            return self._model
        try:
            token = self.registry.change_token()  # before reading: a change after this is seen next time
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
        except Exception as exc:  # keep serving what we have; try again at the next poll
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._checked = time.monotonic()
            log.error("registry refresh for %s failed (still serving %s): %s", self.name,
                      f"v{self._model.version}" if self._model else "nothing", self.last_error)
        finally:
            self._lock.release()
        return self._model

    def _check_features(self, lm: LoadedModel) -> None:
        have = self.features.feature_names(lm.feature_service) | set(lm.keys)
        missing = sorted(set(lm.input_columns) - have)
        if missing:
            raise ValueError(f"feature service {lm.feature_service} lacks {missing} that {lm.name} v{lm.version} needs")

    def health(self) -> dict:
        lm = self.refresh()
        return {
            "status": "ok" if lm else "no model",
            "model_name": self.name,
            "model_version": lm.version if lm else None,
            "training_stage": lm.training_stage if lm else None,
            "feature_service": lm.feature_service if lm else None,
            "loaded_at": self._loaded_at,
            "last_error": self.last_error,
        }

    def predict(self, pairs: list[tuple[int, int]]) -> tuple[LoadedModel, list[dict]]:
        lm = self.refresh()
        if lm is None:
            raise NoProductionModelError(self.last_error or f"no production version of model {self.name!r}")
        frame, stamps = self.features.rows(lm.feature_service, pairs, lm.keys)
        scores = score_frame(lm, frame)
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
        return lm, out


# --- the app --------------------------------------------------------------------------------------


def create_app(paths: Paths | None = None, name: str = DEFAULT_NAME, registry: Registry | None = None,
               predictor: Predictor | None = None, poll_seconds: float = 5.0) -> FastAPI:
    """The serving app of ``paths``' production model ``name`` (the model loads now, if there is one)."""
    paths = paths or Paths.default()
    predictor = predictor or Predictor(paths, name, registry, poll_seconds=poll_seconds)
    app = FastAPI(title="clickprompt serving", description=__doc__.splitlines()[0], version="1")
    app.state.predictor = predictor

    def unavailable(exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.get("/health")
    def health():
        body = predictor.health()
        return JSONResponse(status_code=200 if body["model_version"] is not None else 503, content=body)

    @app.post("/predict", response_model=Prediction)
    def predict(request: PredictRequest):
        try:
            _, rows = predictor.predict([(request.user_id, request.item_id)])
        except NoProductionModelError as exc:
            return unavailable(exc)
        return rows[0]

    @app.post("/predict/batch", response_model=BatchPrediction)
    def predict_batch(request: BatchRequest):
        try:
            lm, rows = predictor.predict([(r.user_id, r.item_id) for r in request.requests])
        except NoProductionModelError as exc:
            return unavailable(exc)
        return {"model_name": lm.name, "model_version": lm.version, "predictions": rows}

    return app


def serve(paths: Paths, host: str = "127.0.0.1", port: int = 8000, name: str = DEFAULT_NAME,
          poll_seconds: float = 5.0, access_log: bool = False) -> None:
    """Run the app under uvicorn (one process; blocking)."""
    import uvicorn

    app = create_app(paths, name, poll_seconds=poll_seconds)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log)
