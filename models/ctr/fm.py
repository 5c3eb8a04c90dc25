"""FM (Rendle 2010): w0 + sum_i w_i + sum_{i<j} <v_i, v_j>, written as head(h).

h = concat(first-order terms w_i (B, F), bi-interaction vector (B, D)); ``head`` starts with
unit weights and zero bias, so head(h) is exactly FM (and then learns a weight per term).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.ctr.base import CTRModel
from models.encoding import FieldInfo
from models.layers import FeatureEmbedding, FMInteraction


@dataclass
class FMConfig:
    embedding_dim: int = 16  # D, latent factor size

    @classmethod
    def smoke(cls) -> "FMConfig":
        return cls(embedding_dim=8)


class FM(CTRModel):
    config_cls = FMConfig

    def __init__(self, fields: list[FieldInfo], cfg: FMConfig) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(fields, cfg.embedding_dim)
        self.linear = FeatureEmbedding(fields, 1)  # first-order weights w_i
        self.fm = FMInteraction()
        self._add_head(len(fields) + cfg.embedding_dim)

    def reset_head(self) -> None:
        """Unit weights and zero bias: head(h) = sum_i w_i + sum_{i<j} <v_i, v_j> (w0 = bias)."""
        nn.init.ones_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def represent(self, x: dict[str, Tensor]) -> Tensor:
        first = self.linear(x).squeeze(-1)  # (B, F)
        return torch.cat([first, self.fm(self.embedding(x))], dim=1)  # (B, F + D)
