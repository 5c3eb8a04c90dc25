"""xDeepFM (Lian et al. 2018): linear + CIN + MLP; h = concat(first-order terms, CIN pooled maps, MLP)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from models.ctr.base import CTRModel
from models.encoding import FieldInfo
from models.layers import CIN, MLP, FeatureEmbedding


@dataclass
class XDeepFMConfig:
    embedding_dim: int = 16  # D, per field
    cin_layers: list[int] = field(default_factory=lambda: [128, 128])  # feature maps per CIN layer
    split_half: bool = True  # CIN hidden layers pass half their maps on, output the other half
    hidden_units: list[int] = field(default_factory=lambda: [256, 256])  # deep part
    dropout: float = 0.0  # dropout after every MLP ReLU
    batch_norm: bool = False  # BatchNorm1d inside MLP blocks

    @classmethod
    def smoke(cls) -> "XDeepFMConfig":
        return cls(embedding_dim=8, cin_layers=[8, 8], hidden_units=[32, 16])


class XDeepFM(CTRModel):
    config_cls = XDeepFMConfig

    def __init__(self, fields: list[FieldInfo], cfg: XDeepFMConfig) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(fields, cfg.embedding_dim)
        self.linear = FeatureEmbedding(fields, 1)  # first-order weights w_i
        self.cin = CIN(len(fields), cfg.cin_layers, cfg.split_half)
        self.mlp = MLP(len(fields) * cfg.embedding_dim, cfg.hidden_units, cfg.dropout, cfg.batch_norm)
        self._add_head(len(fields) + self.cin.output_dim + self.mlp.output_dim)

    def represent(self, x: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(x)  # (B, F, D)
        first = self.linear(x).squeeze(-1)  # (B, F)
        return torch.cat([first, self.cin(emb), self.mlp(emb.flatten(1))], dim=1)  # (B, F + H_cin + H_mlp)
