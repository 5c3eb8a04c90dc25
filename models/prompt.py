"""ClickPrompt's prompt interface: h (B, H) from a CTR model -> soft prompts -> fused into a masked LM.

Kept PEFT-style in three separate steps, never touching transformers' code:
  1. ``PromptGenerator``: shared Linear(H, d) -> Tanh -> Linear(d, L * 2 * hidden * K) (the
     authors' design), reshaped into one (key, value) prefix per layer.
  2. ``run_plm``: fills a fresh ``DynamicCache`` with those prefixes, extends the attention mask
     by K in front and passes explicit text position ids (else transformers shifts them by K).
  3. The caller pools ``last_hidden_state`` or reads the MLM ``logits``.

Input-only ablation (``input_only=True``): the generator emits K soft tokens (B, K, hidden) in
the word-embedding space; they are prepended to the text's word embeddings (``inputs_embeds``),
all at the position of the text's first token, and their outputs are dropped after the last
layer. (Key/value prefixes at layer 0 only are not possible through one cache: transformers
builds one attention mask for all layers.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedModel

from models.ctr.base import config_from_dict, count_params
from models.plm import mlm_parts, plm_info, text_position_ids

log = logging.getLogger(__name__)


@dataclass
class PromptConfig:
    n_prompts: int = 10  # K soft prompts per layer (paper default)
    hidden: int | None = None  # d, width of the shared projection; None = the PLM's hidden size (authors)
    input_only: bool = False  # ablation: K soft tokens at the input layer instead of per-layer prefixes
    pooling: Literal["cls", "mean"] = "cls"  # how the fused PLM's last hidden states become one vector

    def __post_init__(self) -> None:
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if self.n_prompts < 1:
            raise ValueError("n_prompts must be >= 1")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "PromptConfig":
        """Unknown keys raise ValueError."""
        return config_from_dict(cls, values)


@dataclass
class LayerPrompts:
    """Layer-wise prompts for one batch: one (key, value) prefix per PLM layer."""

    layers: list[tuple[Tensor, Tensor]]  # per layer (key, value), each (B, heads, K, head_dim)

    @property
    def n_prompts(self) -> int:
        return self.layers[0][0].shape[2]

    @property
    def batch_size(self) -> int:
        return self.layers[0][0].shape[0]


@dataclass
class InputPrompts:
    """Input-only prompts for one batch: K soft tokens in the word-embedding space."""

    embeds: Tensor  # (B, K, hidden)

    @property
    def n_prompts(self) -> int:
        return self.embeds.shape[1]

    @property
    def batch_size(self) -> int:
        return self.embeds.shape[0]


Prompts = LayerPrompts | InputPrompts


class PromptGenerator(nn.Module):
    """h (B, H) -> Prompts: Linear(H, d) -> Tanh -> Linear(d, out), out = L * 2 * heads * head_dim * K.

    The first layer is shared by every (layer, prompt, key/value) output, as in the authors' code.
    With ``input_only`` the last layer emits K * hidden values: K soft input tokens.
    """

    def __init__(
        self,
        h_dim: int,
        n_layers: int,
        n_heads: int,
        head_dim: int,
        n_prompts: int = 10,
        hidden: int = 768,
        input_only: bool = False,
    ) -> None:
        super().__init__()
        self.n_layers, self.n_heads, self.head_dim = n_layers, n_heads, head_dim
        self.n_prompts, self.input_only = n_prompts, input_only
        per_prompt = n_heads * head_dim if input_only else n_layers * 2 * n_heads * head_dim
        self.encoder = nn.Sequential(nn.Linear(h_dim, hidden), nn.Tanh())
        self.proj = nn.Linear(hidden, n_prompts * per_prompt)
        log.info("PromptGenerator: %d parameters (%s)", self.param_count(), "input-only" if input_only else "layer-wise")

    @classmethod
    def for_plm(cls, h_dim: int, plm: PreTrainedModel, cfg: PromptConfig) -> "PromptGenerator":
        info = plm_info(plm)
        return cls(
            h_dim, info.n_layers, info.n_heads, info.head_dim, cfg.n_prompts, cfg.hidden or info.hidden_size, cfg.input_only
        )

    def param_count(self) -> int:
        return count_params(self)

    def forward(self, h: Tensor) -> Prompts:
        """h: (B, H) -> Prompts (per-layer key/value prefixes, or (B, K, hidden) soft tokens)."""
        b = h.shape[0]
        out = self.proj(self.encoder(h))  # (B, K * per_prompt)
        if self.input_only:
            return InputPrompts(out.view(b, self.n_prompts, self.n_heads * self.head_dim))  # (B, K, hidden)
        kv = out.view(b, self.n_prompts, self.n_layers * 2, self.n_heads, self.head_dim)  # (B, K, 2L, heads, hd)
        kv = kv.permute(2, 0, 3, 1, 4)  # (2L, B, heads, K, head_dim)
        return LayerPrompts([(kv[2 * i], kv[2 * i + 1]) for i in range(self.n_layers)])


@dataclass
class FusionOutput:
    last_hidden_state: Tensor  # (B, T, hidden), text positions only (prompt positions dropped)
    logits: Tensor | None  # (B, T, vocab) MLM scores, None when not requested


def run_plm(
    plm: PreTrainedModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    prompts: Prompts | None = None,
    prompt_mask: Tensor | None = None,
    with_logits: bool = True,
) -> FusionOutput:
    """Run a BERT/RoBERTa masked LM on text (B, T) with optional prompts.

    prompts=None gives exactly the plain LM's output. ``prompt_mask`` (B, K) of 0/1 masks prompt
    positions (default all ones); all zeros also reproduces the plain LM's output.
    """
    info = plm_info(plm)
    encoder, mlm_head = mlm_parts(plm)
    position_ids = text_position_ids(input_ids, info)  # (B, T)
    if prompts is None:
        hidden = encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
            position_ids=position_ids,
        ).last_hidden_state  # (B, T, hidden)
    else:
        if prompt_mask is None:
            prompt_mask = attention_mask.new_ones(prompts.batch_size, prompts.n_prompts)
        full_mask = torch.cat([prompt_mask.to(attention_mask.dtype), attention_mask], dim=1)  # (B, K + T)
        if isinstance(prompts, InputPrompts):
            hidden = _run_input_only(encoder, input_ids, full_mask, position_ids, prompts)
        else:
            hidden = _run_layerwise(encoder, input_ids, full_mask, position_ids, prompts)
    return FusionOutput(last_hidden_state=hidden, logits=mlm_head(hidden) if with_logits else None)


def _run_layerwise(
    encoder: PreTrainedModel, input_ids: Tensor, full_mask: Tensor, position_ids: Tensor, prompts: LayerPrompts
) -> Tensor:
    """Prefixes as per-layer past keys/values -> (B, T, hidden).

    The cache must be fresh per call: every layer appends the text's own keys/values to it.
    """
    cache = DynamicCache()
    for layer_idx, (key, value) in enumerate(prompts.layers):  # each (B, heads, K, head_dim)
        cache.update(key, value, layer_idx)
    return encoder(
        input_ids=input_ids,
        attention_mask=full_mask,
        token_type_ids=torch.zeros_like(input_ids),
        position_ids=position_ids,
        past_key_values=cache,
    ).last_hidden_state


def _run_input_only(
    encoder: PreTrainedModel, input_ids: Tensor, full_mask: Tensor, position_ids: Tensor, prompts: InputPrompts
) -> Tensor:
    """Soft tokens prepended to the word embeddings -> (B, T, hidden) (prompt outputs dropped)."""
    k = prompts.n_prompts
    words = encoder.get_input_embeddings()(input_ids)  # (B, T, hidden)
    embeds = torch.cat([prompts.embeds.to(words.dtype), words], dim=1)  # (B, K + T, hidden)
    prompt_pos = position_ids[:, :1].expand(-1, k)  # (B, K): the first text token's position
    hidden = encoder(
        inputs_embeds=embeds,
        attention_mask=full_mask,
        token_type_ids=full_mask.new_zeros(full_mask.shape, dtype=torch.long),
        position_ids=torch.cat([prompt_pos, position_ids], dim=1),  # (B, K + T)
    ).last_hidden_state  # (B, K + T, hidden)
    return hidden[:, k:]  # (B, T, hidden)


def pool(last_hidden_state: Tensor, attention_mask: Tensor, how: Literal["cls", "mean"]) -> Tensor:
    """(B, T, hidden) -> (B, hidden): the first token's state, or the mean over unmasked tokens."""
    if how == "cls":
        return last_hidden_state[:, 0]
    weights = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)  # (B, T, 1)
    return (last_hidden_state * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


__all__ = [
    "FusionOutput",
    "InputPrompts",
    "LayerPrompts",
    "PromptConfig",
    "PromptGenerator",
    "Prompts",
    "pool",
    "run_plm",
]
