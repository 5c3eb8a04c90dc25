"""Fully connected blocks: Linear -> [BatchNorm] -> ReLU -> [Dropout], repeated."""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """(B, in_dim) -> (B, hidden_units[-1]); with no hidden units it is the identity."""

    def __init__(
        self,
        in_dim: int,
        hidden_units: list[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        prev = in_dim
        for units in hidden_units:
            blocks.append(nn.Linear(prev, units))
            if batch_norm:
                blocks.append(nn.BatchNorm1d(units))
            blocks.append(nn.ReLU())
            if dropout > 0:
                blocks.append(nn.Dropout(dropout))
            prev = units
        self.net = nn.Sequential(*blocks)
        self.output_dim = prev

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_dim) -> (B, output_dim)."""
        return self.net(x)
