"""DeepFM (Guo et al. 2017): FM and an MLP sharing the embeddings; h = concat(FM terms, MLP output).

The FM slice of ``head`` starts at unit weights, so at init the logit is FM + a linear read-out
of the MLP, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from models.ctr.base import CTRModel
from models.encoding import FieldInfo
from models.layers import MLP, FeatureEmbedding, FMInteraction


@dataclass
class DeepFMConfig:
    embedding_dim: int = 16  # D, shared by FM and the MLP
    hidden_units: list[int] = field(default_factory=lambda: [256, 256, 256])  # deep part
    dropout: float = 0.0  # dropout after every MLP ReLU
    batch_norm: bool = False  # BatchNorm1d inside MLP blocks

    @classmethod
    def smoke(cls) -> "DeepFMConfig":
        return cls(embedding_dim=8, hidden_units=[32, 16])


class DeepFM(CTRModel):
    config_cls = DeepFMConfig

    def __init__(self, fields: list[FieldInfo], cfg: DeepFMConfig) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(fields, cfg.embedding_dim)
        self.linear = FeatureEmbedding(fields, 1)  # first-order weights w_i
        self.fm = FMInteraction()
        self.mlp = MLP(len(fields) * cfg.embedding_dim, cfg.hidden_units, cfg.dropout, cfg.batch_norm)
        self.fm_dim = len(fields) + cfg.embedding_dim
        self._add_head(self.fm_dim + self.mlp.output_dim)

    def reset_head(self) -> None:
        """Default init, then unit weights on the FM terms (their sum is FM's logit)."""
        self.head.reset_parameters()
        with torch.no_grad():
            self.head.weight[:, : self.fm_dim] = 1.0

    def represent(self, x: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(x)  # (B, F, D)
        first = self.linear(x).squeeze(-1)  # (B, F)
        return torch.cat([first, self.fm(emb), self.mlp(emb.flatten(1))], dim=1)  # (B, F + D + H_mlp)
