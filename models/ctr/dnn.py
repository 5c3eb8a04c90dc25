"""DNN: field embeddings, concatenated, through an MLP."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from models.ctr.base import CTRModel
from models.encoding import FieldInfo
from models.layers import MLP, FeatureEmbedding


@dataclass
class DNNConfig:
    embedding_dim: int = 32  # D, per field
    hidden_units: list[int] = field(default_factory=lambda: [256, 256, 256])  # MLP widths; H = last
    dropout: float = 0.0  # dropout after every MLP ReLU
    batch_norm: bool = False  # BatchNorm1d inside MLP blocks

    @classmethod
    def smoke(cls) -> "DNNConfig":
        return cls(embedding_dim=8, hidden_units=[32, 16])


class DNN(CTRModel):
    config_cls = DNNConfig

    def __init__(self, fields: list[FieldInfo], cfg: DNNConfig) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(fields, cfg.embedding_dim)
        self.mlp = MLP(len(fields) * cfg.embedding_dim, cfg.hidden_units, cfg.dropout, cfg.batch_norm)
        self._add_head(self.mlp.output_dim)

    def represent(self, x: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(x).flatten(1)  # (B, F * D)
        return self.mlp(emb)  # (B, H)
