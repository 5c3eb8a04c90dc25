"""The one evaluate function every caller uses: AUC, LogLoss (and group AUC)."""

from __future__ import annotations

import numpy as np
import pandas as pd

EPS = 1e-7


def auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula; ties get average ranks. NaN if one class only."""
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    n_pos = float(y_true.sum())
    n_neg = float(len(y_true) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(y_score).rank(method="average").to_numpy()  # as scipy.stats.rankdata (no scipy needed)
    return float((ranks[y_true == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [1e-7, 1 - 1e-7])."""
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.clip(np.asarray(y_prob, dtype=np.float64).ravel(), EPS, 1 - EPS)
    return float(-np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)))


def group_auc(y_true: np.ndarray, y_prob: np.ndarray, groups: np.ndarray) -> float:
    """Impression-weighted mean of per-group AUC over groups having both classes (GAUC)."""
    y_true, y_prob, groups = map(np.asarray, (y_true, y_prob, groups))
    total, weight = 0.0, 0
    for g in np.unique(groups):
        sel = groups == g
        value = auc(y_true[sel], y_prob[sel])
        if not np.isnan(value):
            total += value * sel.sum()
            weight += int(sel.sum())
    return total / weight if weight else float("nan")


def evaluate(y_true: np.ndarray, y_prob: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    """{"auc", "logloss"} (+ "gauc" when groups are given) of predicted click probabilities."""
    out = {"auc": auc(y_true, y_prob), "logloss": logloss(y_true, y_prob), "n": int(len(np.asarray(y_true)))}
    if groups is not None:
        out["gauc"] = group_auc(y_true, y_prob, groups)
    return out
