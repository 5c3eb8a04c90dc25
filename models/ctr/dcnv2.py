"""DCNv2 (Wang et al. 2021), parallel structure: h = concat(CrossNetV2(x0), MLP(x0))."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from models.ctr.base import CTRModel
from models.encoding import FieldInfo
from models.layers import MLP, CrossNetV2, FeatureEmbedding


@dataclass
class DCNv2Config:
    embedding_dim: int = 32  # D, per field (ClickPrompt's MovieLens-1M setting)
    cross_layers: int = 6  # full-rank cross layers
    hidden_units: list[int] = field(default_factory=lambda: [256] * 6)  # deep tower, parallel to the cross net
    dropout: float = 0.0  # dropout after every MLP ReLU
    batch_norm: bool = False  # BatchNorm1d inside MLP blocks

    @classmethod
    def smoke(cls) -> "DCNv2Config":
        return cls(embedding_dim=8, cross_layers=2, hidden_units=[32, 16])


class DCNv2(CTRModel):
    config_cls = DCNv2Config

    def __init__(self, fields: list[FieldInfo], cfg: DCNv2Config) -> None:
        super().__init__()
        in_dim = len(fields) * cfg.embedding_dim
        self.embedding = FeatureEmbedding(fields, cfg.embedding_dim)
        self.cross = CrossNetV2(in_dim, cfg.cross_layers)
        self.mlp = MLP(in_dim, cfg.hidden_units, cfg.dropout, cfg.batch_norm)
        self._add_head(in_dim + self.mlp.output_dim)

    def represent(self, x: dict[str, Tensor]) -> Tensor:
        x0 = self.embedding(x).flatten(1)  # (B, F * D)
        return torch.cat([self.cross(x0), self.mlp(x0)], dim=1)  # (B, F * D + H_mlp)
