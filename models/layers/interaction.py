"""Feature-interaction layers over field embeddings (B, F, D): FM, CIN (xDeepFM), PNN products."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn


class FMInteraction(nn.Module):
    """FM's second-order term as the bi-interaction vector (Rendle 2010; He & Chua 2017).

    0.5 * ((sum_i v_i)^2 - sum_i v_i^2): (B, F, D) -> (B, D). Summing it over D gives
    sum_{i<j} <v_i, v_j>, FM's pairwise term.
    """

    def forward(self, emb: Tensor) -> Tensor:
        """emb: (B, F, D) -> (B, D)."""
        return 0.5 * (emb.sum(dim=1).pow(2) - emb.pow(2).sum(dim=1))


class CIN(nn.Module):
    """Compressed Interaction Network (xDeepFM, Lian et al. 2018): (B, F, D) -> (B, output_dim).

    Layer k: X^k_h = sum_{i,j} W^{k,h}_{ij} (X^{k-1}_i * X^0_j), done as a 1x1 conv over the
    F_{k-1} * F outer products; each layer's maps are sum-pooled over D. With ``split_half``
    (the paper's default) half of every hidden layer's maps go to the output, half to the next layer.
    """

    def __init__(self, n_fields: int, layer_sizes: list[int], split_half: bool = True) -> None:
        super().__init__()
        self.split_half = split_half
        self.convs = nn.ModuleList()
        prev, out_dim = n_fields, 0
        for i, size in enumerate(layer_sizes):
            last = i == len(layer_sizes) - 1
            if split_half and not last and size % 2:
                raise ValueError(f"CIN layer size {size} must be even with split_half")
            self.convs.append(nn.Conv1d(prev * n_fields, size, kernel_size=1))
            prev = size // 2 if split_half and not last else size
            out_dim += prev
        self.output_dim = out_dim

    def forward(self, x0: Tensor) -> Tensor:
        """x0: (B, F, D) -> (B, output_dim)."""
        b, _, d = x0.shape
        x, pooled = x0, []
        for i, conv in enumerate(self.convs):
            z = torch.einsum("bhd,bmd->bhmd", x, x0).reshape(b, -1, d)  # (B, H_{k-1} * F, D)
            x = torch.relu(conv(z))  # (B, H_k, D)
            if self.split_half and i < len(self.convs) - 1:
                x, kept = torch.chunk(x, 2, dim=1)  # (B, H_k / 2, D) each
            else:
                kept = x
            pooled.append(kept.sum(dim=2))  # (B, H_k')
        return torch.cat(pooled, dim=1)


def _pairs(n_fields: int) -> tuple[list[int], list[int]]:
    rows, cols = zip(*itertools.combinations(range(n_fields), 2))
    return list(rows), list(cols)


class _FieldPairs(nn.Module):
    """Index buffers of every field pair i < j, shared by the PNN product layers."""

    rows: Tensor  # (P,) first field of each pair
    cols: Tensor  # (P,) second field of each pair

    def __init__(self, n_fields: int) -> None:
        super().__init__()
        if n_fields < 2:
            raise ValueError("product layers need at least two fields")
        rows, cols = _pairs(n_fields)
        self.register_buffer("rows", torch.tensor(rows), persistent=False)
        self.register_buffer("cols", torch.tensor(cols), persistent=False)
        self.output_dim = len(rows)


class InnerProduct(_FieldPairs):
    """IPNN product layer (Qu et al. 2016): <e_i, e_j> for every field pair i < j.  (B, F, D) -> (B, P)."""

    def __init__(self, n_fields: int) -> None:
        super().__init__(n_fields)

    def forward(self, emb: Tensor) -> Tensor:
        """emb: (B, F, D) -> (B, P), P = F (F - 1) / 2."""
        return (emb[:, self.rows] * emb[:, self.cols]).sum(dim=-1)


class OuterProduct(_FieldPairs):
    """OPNN product layer with a learned kernel per pair: e_i^T W_p e_j for i < j.  (B, F, D) -> (B, P).

    The full outer product e_i e_j^T (D x D) contracted with a D x D kernel per pair, as in
    DeepCTR's ``mat`` kernel; it never materialises the D x D matrices.
    """

    def __init__(self, n_fields: int, dim: int) -> None:
        super().__init__(n_fields)
        self.kernel = nn.Parameter(torch.empty(len(self.rows), dim, dim))  # (P, D, D)
        bound = (3.0 / dim) ** 0.5  # Xavier-uniform for one D x D matrix
        nn.init.uniform_(self.kernel, -bound, bound)

    def forward(self, emb: Tensor) -> Tensor:
        """emb: (B, F, D) -> (B, P)."""
        return torch.einsum("bpd,pde,bpe->bp", emb[:, self.rows], self.kernel, emb[:, self.cols])
