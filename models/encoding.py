"""Turn feature rows (from Feast) into index tensors, with vocabularies fitted on the training split.

Index layout of every vocabulary (shared by all fields, so models can rely on it):
    0 = padding (multi-valued fields only), 1 = out-of-vocabulary, 2 = [MASK] (ALT's masked
    tabular modelling), 3.. = known values in first-seen order of the sorted training values.
Keeping the mask slot in every vocabulary means a model pretrained with masking and the
untouched backbone have exactly the same parameter shapes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from core.spec import DatasetSpec, Kind

PAD, OOV, MASK = 0, 1, 2
NUM_RESERVED = 3
MAX_MULTI = 6  # multi-valued fields keep at most this many values per row (MovieLens max is 6)


def value_key(v) -> str:
    """A value's vocabulary key: integral floats as integers, so 1997, 1997.0 and np.int64(1997)
    are one value (a nullable integer column reads as float in a split that holds a null, and as
    int in one that does not; the online store answers with Python ints)."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


@dataclass(frozen=True)
class FieldInfo:
    """What a CTR model needs to know about one input field."""

    name: str
    kind: str  # one of core.spec.Kind values
    vocab_size: int  # number of rows of the field's embedding table (reserved slots included)
    max_len: int = 1  # values per row: 1, or MAX_MULTI for multi-valued fields


@dataclass
class FeatureEncoder:
    """Vocabularies per field, fitted on training rows; unseen values map to OOV."""

    spec_name: str
    vocabs: dict[str, dict[str, int]]
    kinds: dict[str, str]

    @classmethod
    def fit(cls, spec: DatasetSpec, train: pd.DataFrame) -> "FeatureEncoder":
        vocabs: dict[str, dict[str, int]] = {}
        for f in spec.fields:
            if f.kind == Kind.NUMERIC:
                vocabs[f.name] = {}
                continue
            col = train[f.name]
            if f.kind == Kind.MULTI:
                values = {value_key(v) for row in col.dropna() for v in row}
            else:
                values = {value_key(v) for v in col.dropna().unique()}
            vocabs[f.name] = {v: i + NUM_RESERVED for i, v in enumerate(sorted(values))}
        return cls(spec.name, vocabs, {f.name: f.kind.value for f in spec.fields})

    @property
    def fields(self) -> list[FieldInfo]:
        return [
            FieldInfo(
                name,
                kind,
                vocab_size=1 if kind == Kind.NUMERIC.value else len(vocab) + NUM_RESERVED,
                max_len=MAX_MULTI if kind == Kind.MULTI.value else 1,
            )
            for (name, vocab), kind in zip(self.vocabs.items(), self.kinds.values())
        ]

    def transform(self, frame: pd.DataFrame | Mapping[str, list], fields: list[str] | None = None) -> dict[str, np.ndarray]:
        """Rows -> {field: int64 (N,) or (N, MAX_MULTI); numeric: float32 (N,)}.

        ``frame``: a DataFrame, or {field: list} with None for a missing value (what serving
        builds for a request's few rows, without pandas' per-column overhead)."""
        out: dict[str, np.ndarray] = {}
        for name in fields or list(self.vocabs):
            vocab = self.vocabs[name]
            kind = self.kinds[name]
            col = frame[name]
            if not isinstance(col, pd.Series):
                out[name] = self._transform_list(col, vocab, kind)
            elif kind == Kind.NUMERIC.value:
                out[name] = col.astype("float32").fillna(0.0).to_numpy()
            elif kind == Kind.MULTI.value:
                arr = np.full((len(frame), MAX_MULTI), PAD, dtype=np.int64)
                for r, row in enumerate(col):
                    if row is None or (isinstance(row, float) and np.isnan(row)):
                        arr[r, 0] = OOV
                        continue
                    ids = [vocab.get(value_key(v), OOV) for v in row][:MAX_MULTI] or [OOV]
                    arr[r, : len(ids)] = ids
                out[name] = arr
            else:
                keys = col.astype(object).where(col.notna(), None)
                out[name] = np.fromiter(
                    (vocab.get(value_key(v), OOV) if v is not None else OOV for v in keys),
                    dtype=np.int64,
                    count=len(frame),
                )
        return out

    @staticmethod
    def _transform_list(col: list, vocab: dict[str, int], kind: str) -> np.ndarray:
        if kind == Kind.NUMERIC.value:
            return np.array([0.0 if v is None else v for v in col], dtype=np.float32)
        if kind == Kind.MULTI.value:
            arr = np.full((len(col), MAX_MULTI), PAD, dtype=np.int64)
            for r, row in enumerate(col):
                ids = [OOV] if row is None else [vocab.get(value_key(v), OOV) for v in row][:MAX_MULTI] or [OOV]
                arr[r, : len(ids)] = ids
            return arr
        return np.array([OOV if v is None else vocab.get(value_key(v), OOV) for v in col], dtype=np.int64)

    def oov_mask(self, frame: pd.DataFrame, fields: list[str]) -> np.ndarray:
        """True where any of ``fields`` (e.g. the id fields) is out of vocabulary: (N,) bool."""
        encoded = self.transform(frame, fields)
        flags = np.zeros(len(frame), dtype=bool)
        for name in fields:
            flags |= encoded[name].reshape(len(frame), -1)[:, 0] == OOV
        return flags

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1, sort_keys=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "FeatureEncoder":
        return cls(**json.loads(path.read_text(encoding="utf-8")))
