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

import numpy as np
import pandas as pd

from core.spec import DatasetSpec, Kind

PAD, OOV, MASK = 0, 1, 2
NUM_RESERVED = 3
MAX_MULTI = 6  # multi-valued fields keep at most this many values per row (MovieLens max is 6)


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
                values = {str(v) for row in col.dropna() for v in row}
            else:
                values = {str(v) for v in col.dropna().unique()}
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

    def transform(self, frame: pd.DataFrame, fields: list[str] | None = None) -> dict[str, np.ndarray]:
        """Rows -> {field: int64 (N,) or (N, MAX_MULTI); numeric: float32 (N,)}."""
        out: dict[str, np.ndarray] = {}
        for name in fields or list(self.vocabs):
            vocab = self.vocabs[name]
            kind = self.kinds[name]
            col = frame[name]
            if kind == Kind.NUMERIC.value:
                out[name] = col.astype("float32").fillna(0.0).to_numpy()
            elif kind == Kind.MULTI.value:
                arr = np.full((len(frame), MAX_MULTI), PAD, dtype=np.int64)
                for r, row in enumerate(col):
                    if row is None or (isinstance(row, float) and np.isnan(row)):
                        arr[r, 0] = OOV
                        continue
                    ids = [vocab.get(str(v), OOV) for v in row][:MAX_MULTI] or [OOV]
                    arr[r, : len(ids)] = ids
                out[name] = arr
            else:
                keys = col.astype(object).where(col.notna(), None)
                out[name] = np.fromiter(
                    (vocab.get(str(v), OOV) if v is not None else OOV for v in keys),
                    dtype=np.int64,
                    count=len(frame),
                )
        return out

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
