"""Training-set frames (from Feast) -> in-memory tensors and batches; PA-MLM token masking.

Everything lives in memory as tensors (MovieLens-100K is ~100K rows): batches are index
slices, so there is no DataLoader worker overhead on 2 cores. Token tensors are padded to
``max_len`` once and trimmed per batch to the longest row in that batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from clickprompt.data.spec import DatasetSpec
from clickprompt.data.text import sample_texts
from models.encoding import FeatureEncoder

IGNORE_INDEX = -100  # label of tokens that carry no MLM loss


@dataclass
class EncodedSplit:
    """One split as tensors. ``x``: field -> (N,) or (N, M) indices; text tensors: (N, T)."""

    x: dict[str, Tensor]
    label: Tensor  # (N,) float32 in {0, 1}
    input_ids: Tensor | None = None  # (N, T) int64, padded with the tokenizer's pad id
    attention_mask: Tensor | None = None  # (N, T) int64
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)  # user/item ids and time, for analysis

    def __len__(self) -> int:
        return len(self.label)

    def take(self, index: Tensor) -> "EncodedSplit":
        return EncodedSplit(
            x={k: v[index] for k, v in self.x.items()},
            label=self.label[index],
            input_ids=None if self.input_ids is None else self.input_ids[index],
            attention_mask=None if self.attention_mask is None else self.attention_mask[index],
            meta=self.meta.iloc[index.numpy()].reset_index(drop=True),
        )

    def head(self, n: int | None, seed: int = 0) -> "EncodedSplit":
        """A fixed random sub-sample of ``n`` rows (all rows when n is None or larger)."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        return self.take(torch.randperm(len(self), generator=g)[:n].sort().values)


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
        enc = tokenizer(
            sample_texts(spec, frame), max_length=max_len, truncation=True, padding="max_length", return_tensors="pt"
        )
        split.input_ids, split.attention_mask = enc["input_ids"], enc["attention_mask"]
    return split


def batch_at(split: EncodedSplit, index: Tensor, device: torch.device) -> dict:
    """One batch on ``device``; token tensors trimmed to the longest row of the batch."""
    batch = {
        "x": {k: v[index].to(device, non_blocking=True) for k, v in split.x.items()},
        "label": split.label[index].to(device, non_blocking=True),
    }
    if split.input_ids is not None:
        mask = split.attention_mask[index]
        length = int(mask.sum(1).max())
        batch["input_ids"] = split.input_ids[index, :length].to(device, non_blocking=True)
        batch["attention_mask"] = mask[:, :length].to(device, non_blocking=True)
    return batch


def batch_order(n: int, batch_size: int, shuffle: bool, seed: int) -> list[Tensor]:
    """Index tensors of each batch; the shuffle depends only on ``seed`` (so a resume can replay it)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    return list(order.split(batch_size))


def mask_tokens(
    input_ids: Tensor,
    attention_mask: Tensor,
    special_ids: Tensor,
    mask_id: int,
    vocab_size: int,
    prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT masking: ``prob`` of the real, non-special tokens are selected; of those 80% -> [MASK],
    10% -> a random token, 10% unchanged. Returns (masked input ids, labels with -100 elsewhere).
    Shapes: (B, T) in, (B, T) out.
    """
    device = input_ids.device
    rand = lambda *shape: torch.rand(*shape, generator=generator, device="cpu").to(device)  # noqa: E731
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special_ids.to(device))
    selected = eligible & (rand(*input_ids.shape) < prob)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    roll = rand(*input_ids.shape)
    to_mask = selected & (roll < 0.8)
    to_random = selected & (roll >= 0.8) & (roll < 0.9)
    masked = input_ids.clone()
    masked[to_mask] = mask_id
    random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator).to(device)
    masked[to_random] = random_tokens[to_random]
    return masked, labels
