"""Long-tail groups (the paper's analysis): users and items in the bottom 10% by training frequency."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.evaluate import auc

TAIL_QUANTILE = 0.1  # the paper's long tail: the bottom 10% of ids by training frequency


def tail_ids(train_ids: pd.Series, quantile: float = TAIL_QUANTILE) -> tuple[set, float]:
    """Ids whose training frequency is at or below the ``quantile`` of the per-id frequencies.

    Ids never seen in training (frequency 0) are always in the tail; returns (tail set of seen
    ids, frequency threshold).
    """
    counts = train_ids.value_counts()
    threshold = float(np.quantile(counts.to_numpy(), quantile))
    return set(counts[counts <= threshold].index), threshold


def tail_masks(
    train: pd.DataFrame, test: pd.DataFrame, user_key: str, item_key: str, quantile: float = TAIL_QUANTILE
) -> dict[str, np.ndarray]:
    """Boolean masks over test rows: tail_users, tail_items, tail_both (unseen ids count as tail)."""
    users, _ = tail_ids(train[user_key], quantile)
    items, _ = tail_ids(train[item_key], quantile)
    seen_users, seen_items = set(train[user_key]), set(train[item_key])
    tu = test[user_key].map(lambda u: u in users or u not in seen_users).to_numpy(bool)
    ti = test[item_key].map(lambda i: i in items or i not in seen_items).to_numpy(bool)
    return {"tail_users": tu, "tail_items": ti, "tail_both": tu & ti}


def group_aucs(labels: np.ndarray, probs: np.ndarray, masks: dict[str, np.ndarray], min_rows: int = 30) -> dict:
    """AUC over all rows and per tail group (None when a group is too small or one-class)."""
    overall = auc(labels, probs)
    out: dict = {"all": None if np.isnan(overall) else overall}
    for name, mask in masks.items():
        n = int(mask.sum())
        out[f"n_{name}"] = n
        value = auc(labels[mask], probs[mask]) if n >= min_rows else float("nan")
        out[name] = None if np.isnan(value) else value
    return out
