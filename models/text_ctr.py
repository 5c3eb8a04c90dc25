"""The LM as a click model, alone or beside the CTR backbone: ALT / CTRL / LM-only finetuning.

``TextCTR``: pooled text state -> linear head (CTR-BERT / PTab style). ``JointCTR``: the backbone
and ``TextCTR`` side by side, ``a * ctr_logit + (1 - a) * text_logit`` with ``a`` learnable from 0.5
(FLIP's joint strategy). ``load_prefixed`` loads a pretraining checkpoint's LM into them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from models.ctr import CTRModel
from models.plm import plm_info
from models.prompt import pool, run_plm


@dataclass
class JointOutput:
    logit: Tensor  # (B,) a * ctr_logit + (1 - a) * text_logit
    ctr_logit: Tensor  # (B,) the backbone's own logit
    text_logit: Tensor  # (B,) pooled text state -> head


def click_head(hidden: int, kind: Literal["linear", "mlp"] = "linear") -> nn.Module:
    """The LM side's click head on a pooled (B, hidden) state -> (B, 1): ``Linear(H, 1)``, or the
    authors' (CHIANGEL/ClickPrompt) ``Linear(H, H) -> Tanh -> Linear(H, 1)``."""
    if kind == "linear":
        return nn.Linear(hidden, 1)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    raise ValueError(f"unknown click head {kind!r}; known: linear, mlp")


class TextCTR(nn.Module):
    """The LM alone as a click model (CTR-BERT / PTab style): pooled text state -> click head -> logit."""

    def __init__(self, plm: PreTrainedModel, pooling: Literal["cls", "mean"] = "cls",
                 head: Literal["linear", "mlp"] = "linear") -> None:
        super().__init__()
        self.plm, self.pooling = plm, pooling
        self.head = click_head(plm_info(plm).hidden_size, head)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Text (B, T) -> click logit (B,)."""
        hidden = run_plm(self.plm, input_ids, attention_mask, with_logits=False).last_hidden_state  # (B, T, hidden)
        return self.head(pool(hidden, attention_mask, self.pooling)).squeeze(-1)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"plm": list(self.plm.parameters()), "head": list(self.head.parameters())}


class JointCTR(nn.Module):
    """Backbone and LM side by side: ``a * ctr_logit + (1 - a) * text_logit``, ``a`` learnable from 0.5
    (unconstrained, as ClickPrompt's mixing weight: it mixes logits)."""

    def __init__(self, ctr_model: CTRModel, text: TextCTR) -> None:
        super().__init__()
        self.ctr_model, self.text = ctr_model, text
        self.a = nn.Parameter(torch.tensor(0.5))

    def parts(self, x: Mapping[str, Tensor], input_ids: Tensor, attention_mask: Tensor) -> JointOutput:
        ctr_logit = self.ctr_model(x).logit  # (B,)
        text_logit = self.text(input_ids, attention_mask)  # (B,)
        return JointOutput(self.a * ctr_logit + (1 - self.a) * text_logit, ctr_logit, text_logit)

    def forward(self, x: Mapping[str, Tensor], input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.parts(x, input_ids, attention_mask).logit

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"plm": list(self.text.plm.parameters()), "ctr": list(self.ctr_model.parameters()),
                "fusion": [*self.text.head.parameters(), self.a]}


def load_prefixed(module: nn.Module, state: Mapping[str, Tensor], prefix: str) -> None:
    """Load the ``prefix``-ed entries of a state dict into ``module``. Every weight of the module must
    be loaded, or be tied to a loaded one (safetensors keeps an LM's tied embeddings once)."""
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = module.load_state_dict(sub, strict=False)
    own = module.state_dict()
    loaded = {own[k].data_ptr() for k in sub if k in own}
    untied = [k for k in missing if own[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise ValueError(f"state under {prefix!r} does not match: missing {untied}, unexpected {unexpected}")


