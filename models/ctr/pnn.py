"""PNN (Qu et al. 2016): MLP over concat(embeddings, pairwise products); IPNN or OPNN."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from models.ctr.base import CTRModel
from models.encoding import FieldInfo
from models.layers import MLP, FeatureEmbedding, InnerProduct, OuterProduct


@dataclass
class PNNConfig:
    embedding_dim: int = 16  # D, per field
    product_type: Literal["inner", "outer"] = "inner"  # IPNN or OPNN (kernelised outer product)
    hidden_units: list[int] = field(default_factory=lambda: [256, 256, 256])  # MLP over the product layer
    dropout: float = 0.0  # dropout after every MLP ReLU
    batch_norm: bool = False  # BatchNorm1d inside MLP blocks

    def __post_init__(self) -> None:
        if self.product_type not in ("inner", "outer"):
            raise ValueError(f"product_type must be 'inner' or 'outer', got {self.product_type!r}")

    @classmethod
    def smoke(cls) -> "PNNConfig":
        return cls(embedding_dim=8, hidden_units=[32, 16])


class PNN(CTRModel):
    config_cls = PNNConfig

    def __init__(self, fields: list[FieldInfo], cfg: PNNConfig) -> None:
        super().__init__()
        n_fields = len(fields)
        self.embedding = FeatureEmbedding(fields, cfg.embedding_dim)
        if cfg.product_type == "inner":
            self.product: InnerProduct | OuterProduct = InnerProduct(n_fields)
        else:
            self.product = OuterProduct(n_fields, cfg.embedding_dim)
        in_dim = n_fields * cfg.embedding_dim + self.product.output_dim
        self.mlp = MLP(in_dim, cfg.hidden_units, cfg.dropout, cfg.batch_norm)
        self._add_head(self.mlp.output_dim)

    def represent(self, x: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(x)  # (B, F, D)
        z = torch.cat([emb.flatten(1), self.product(emb)], dim=1)  # (B, F * D + P)
        return self.mlp(z)  # (B, H)
