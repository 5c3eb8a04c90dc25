import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from models.evaluate import auc, evaluate, group_auc, logloss


def test_auc_known_values_and_ties():
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert np.isnan(auc([1, 1], [0.2, 0.3]))


def test_auc_equals_mann_whitney_on_random_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500) + y * 0.5
    u = mannwhitneyu(s[y == 1], s[y == 0]).statistic
    assert auc(y, s) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()))


def test_logloss_known_value_and_clipping():
    assert logloss([1, 0], [0.8, 0.2]) == pytest.approx(-np.log(0.8))
    assert np.isfinite(logloss([1, 0], [0.0, 1.0]))


def test_group_auc_weights_groups_by_size_and_skips_single_class_groups():
    y = np.array([1, 0, 1, 0, 1, 1])
    p = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.6])
    g = np.array([0, 0, 1, 1, 2, 2])
    assert group_auc(y, p, g) == pytest.approx(0.5)
    out = evaluate(y, p, groups=g)
    assert set(out) == {"auc", "logloss", "n", "gauc"} and out["n"] == 6
