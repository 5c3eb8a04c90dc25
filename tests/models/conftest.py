"""Small fields and a batch shared by the model tests."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from models.encoding import FieldInfo

BATCH = 4


@pytest.fixture
def ctr_fields() -> list[FieldInfo]:
    return [
        FieldInfo("user_id", "id", vocab_size=20),
        FieldInfo("gender", "categorical", vocab_size=5),
        FieldInfo("genres", "multi", vocab_size=12, max_len=6),
        FieldInfo("year", "numeric", vocab_size=1),
    ]


@pytest.fixture
def ctr_batch() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    genres = torch.zeros(BATCH, 6, dtype=torch.long)
    genres[:, 0] = torch.randint(3, 12, (BATCH,), generator=g)
    genres[::2, 1] = torch.randint(3, 12, (BATCH // 2,), generator=g)
    return {
        "user_id": torch.randint(3, 20, (BATCH,), generator=g),
        "gender": torch.randint(3, 5, (BATCH,), generator=g),
        "genres": genres,
        "year": torch.randn(BATCH, generator=g),
    }
