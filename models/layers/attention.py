"""AutoInt's interacting layer: multi-head self-attention over fields, with a residual projection."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class InteractingLayer(nn.Module):
    """(B, F, in_dim) -> (B, F, attention_dim), attention_dim split over n_heads heads.

    out = ReLU(MultiHead(x) + W_res x) (Song et al. 2019). AutoInt uses unscaled dot products;
    ``use_scale`` divides by sqrt(head_dim) as in Transformers.
    """

    def __init__(
        self,
        in_dim: int,
        attention_dim: int,
        n_heads: int,
        use_residual: bool = True,
        use_scale: bool = False,
    ) -> None:
        super().__init__()
        if attention_dim % n_heads:
            raise ValueError(f"attention_dim={attention_dim} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = attention_dim // n_heads
        self.use_scale = use_scale
        self.query = nn.Linear(in_dim, attention_dim, bias=False)
        self.key = nn.Linear(in_dim, attention_dim, bias=False)
        self.value = nn.Linear(in_dim, attention_dim, bias=False)
        self.residual = nn.Linear(in_dim, attention_dim, bias=False) if use_residual else None
        self.output_dim = attention_dim

    def _split(self, x: Tensor) -> Tensor:
        b, f, _ = x.shape
        return x.view(b, f, self.n_heads, self.head_dim).transpose(1, 2)  # (B, heads, F, head_dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, F, in_dim) -> (B, F, attention_dim)."""
        b, f, _ = x.shape
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scale = None if self.use_scale else 1.0  # None = 1/sqrt(head_dim)
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)  # (B, heads, F, head_dim)
        out = out.transpose(1, 2).reshape(b, f, self.output_dim)  # (B, F, heads * head_dim)
        if self.residual is not None:
            out = out + self.residual(x)
        return F.relu(out)
