"""DCN (Wang et al. 2017): h = concat(CrossNet(x0), MLP(x0)), cross layers with vector weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from models.ctr.base import CTRModel
from models.encoding import FieldInfo
from models.layers import MLP, CrossNet, FeatureEmbedding


@dataclass
class DCNConfig:
    embedding_dim: int = 32  # D, per field
    cross_layers: int = 3  # vector-weight cross layers
    hidden_units: list[int] = field(default_factory=lambda: [256, 256, 256])  # deep tower
    dropout: float = 0.0  # dropout after every MLP ReLU
    batch_norm: bool = False  # BatchNorm1d inside MLP blocks

    @classmethod
    def smoke(cls) -> "DCNConfig":
        return cls(embedding_dim=8, cross_layers=2, hidden_units=[32, 16])


class DCN(CTRModel):
    config_cls = DCNConfig

    def __init__(self, fields: list[FieldInfo], cfg: DCNConfig) -> None:
        super().__init__()
        in_dim = len(fields) * cfg.embedding_dim
        self.embedding = FeatureEmbedding(fields, cfg.embedding_dim)
        self.cross = CrossNet(in_dim, cfg.cross_layers)
        self.mlp = MLP(in_dim, cfg.hidden_units, cfg.dropout, cfg.batch_norm)
        self._add_head(in_dim + self.mlp.output_dim)

    def represent(self, x: dict[str, Tensor]) -> Tensor:
        x0 = self.embedding(x).flatten(1)  # (B, F * D)
        return torch.cat([self.cross(x0), self.mlp(x0)], dim=1)  # (B, F * D + H_mlp)
