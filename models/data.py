"""Training-set frames (from Feast) -> in-memory tensors and batches; PA-MLM token masking.

Everything lives in memory as tensors (MovieLens-100K is ~100K rows): batches are index
slices, so there is no DataLoader worker overhead on 2 cores. Token tensors are padded to
``max_len`` once and trimmed per batch to the longest row in that batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from core.spec import DatasetSpec
from core.template import field_spans, render_python
from models.encoding import FeatureEncoder


@dataclass
class EncodedSplit:
    """One split as tensors. ``x``: field -> (N,) or (N, M) indices; text tensors: (N, T)."""

    x: dict[str, Tensor]
    label: Tensor  # (N,) float32 in {0, 1}
    input_ids: Tensor | None = None  # (N, T) int64, padded with the tokenizer's pad id
    attention_mask: Tensor | None = None  # (N, T) int64
    field_ids: Tensor | None = None  # (N, T) int8: index in spec.fields of the value a token belongs to, -1 else
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)  # user/item ids and time, for analysis

    def __len__(self) -> int:
        return len(self.label)

    def lengths(self) -> Tensor | None:
        """(N,) tokens per row, None without text."""
        return None if self.attention_mask is None else self.attention_mask.sum(1)

    def to(self, device: torch.device) -> "EncodedSplit":
        """The split's tensors on ``device`` (itself when they are there already): a fit keeps its
        training split resident on the training device, so a batch is a gather there, not a copy."""
        tensors = [*self.x.values(), self.label, self.input_ids, self.attention_mask, self.field_ids]
        if all(t is None or t.device == torch.device(device) for t in tensors):
            return self
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return EncodedSplit({k: move(v) for k, v in self.x.items()}, move(self.label), move(self.input_ids),
                            move(self.attention_mask), move(self.field_ids), self.meta)

    def take(self, index: Tensor) -> "EncodedSplit":
        return EncodedSplit(
            x={k: v[index] for k, v in self.x.items()},
            label=self.label[index],
            input_ids=None if self.input_ids is None else self.input_ids[index],
            attention_mask=None if self.attention_mask is None else self.attention_mask[index],
            field_ids=None if self.field_ids is None else self.field_ids[index],
            meta=self.meta.iloc[index.numpy()].reset_index(drop=True),
        )

    def head(self, n: int | None, seed: int = 0) -> "EncodedSplit":
        """A fixed random sub-sample of ``n`` rows (all rows when n is None or larger)."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        return self.take(torch.randperm(len(self), generator=g)[:n].sort().values)


def concat_splits(a: EncodedSplit, b: EncodedSplit) -> EncodedSplit:
    """The rows of ``a`` then those of ``b`` (same fields, token tensors padded to the same length)."""
    cat = lambda x, y: None if x is None else torch.cat([x, y])  # noqa: E731
    return EncodedSplit({k: torch.cat([v, b.x[k]]) for k, v in a.x.items()}, torch.cat([a.label, b.label]),
                        cat(a.input_ids, b.input_ids), cat(a.attention_mask, b.attention_mask),
                        cat(a.field_ids, b.field_ids), pd.concat([a.meta, b.meta], ignore_index=True))


def encode_split(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    encoder: FeatureEncoder,
    tokenizer=None,
    max_len: int = 96,
) -> EncodedSplit:
    x = {k: torch.from_numpy(v) for k, v in encoder.transform(frame).items()}
    label = torch.from_numpy(frame["label"].to_numpy(dtype=np.float32))
    keys = [spec.entities["user"].key, spec.entities["item"].key]
    meta = frame[[*keys, "event_timestamp"]].reset_index(drop=True)
    split = EncodedSplit(x=x, label=label, meta=meta)
    if tokenizer is not None:
        ids, mask, offsets = tokenize_samples(spec, frame, tokenizer, max_len)
        split.input_ids, split.attention_mask = torch.from_numpy(ids), torch.from_numpy(mask)
        split.field_ids = torch.from_numpy(token_fields(spec, frame, offsets))
    return split


def tokenize_samples(
    spec: DatasetSpec, frame: pd.DataFrame, tokenizer, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids, attention mask (N, T) and character offsets (N, T, 2) of each row's sample text.

    A sample text is its entity texts joined by spaces, so each DISTINCT entity text is tokenized
    once (the later ones with their leading space, which byte-level BPE encodes) and rows are
    assembled from those pieces: the same ids as tokenizing every sample text, ~30x faster.
    """
    pieces, codes, shifts = [], [], np.zeros(len(frame), dtype=np.int64)
    for k, entity in enumerate(spec.entity_order):
        col = frame[spec.text_column(entity)].astype(str)
        code, uniques = pd.factorize(col)
        lead = " " if k else ""
        enc = tokenizer([lead + u for u in uniques], add_special_tokens=False, return_offsets_mapping=True)
        # offsets of entity k, shifted to the sample text (its leading space is the joining space)
        pieces.append((enc["input_ids"], enc["offset_mapping"], shifts.copy() - len(lead)))
        codes.append(code)
        shifts += col.str.len().to_numpy() + 1
    # BERT: [CLS] text [SEP]; RoBERTa: <s> text </s> - read off an empty text's encoding
    empty = tokenizer("")["input_ids"]
    prefix, suffix = empty[:1], empty[1:]
    n_special = len(empty)
    ids = np.full((len(frame), max_len), tokenizer.pad_token_id, dtype=np.int64)
    mask = np.zeros((len(frame), max_len), dtype=np.int64)
    offsets = np.zeros((len(frame), max_len, 2), dtype=np.int64)
    for r in range(len(frame)):
        row_ids: list[int] = []
        row_off: list[tuple[int, int]] = []
        for (p_ids, p_off, p_shift), code in zip(pieces, codes):
            c, shift = code[r], p_shift[r]
            row_ids += p_ids[c]
            row_off += [(a + shift, b + shift) for a, b in p_off[c]]
        row_ids, row_off = row_ids[: max_len - n_special], row_off[: max_len - n_special]
        full = prefix + row_ids + suffix
        ids[r, : len(full)] = full
        mask[r, : len(full)] = 1
        if row_off:  # a row whose entity texts are all empty (ids the store lacks) has no text tokens
            offsets[r, len(prefix) : len(prefix) + len(row_off)] = row_off
    return ids, mask, offsets


def value_char_spans(spec: DatasetSpec, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Character span of each field's value in each row's sample text: starts, ends (N, F), -1 if absent.

    Spans are computed once per distinct entity text (a few thousand users / items, not one per
    event) and broadcast. An entity text that differs from the template applied to its values
    gets no spans (its tokens then count as template tokens).
    """
    index = {f.name: i for i, f in enumerate(spec.fields)}
    starts = np.full((len(frame), len(spec.fields)), -1, dtype=np.int64)
    ends = np.full_like(starts, -1)
    offset = np.zeros(len(frame), dtype=np.int64)
    for entity in spec.entity_order:
        col = spec.text_column(entity)
        codes, uniques = pd.factorize(frame[col])
        first = frame.iloc[pd.Series(np.arange(len(frame))).groupby(codes).first().to_numpy()]
        s_u = np.full((len(uniques), len(spec.fields)), -1, dtype=np.int64)
        e_u = np.full_like(s_u, -1)
        for u, row in enumerate(first.to_dict("records")):
            if render_python(spec, entity, row) != row[col]:
                continue
            for name, a, b in field_spans(spec, entity, row):
                s_u[u, index[name]], e_u[u, index[name]] = a, b
        cols = [index[f.name] for f in spec.fields_of(entity)]
        found = s_u[codes][:, cols] >= 0
        starts[:, cols] = np.where(found, s_u[codes][:, cols] + offset[:, None], -1)
        ends[:, cols] = np.where(found, e_u[codes][:, cols] + offset[:, None], -1)
        offset += frame[col].str.len().to_numpy() + 1  # the joining space
    return starts, ends


def token_fields(spec: DatasetSpec, frame: pd.DataFrame, offsets: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """(N, T) int8 field index of each token from the tokenizer's (N, T, 2) character offsets."""
    starts, ends = value_char_spans(spec, frame)
    out = np.full(offsets.shape[:2], -1, dtype=np.int8)
    for c in range(0, len(frame), chunk):
        o = offsets[c : c + chunk]  # (n, T, 2)
        s, e = starts[c : c + chunk, None, :], ends[c : c + chunk, None, :]  # (n, 1, F)
        inside = (o[..., :1] >= s) & (o[..., 1:] <= e) & (o[..., 1:] > o[..., :1]) & (s >= 0)  # (n, T, F)
        out[c : c + chunk] = np.where(inside.any(-1), inside.argmax(-1), -1)
    return out


def batch_at(split: EncodedSplit, index: Tensor, device: torch.device, lengths: Tensor | None = None) -> dict:
    """One batch on ``device``; token tensors trimmed to the longest row of the batch.

    ``lengths``: the split's (N,) tokens per row on the host, so a split resident on a GPU is
    trimmed without reading its mask back (no synchronisation); ``index`` is a host tensor.
    """
    if split.label.device != index.device:
        host_index, index = index, index.to(split.label.device, non_blocking=True)
    else:
        host_index = index
    batch = {
        "x": {k: v[index].to(device, non_blocking=True) for k, v in split.x.items()},
        "label": split.label[index].to(device, non_blocking=True),
    }
    if split.input_ids is not None:
        mask = split.attention_mask[index]
        length = int(mask.sum(1).max() if lengths is None else lengths[host_index].max())
        batch["input_ids"] = split.input_ids[index, :length].to(device, non_blocking=True)
        batch["attention_mask"] = mask[:, :length].to(device, non_blocking=True)
        if split.field_ids is not None:
            batch["field_ids"] = split.field_ids[index, :length].to(device, non_blocking=True)
    return batch


LENGTH_GROUP = 50  # batches per chunk that length grouping sorts (randomness kept across chunks)


def batch_order(n: int, batch_size: int, shuffle: bool, seed: int, lengths: Tensor | None = None) -> list[Tensor]:
    """Index tensors of each batch; the shuffle depends only on ``seed`` (so a resume can replay it).

    With ``lengths`` (N,) (tokens per row) the batches group rows of similar length, so trimming a
    batch to its longest row leaves little padding: the shuffled rows are cut into chunks of
    ``LENGTH_GROUP`` batches, each chunk is sorted by length and split into batches, and the batch
    order is shuffled again (the idea of Hugging Face's ``group_by_length``). Every row still comes
    once per epoch, in a seed-dependent batch.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if lengths is None or not shuffle:
        return list(order.split(batch_size))
    chunks = [c[torch.argsort(lengths[c], stable=True)] for c in order.split(batch_size * LENGTH_GROUP)]
    batches = [b for c in chunks for b in c.split(batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def eval_batches(split: EncodedSplit, batch_size: int) -> list[torch.Tensor]:
    """Index batches covering ``split`` once; with text, rows sorted by token length so each batch
    is trimmed to little padding (scores are written back by index, so the order is unchanged)."""
    lengths = split.lengths()
    order = torch.arange(len(split)) if lengths is None else torch.argsort(lengths, stable=True)
    return list(order.split(batch_size))
