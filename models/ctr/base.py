"""What every CTR backbone shares: the output type, the output layer ``head``, config parsing."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from torch import Tensor, nn

from models.layers import FeatureEmbedding

C = TypeVar("C")


@dataclass
class CTROutput:
    logit: Tensor  # (B,) click logit, before the sigmoid
    h: Tensor  # (B, H) representation right before the output layer ``head``


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (tied parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def config_from_dict(cls: type[C], overrides: Mapping[str, Any] | None = None, base: C | None = None) -> C:
    """``base`` (default: ``cls()``) with ``overrides`` applied; unknown keys raise ValueError."""
    overrides = dict(overrides or {})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; known keys: {sorted(known)}")
    return dataclasses.replace(base if base is not None else cls(), **overrides)  # type: ignore[type-var]


class CTRModel(nn.Module):
    """Base of every backbone: ``embedding`` -> model-specific ``represent`` -> ``head``.

    Subclasses build ``self.embedding`` (FeatureEmbedding) and their interaction layers, then
    call ``self._add_head(H)`` last; they implement only ``represent(x) -> (B, H)``.
    A "fresh output layer" (ClickPrompt's CTR-only finetuning) is ``reset_head()``.
    """

    config_cls: ClassVar[Any]  # the model's @dataclass config class (with a ``smoke()`` preset)
    embedding: FeatureEmbedding
    head: nn.Linear
    output_dim: int  # H

    def _add_head(self, output_dim: int) -> None:
        self.output_dim = output_dim
        self.head = nn.Linear(output_dim, 1)
        self.reset_head()

    def reset_head(self) -> None:
        """Re-initialise the output layer (default nn.Linear init)."""
        self.head.reset_parameters()

    def represent(self, x: dict[str, Tensor]) -> Tensor:
        """Features {field: (B,) or (B, L)} -> h (B, H)."""
        raise NotImplementedError

    def forward(self, x: dict[str, Tensor]) -> CTROutput:
        h = self.represent(x)  # (B, H)
        return CTROutput(logit=self.head(h).squeeze(-1), h=h)

    def param_count(self, trainable_only: bool = False) -> int:
        return count_params(self, trainable_only)
