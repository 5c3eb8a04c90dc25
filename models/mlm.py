"""Masked-LM pieces shared by PA-MLM (ClickPrompt) and ALT's field-level MLM.

- ``DecoderVocab``: the token ids the MLM decoder scores. A data set's rendered texts use a few
  thousand of a tokenizer's ~30-50k ids (ML-100K: 3,288 of BERT's 30,522), and projecting every
  masked token onto the whole vocabulary was half of PA-MLM's FLOPs. ``"train"`` restricts the
  decoder to the ids of the run's training texts plus the special tokens (computed once per run,
  stored with it); ``"full"`` keeps the whole vocabulary. The restricted logits are the full
  logits at those ids (same weights, same bias; tested), so only the softmax's support changes.
- ``mask_tokens`` / ``TokenMasker``: BERT masking (15% of the eligible tokens; 80% [MASK], 10% a
  random token, 10% unchanged). Eligible: real, non-special tokens inside the decoder vocabulary,
  so targets always lie in it; the random replacement draws from it too.
- ``mlm_at_labels``: the MLM head on the masked positions only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from models.plm import mlm_head_parts

if TYPE_CHECKING:
    from models.data import EncodedSplit

IGNORE_INDEX = -100  # label of tokens that carry no MLM loss
DecoderScope = Literal["train", "full"]


@dataclass(frozen=True)
class DecoderVocab:
    """Token ids (V',) the decoder scores, sorted, and the local index of every id of the tokenizer."""

    ids: Tensor  # (V',) int64, sorted
    vocab_size: int  # the tokenizer's / decoder's full size
    full: bool  # True: every id (the plain decoder, no gather)
    _tables: dict = field(default_factory=dict, repr=False, compare=False)  # lookup per device, built once

    @classmethod
    def whole(cls, vocab_size: int) -> "DecoderVocab":
        return cls(torch.arange(vocab_size), vocab_size, True)

    @classmethod
    def from_texts(cls, input_ids: Tensor, attention_mask: Tensor, special_ids: list[int], vocab_size: int) -> "DecoderVocab":
        """The ids of the real tokens of ``input_ids`` (N, T) plus ``special_ids``."""
        seen = input_ids[attention_mask.bool()]
        ids = torch.unique(torch.cat([seen, torch.tensor(special_ids, dtype=seen.dtype)]))
        if ids.numel() and int(ids.max()) >= vocab_size:
            raise ValueError(f"token id {int(ids.max())} is outside the decoder's {vocab_size} rows")
        return cls(ids.long(), vocab_size, ids.numel() == vocab_size)

    def __len__(self) -> int:
        return self.ids.numel()

    def lookup(self, device: torch.device | None = None) -> Tensor:
        """(vocab_size,) int64: the local index of each token id, -1 where the decoder does not score it."""
        key = str(device or "cpu")
        if key not in self._tables:
            table = torch.full((self.vocab_size,), -1, dtype=torch.long)
            table[self.ids] = torch.arange(len(self))
            self._tables[key] = table.to(device or "cpu")
        return self._tables[key]

    def ids_on(self, device: torch.device) -> Tensor:
        """``ids`` on ``device``, copied there once (not once per step)."""
        key = f"ids:{device}"
        if key not in self._tables:
            self._tables[key] = self.ids.to(device)
        return self._tables[key]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.ids.numpy().tobytes()).hexdigest()[:16]

    def save(self, path: Path) -> None:
        from core.io import write_json_atomic

        write_json_atomic(path, {"vocab_size": self.vocab_size, "full": self.full, "size": len(self),
                                 "digest": self.digest, "ids": self.ids.tolist()}, indent=None)

    @classmethod
    def load(cls, path: Path) -> "DecoderVocab":
        doc = json.loads(path.read_text(encoding="utf-8"))
        vocab = cls(torch.tensor(doc["ids"], dtype=torch.long), int(doc["vocab_size"]), bool(doc["full"]))
        if vocab.digest != doc["digest"]:
            raise ValueError(f"{path}: decoder vocabulary does not match its digest")
        return vocab


@dataclass
class MLMResult:
    loss: Tensor  # () mean cross-entropy over the masked tokens
    pred: Tensor  # (M,) predicted token ids at the masked positions
    true: Tensor  # (M,) original token ids
    selected: Tensor  # (B, T) bool, the masked positions


def mlm_logits(plm: PreTrainedModel, hidden: Tensor, vocab: DecoderVocab | None = None) -> Tensor:
    """MLM scores of hidden states (M, hidden) -> (M, V'): the decoder rows of ``vocab`` only."""
    transform, decoder = mlm_head_parts(plm)
    h = transform(hidden)
    if vocab is None or vocab.full:
        return decoder(h)  # (M, vocab)
    ids = vocab.ids_on(h.device)
    return F.linear(h, decoder.weight[ids], decoder.bias[ids])  # (M, V')


def mlm_at_labels(plm: PreTrainedModel, hidden: Tensor, labels: Tensor, vocab: DecoderVocab | None = None) -> MLMResult:
    """MLM loss on the positions with labels != -100 only. hidden (B, T, hidden), labels (B, T);
    0 (still in the graph) without such positions. With a restricted ``vocab`` every label must lie
    in it (``TokenMasker`` guarantees that)."""
    selected = labels != IGNORE_INDEX  # (B, T)
    logits = mlm_logits(plm, hidden[selected], vocab)  # (M, V')
    true = labels[selected]  # (M,)
    if true.numel() == 0:
        return MLMResult(logits.sum() * 0.0, true, true, selected)
    if vocab is None or vocab.full:
        return MLMResult(F.cross_entropy(logits.float(), true), logits.argmax(-1), true, selected)
    target = vocab.lookup(true.device)[true]  # (M,)
    if true.device.type != "cpu":  # checked on the device, no synchronisation per step
        torch._assert_async((target >= 0).all(), "a masked token lies outside the decoder vocabulary")
    elif bool((target < 0).any()):
        raise ValueError("a masked token lies outside the decoder vocabulary")
    pred = vocab.ids_on(true.device)[logits.argmax(-1)]
    return MLMResult(F.cross_entropy(logits.float(), target), pred, true, selected)


def mask_tokens(
    input_ids: Tensor,
    attention_mask: Tensor,
    special_ids: Tensor,
    mask_id: int,
    vocab_size: int,
    prob: float = 0.15,
    generator: torch.Generator | None = None,
    candidates: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT masking: ``prob`` of the real, non-special tokens are selected; of those 80% -> [MASK],
    10% -> a random token, 10% unchanged. Returns (masked input ids, labels with -100 elsewhere).
    Shapes: (B, T) in, (B, T) out.

    ``candidates`` (V',) restricts both the targets and the random tokens to those ids (a
    restricted decoder); None draws from the whole vocabulary, exactly as before it existed.
    """
    device = input_ids.device
    # drawn where the generator lives (the CPU's by default; a TokenMasker's is on the batch's device)
    where = generator.device if generator is not None else torch.device("cpu")
    rand = lambda *shape: torch.rand(*shape, generator=generator, device=where).to(device)  # noqa: E731
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special_ids.to(device))
    if candidates is not None:
        eligible &= torch.isin(input_ids, candidates.to(device))
    selected = eligible & (rand(*input_ids.shape) < prob)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    roll = rand(*input_ids.shape)
    to_mask = selected & (roll < 0.8)
    to_random = selected & (roll >= 0.8) & (roll < 0.9)
    masked = input_ids.clone()
    masked[to_mask] = mask_id
    if candidates is None:
        random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator, device=where).to(device)
    else:
        pick = torch.randint(candidates.numel(), input_ids.shape, generator=generator, device=where)
        random_tokens = candidates.to(where)[pick].to(device)
    masked[to_random] = random_tokens[to_random]
    return masked, labels


class TokenMasker:
    """Applies BERT masking to a batch (special and padding tokens never masked, targets and random
    tokens inside ``vocab``); a fixed seed gives the same masks each run. The masks are drawn on the
    batch's device (a generator per device, each from ``seed``: no host round trip per step on a
    GPU; on the CPU the same draws as ever)."""

    def __init__(self, tokenizer, prob: float, seed: int, vocab: DecoderVocab | None = None) -> None:
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.mask_id, self.vocab_size, self.prob = tokenizer.mask_token_id, len(tokenizer), prob
        # the random replacement never draws a special token there: restricted candidates are non-special
        self.candidates = None
        if vocab is not None and not vocab.full:
            self.candidates = vocab.ids[~torch.isin(vocab.ids, self.special)]
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._on: dict[torch.device, tuple] = {}  # device -> (generator, special ids, candidates) there

    def _for(self, device: torch.device) -> tuple:
        if device.type == "cpu":
            return self.generator, self.special, self.candidates
        if device not in self._on:
            move = lambda t: None if t is None else t.to(device)  # noqa: E731
            self._on[device] = (torch.Generator(device=device).manual_seed(self.seed), move(self.special),
                                move(self.candidates))
        return self._on[device]

    def __call__(self, batch: dict) -> dict:
        generator, special, candidates = self._for(batch["input_ids"].device)
        masked, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], special, self.mask_id,
                                     self.vocab_size, self.prob, generator, candidates)
        return {**batch, "masked_ids": masked, "mlm_labels": labels}


@torch.no_grad()
def mlm_accuracy(model: nn.Module, masker: TokenMasker, split: EncodedSplit, batch_size: int,
                 device: torch.device) -> dict:
    """Held-out masked-token accuracy and loss, with the prompts and with the prompts zeroed, on
    the SAME masked tokens (fixed masking seed). ``*_values``: only tokens inside a field's value
    (ids, codes, titles, genres), where the ID side carries information the text context lacks;
    the template words ("is", ".") are recovered from context alone and dilute the overall figure.
    ``model``: a ClickPrompt (its ``pa_mlm``); ``masker``: a TokenMasker with a fixed seed.
    """
    from models.data import batch_at, eval_batches

    model.eval()
    # zero_prompts -> counts: correct, total, loss sum, value-token correct, value-token total
    stats = {zero: np.zeros(5) for zero in (False, True)}
    for index in eval_batches(split, batch_size):
        batch = masker(batch_at(split, index, device))
        for zero in (False, True):
            out = model.pa_mlm(batch["x"], batch["masked_ids"], batch["attention_mask"], batch["mlm_labels"], zero)
            hit = out.pred == out.true
            values = batch["field_ids"][out.selected] >= 0  # (M,)
            stats[zero] += [int(hit.sum()), out.true.numel(), float(out.loss) * out.true.numel(),
                            int(hit[values].sum()), int(values.sum())]
    with_p, zeroed = stats[False], stats[True]
    return {
        "mlm_acc": with_p[0] / max(with_p[1], 1),
        "mlm_acc_zero_prompts": zeroed[0] / max(zeroed[1], 1),
        "mlm_acc_values": with_p[3] / max(with_p[4], 1),
        "mlm_acc_values_zero_prompts": zeroed[3] / max(zeroed[4], 1),
        "mlm_loss": with_p[2] / max(with_p[1], 1),
        "mlm_loss_zero_prompts": zeroed[2] / max(zeroed[1], 1),
        "masked_tokens": int(with_p[1]),
        "masked_value_tokens": int(with_p[4]),
    }
