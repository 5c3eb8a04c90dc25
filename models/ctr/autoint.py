"""AutoInt (Song et al. 2019): stacked multi-head self-attention over fields; AutoInt+ adds an MLP."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from models.ctr.base import CTRModel
from models.encoding import FieldInfo
from models.layers import MLP, FeatureEmbedding, InteractingLayer


@dataclass
class AutoIntConfig:
    embedding_dim: int = 16  # D, per field (paper: 16)
    attention_layers: int = 3  # stacked interacting layers (paper: 3)
    n_heads: int = 2  # attention heads per layer (paper: 2)
    attention_dim: int = 64  # output width of a layer, all heads together (paper: 2 heads x 32)
    use_residual: bool = True  # residual projection W_res x
    use_scale: bool = False  # scale scores by 1/sqrt(head_dim); the paper does not
    hidden_units: list[int] = field(default_factory=list)  # AutoInt+ parallel MLP; empty = plain AutoInt
    dropout: float = 0.0  # dropout after every MLP ReLU
    batch_norm: bool = False  # BatchNorm1d inside MLP blocks

    @classmethod
    def smoke(cls) -> "AutoIntConfig":
        return cls(embedding_dim=8, attention_layers=2, n_heads=2, attention_dim=8)


class AutoInt(CTRModel):
    config_cls = AutoIntConfig

    def __init__(self, fields: list[FieldInfo], cfg: AutoIntConfig) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(fields, cfg.embedding_dim)
        dims = [cfg.embedding_dim] + [cfg.attention_dim] * cfg.attention_layers
        self.attention = nn.Sequential(
            *(
                InteractingLayer(d_in, cfg.attention_dim, cfg.n_heads, cfg.use_residual, cfg.use_scale)
                for d_in in dims[:-1]
            )
        )
        n_fields = len(fields)
        self.mlp = MLP(n_fields * cfg.embedding_dim, cfg.hidden_units, cfg.dropout, cfg.batch_norm)
        self.use_mlp = bool(cfg.hidden_units)
        self._add_head(n_fields * dims[-1] + (self.mlp.output_dim if self.use_mlp else 0))

    def represent(self, x: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(x)  # (B, F, D)
        h = self.attention(emb).flatten(1)  # (B, F * attention_dim)
        if self.use_mlp:
            h = torch.cat([h, self.mlp(emb.flatten(1))], dim=1)  # (B, F * attention_dim + H_mlp)
        return h
