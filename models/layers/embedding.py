"""One embedding table per field, built from the fields' specs (FieldInfo)."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from models.encoding import PAD, FieldInfo

MULTI = "multi"  # core.spec.Kind.MULTI.value
NUMERIC = "numeric"  # core.spec.Kind.NUMERIC.value


class FeatureEmbedding(nn.Module):
    """Embeds every field to a D-dim vector and stacks them: x -> (B, F, D).

    Input per field (a dict keyed by field name; extra keys are ignored):
      - single-valued (id / categorical / text): LongTensor (B,)
      - "multi": LongTensor (B, max_len), padded with PAD=0; mean-pooled over non-pad values
      - "numeric": FloatTensor (B,); embedded as value * a learned vector
    Tables have ``vocab_size`` rows, row PAD=0 fixed at zero (``padding_idx``); numeric fields
    own a single (unpadded) row, their learned vector.
    """

    def __init__(self, fields: list[FieldInfo], dim: int, init_std: float = 1e-2) -> None:
        super().__init__()
        if not fields:
            raise ValueError("FeatureEmbedding needs at least one field")
        self.fields = list(fields)
        self.dim = dim
        self.tables = nn.ModuleDict()
        for f in self.fields:
            if f.kind == NUMERIC:
                table = nn.Embedding(1, dim)
            else:
                table = nn.Embedding(f.vocab_size, dim, padding_idx=PAD)
            nn.init.normal_(table.weight, std=init_std)
            if table.padding_idx is not None:
                with torch.no_grad():
                    table.weight[PAD].zero_()
            self.tables[f.name] = table

    @property
    def n_fields(self) -> int:
        return len(self.fields)

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        """x: {field: (B,) or (B, max_len)} -> (B, F, D)."""
        return torch.stack([self._embed_field(f, x[f.name]) for f in self.fields], dim=1)

    def _embed_field(self, field: FieldInfo, values: Tensor) -> Tensor:
        """One field's values -> (B, D)."""
        table = cast(nn.Embedding, self.tables[field.name])
        if field.kind == NUMERIC:
            return values.float().unsqueeze(-1) * table.weight[0]  # (B, 1) * (D,) -> (B, D)
        if field.kind == MULTI:
            emb = table(values)  # (B, L, D); PAD rows are zero
            count = (values != PAD).sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
            return emb.sum(dim=1) / count  # (B, D)
        return table(values)  # (B, D)
