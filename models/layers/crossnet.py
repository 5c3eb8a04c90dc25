"""Explicit feature crossing: DCN's CrossNet (vector weights) and DCNv2's CrossNetV2 (full matrices)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CrossNet(nn.Module):
    """DCN (Wang et al. 2017): x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l.  (B, d) -> (B, d)."""

    def __init__(self, in_dim: int, n_layers: int) -> None:
        super().__init__()
        self.w = nn.ParameterList(nn.Parameter(torch.empty(in_dim)) for _ in range(n_layers))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(in_dim)) for _ in range(n_layers))
        for w in self.w:
            nn.init.normal_(w, std=in_dim**-0.5)

    def forward(self, x0: Tensor) -> Tensor:
        """x0: (B, d) -> (B, d)."""
        x = x0
        for w, b in zip(self.w, self.b):
            x = x0 * (x @ w).unsqueeze(-1) + b + x  # (B, d) * (B, 1)
        return x


class CrossNetV2(nn.Module):
    """DCNv2 (Wang et al. 2021), full-rank: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l.  (B, d) -> (B, d)."""

    def __init__(self, in_dim: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(in_dim, in_dim) for _ in range(n_layers))

    def forward(self, x0: Tensor) -> Tensor:
        """x0: (B, d) -> (B, d)."""
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x
