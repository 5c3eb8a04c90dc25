"""Scoring with a registered model: the ONE feature-rows -> tensors -> probability path, and as-of batch scoring.

``score_frame`` is what both the online server (``serving.server``, features from Feast's
online store) and batch scoring (``score_entities``, point-in-time features from Feast's offline
store) call, so the two cannot drift apart: the same value normalisation, the same encoder, the
same batching and forward pass as the trainer's evaluation (``models.train.trainer.predict``).

Batch scoring (``clickprompt score --input entities.parquet --output scores.parquet``) takes rows
of (user_id, item_id, event_timestamp) and scores each with the feature versions valid at its
timestamp - what the model would have seen had it been asked then. The output holds the input
rows unchanged plus ``click_probability`` and ``model_version``, written to a temp file and renamed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from core.names import INT64_MAX, INT64_MIN
from core.settings import Paths
from core.spec import DatasetSpec, Kind, load_spec
from models.builder import serving_score_fn
from models.data import EncodedSplit
from models.encoding import OOV, FeatureEncoder
from serving.registry import DEFAULT_NAME, ModelVersion, Registry, RegistryError
from serving.tables import ScoringInputError, check_scoring_files, read_table, write_table
from serving.timing import NO_LAPS

log = logging.getLogger("clickprompt.scoring")

TIMESTAMP = "event_timestamp"
OUTPUT_COLUMNS = ("click_probability", "model_version")


@dataclass(frozen=True)
class LoadedModel:
    """A registered model ready to score: weights in eval mode, its encoder, spec and feature service."""

    name: str
    version: int
    training_stage: str
    feature_service: str
    spec: DatasetSpec
    encoder: FeatureEncoder
    model: nn.Module
    device: torch.device
    tokenizer: object | None = None  # only for models that read text (finetune-with-lm)
    max_len: int = 96

    @property
    def uses_text(self) -> bool:
        return self.tokenizer is not None

    @property
    def input_columns(self) -> list[str]:
        """Columns ``score_frame`` needs: every encoded field (+ the entity texts for LM models)."""
        cols = list(self.encoder.vocabs)
        if self.uses_text:
            cols += [self.spec.text_column(e) for e in self.spec.entity_order]
        return cols

    @property
    def keys(self) -> tuple[str, str]:
        return self.spec.entities["user"].key, self.spec.entities["item"].key


def load_model(mv: ModelVersion, paths: Paths, device: str = "cpu") -> LoadedModel:
    """Build the model a registry version describes and load its (hash-checked) weights.

    ``models.builder.serving_model`` builds it from the stored config + encoder exactly as training
    did: CTR-only and baseline versions are the plain backbone (no language model is loaded); a
    finetune-with-lm version also loads its PLM (from ``paths.plms``) and tokenizer.
    """
    from models.builder import serving_model
    from models.runtime import load_weights
    from models.train.config import TrainConfig

    mv.verify()
    cfg = TrainConfig.model_validate(json.loads((mv.path / "config.json").read_text(encoding="utf-8")))
    encoder = FeatureEncoder.load(mv.path / "encoder.json")
    spec = load_spec(encoder.spec_name)
    try:
        model = serving_model(cfg, encoder.fields, mv.training_stage, paths.plm_source(cfg.plm))
    except ValueError as exc:
        raise RegistryError(f"{mv.name} v{mv.version}: {exc}") from exc
    tokenizer = None
    if hasattr(model, "plm"):
        from models.plm import load_tokenizer

        tokenizer = load_tokenizer(paths.plm_source(cfg.plm))
    load_weights(model, mv.path / "model.safetensors")  # strict: every weight present, no extras
    model.to(torch.device(device)).eval()
    return LoadedModel(name=mv.name, version=mv.version, training_stage=mv.training_stage,
                       feature_service=mv.feature_service, spec=spec, encoder=encoder, model=model,
                       device=torch.device(device), tokenizer=tokenizer, max_len=cfg.max_len)


def load_production(paths: Paths, name: str = DEFAULT_NAME, registry: Registry | None = None,
                    device: str = "cpu") -> LoadedModel:
    return load_model((registry or Registry(paths)).require_production(name), paths, device)


# --- the shared path: feature rows -> tensors -> probability ------------------------------------


@dataclass(frozen=True)
class Scores:
    probability: np.ndarray  # (N,) float64 in (0, 1)
    unknown_user: np.ndarray  # (N,) bool: the user id is outside the model's vocabulary (OOV embedding)
    unknown_item: np.ndarray  # (N,) bool


def _is_null(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


Columns = Mapping[str, Sequence]  # a DataFrame, or {column: list} as Feast's online store answers


def _normalized(frame: Columns, lm: LoadedModel) -> dict[str, list]:
    """Feature values (as lists) in the types the encoder was fitted on, whichever store they came from.

    The offline store returns an integer feature of a row without a match as float (49 -> 49.0,
    which the vocabulary would not know); the online store returns Python ints and lists.
    """
    out: dict[str, list] = {}
    columns = frame.columns if isinstance(frame, pd.DataFrame) else frame.keys()
    for name, kind in lm.encoder.kinds.items():
        if name not in columns:
            raise KeyError(f"feature {name!r} missing from the feature rows (columns: {list(columns)})")
        values = frame[name]
        values = values.tolist() if isinstance(values, pd.Series) else values
        if kind == Kind.MULTI.value:
            values = [None if _is_null(v) else [str(x) for x in v] for v in values]
        elif kind == Kind.NUMERIC.value:
            values = [None if _is_null(v) else float(v) for v in values]
        elif lm.spec.field(name).dtype == "int64":
            values = [None if _is_null(v) else int(v) for v in values]
        else:
            values = [None if _is_null(v) else str(v) for v in values]
        out[name] = values
    if lm.uses_text:
        for entity in lm.spec.entity_order:
            col = lm.spec.text_column(entity)
            values = frame[col]
            values = values.tolist() if isinstance(values, pd.Series) else values
            out[col] = ["" if _is_null(v) else str(v) for v in values]
    return out


def score_frame(lm: LoadedModel, frame: Columns, batch_size: int = 4096, laps=NO_LAPS) -> Scores:
    """Click probabilities of feature rows (one per user-item pair; columns: ``lm.input_columns``),
    given as a DataFrame (batch scoring) or as {column: list} (the online store's answer).

    Encoded by the run's encoder (unknown values -> the out-of-vocabulary slot) and scored by
    the trainer's ``predict``, exactly as the test split was scored at training time; a request's
    few rows without text go through the same model and score function in one direct forward
    pass (no batching to do). ``laps`` marks ``encode`` and ``forward`` (the server's budget).
    """
    from models.runtime import predict

    rows = _normalized(frame, lm)
    n = len(next(iter(rows.values()))) if rows else 0
    user_key, item_key = lm.keys
    if n == 0:
        empty = np.zeros(0, dtype=bool)
        return Scores(np.zeros(0, dtype=np.float64), empty, empty)
    x = {k: torch.from_numpy(v) for k, v in lm.encoder.transform(rows).items()}
    score_fn = serving_score_fn(lm.training_stage)
    laps.lap("encode")
    if not lm.uses_text and n <= batch_size:
        with torch.inference_mode():
            logit = score_fn(lm.model, {"x": {k: v.to(lm.device) for k, v in x.items()}})
            prob = torch.sigmoid(logit.float()).cpu().numpy()
    else:
        split = EncodedSplit(x=x, label=torch.zeros(n, dtype=torch.float32))
        if lm.uses_text:
            from models.data import tokenize_samples

            ids, mask, _ = tokenize_samples(lm.spec, pd.DataFrame(rows), lm.tokenizer, lm.max_len)
            split.input_ids, split.attention_mask = torch.from_numpy(ids), torch.from_numpy(mask)
        prob = predict(lm.model, split, score_fn, batch_size, lm.device)
    laps.lap("forward")
    return Scores(
        probability=prob.astype(np.float64),
        unknown_user=x[user_key].numpy() == OOV,
        unknown_item=x[item_key].numpy() == OOV,
    )


# --- as-of batch scoring -------------------------------------------------------------------------


def _row(i: int) -> str:
    """A row as a person counts it: the first data row is 1 (a header line, where the file has one,
    is not counted; in a CSV with a header, data row n is line n + 1)."""
    return f"data row {i + 1}"


def _check_ids(frame: pd.DataFrame, column: str, where: str) -> pd.Series:
    col = frame[column]
    nulls = col.isna()
    if nulls.any():
        raise ScoringInputError(f"{where}, column {column!r}: {int(nulls.sum())} null value(s), "
                                f"first at {_row(int(np.flatnonzero(nulls.to_numpy())[0]))}")
    if pd.api.types.is_integer_dtype(col):
        if col.dtype == "uint64" and (col > INT64_MAX).any():  # astype would wrap 2**63 to -2**63
            row = int(np.flatnonzero((col > INT64_MAX).to_numpy())[0])
            raise ScoringInputError(f"{where}, column {column!r}: {_row(row)} value {int(col.iloc[row])} is not an "
                                    "integer id (ids are whole numbers the stores' int64 holds)")
        return col.astype("int64")
    if pd.api.types.is_float_dtype(col):  # a CSV's '196.0', or a column a join made float: as ingest, refused
        raise ScoringInputError(
            f"{where}, column {column!r}: {_row(0)} value {float(col.iloc[0])!r} is a float (the column is "
            f"{col.dtype}) and ids are integers: write them without a decimal point (in pandas "
            f"frame[{column!r}].astype('int64'))")
    numeric = pd.to_numeric(col, errors="coerce")
    decimal = col.astype(str).str.contains(r"[.eE]")  # '196.0', '1e3': not how an id is written
    bad = numeric.isna() | decimal | (numeric != numeric.round()) | ~numeric.between(INT64_MIN, INT64_MAX)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ScoringInputError(f"{where}, column {column!r}: {_row(row)} value {col.iloc[row]!r} is not an integer id "
                                "(ids are whole numbers the stores' int64 holds)")
    return numeric.astype("int64")


def _check_timestamps(frame: pd.DataFrame, where: str) -> pd.Series:
    col = frame[TIMESTAMP]
    if pd.api.types.is_datetime64_any_dtype(col):
        ts = col
    elif pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col):
        ts = pd.to_datetime(col, utc=True, errors="coerce", format="ISO8601")
        bad = ts.isna() & col.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ScoringInputError(f"{where}, column {TIMESTAMP!r}: {_row(row)} value {col.iloc[row]!r} "
                                    "is not an ISO-8601 timestamp")
    else:
        raise ScoringInputError(f"{where}, column {TIMESTAMP!r}: type {col.dtype} is not a timestamp "
                                "(use a timestamp column or ISO-8601 strings)")
    if ts.isna().any():
        row = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise ScoringInputError(f"{where}, column {TIMESTAMP!r}: {_row(row)} has no timestamp")
    if ts.dt.tz is None:  # naive timestamps are taken as UTC, as the warehouse stores them
        ts = ts.dt.tz_localize("UTC")
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def read_entities(path: Path, spec: DatasetSpec) -> pd.DataFrame:
    """The input rows, checked: user and item ids (integers) and ``event_timestamp`` must be present."""
    frame = read_table(Path(path))
    required = [spec.entities["user"].key, spec.entities["item"].key, TIMESTAMP]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ScoringInputError(f"{path}: missing column(s) {missing}; required {required}, found {list(frame.columns)}")
    return frame


def entity_rows(frame: pd.DataFrame, spec: DatasetSpec, where: str = "input") -> pd.DataFrame:
    """The (user, item, event_timestamp) entity dataframe Feast joins on, validated and in UTC."""
    user_key, item_key = spec.entities["user"].key, spec.entities["item"].key
    return pd.DataFrame({
        user_key: _check_ids(frame, user_key, where).reset_index(drop=True),
        item_key: _check_ids(frame, item_key, where).reset_index(drop=True),
        TIMESTAMP: _check_timestamps(frame, where).reset_index(drop=True),
    })


def historical_rows(store, entities: pd.DataFrame, service: str) -> pd.DataFrame:
    """Point-in-time feature rows for ``entities``, in the input order (Feast may reorder rows)."""
    from feature_repo.training_sets import historical_features

    order = "__row_index"
    joined = historical_features(store, entities.assign(**{order: np.arange(len(entities))}), service)
    return joined.sort_values(order, kind="stable").drop(columns=[order]).reset_index(drop=True)


def _score_entities(paths: Paths, frame: pd.DataFrame, lm: LoadedModel, store=None,
                    where: str = "input") -> tuple[pd.DataFrame, dict]:
    from feature_repo.store import open_store

    entities = entity_rows(frame, lm.spec, where)
    out = frame.copy()
    for col in OUTPUT_COLUMNS:
        if col in out.columns:
            log.warning("%s: column %r is replaced by this scoring", where, col)
            out = out.drop(columns=[col])
    counts = {"unknown_users": 0, "unknown_items": 0, "rows_without_user_features": 0, "rows_without_item_features": 0}
    if len(entities) == 0:
        out = out.assign(click_probability=pd.Series(dtype="float64"), model_version=pd.Series(dtype="int64"))
        return out, counts
    store = store or open_store(paths)
    rows = historical_rows(store, entities, lm.feature_service)
    scores = score_frame(lm, rows)
    out["click_probability"] = scores.probability
    out["model_version"] = np.full(len(out), lm.version, dtype=np.int64)
    counts["unknown_users"], counts["unknown_items"] = int(scores.unknown_user.sum()), int(scores.unknown_item.sum())
    for entity in ("user", "item"):
        cols = [f.name for f in lm.spec.profile_fields(entity) if f.name in rows.columns]
        if cols:
            counts[f"rows_without_{entity}_features"] = int(rows[cols].isna().all(axis=1).sum())
    if counts["rows_without_user_features"] or counts["rows_without_item_features"]:
        log.warning("%s: %d row(s) without user features and %d without item features as of their timestamp "
                    "(an id the store lacks, a time before its first version, or after the views' TTL); "
                    "they are scored through the out-of-vocabulary values", where,
                    counts["rows_without_user_features"], counts["rows_without_item_features"])
    return out, counts


def score_entities(paths: Paths, frame: pd.DataFrame, lm: LoadedModel, store=None, where: str = "input") -> pd.DataFrame:
    """``frame`` (unchanged) + ``click_probability`` + ``model_version``, as of each row's timestamp."""
    return _score_entities(paths, frame, lm, store, where)[0]


def score_file(paths: Paths, input_path: Path, output_path: Path, name: str = DEFAULT_NAME,
               registry: Registry | None = None) -> dict:
    """``clickprompt score``: read, check, join as of each row's time, score, write atomically."""
    started = time.perf_counter()
    input_path, output_path = Path(input_path), Path(output_path)
    check_scoring_files(input_path, output_path)
    lm = load_production(paths, name, registry)
    frame = read_entities(input_path, lm.spec)
    scored, counts = _score_entities(paths, frame, lm, where=str(input_path))
    write_table(scored, output_path)
    p = scored["click_probability"]
    return {"input": str(input_path), "output": str(output_path), "rows": len(scored), "model": name,
            "model_version": lm.version, "feature_service": lm.feature_service,
            "mean_click_probability": float(p.mean()) if len(p) else None, **counts,
            "seconds": round(time.perf_counter() - started, 3)}
