import numpy as np
import pandas as pd

from benchmarks.longtail import group_aucs, tail_ids, tail_masks


def test_tail_ids_are_every_id_at_or_below_the_decile_frequency():
    train = pd.Series([1] * 50 + [2] * 30 + [3] * 20 + list(range(10, 20)))  # ids 10..19 seen once
    tail, threshold = tail_ids(train, 0.1)
    assert threshold == 1.0 and tail == set(range(10, 20))


def test_tail_masks_count_unseen_ids_as_tail():
    train = pd.DataFrame({"user_id": [1] * 9 + [2], "item_id": [5] * 5 + [6] * 5})
    test = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [5, 6, 7]})
    masks = tail_masks(train, test, "user_id", "item_id")
    assert masks["tail_users"].tolist() == [False, True, True]
    assert masks["tail_items"].tolist() == [True, True, True]  # both seen items tie at the threshold
    assert masks["tail_both"].tolist() == [False, True, True]


def test_group_aucs_skips_small_groups():
    y = np.array([0, 1] * 50)
    p = np.linspace(0, 1, 100)
    out = group_aucs(y, p, {"tail_users": np.arange(100) < 40, "tail_items": np.arange(100) < 10})
    assert out["n_tail_users"] == 40 and out["tail_users"] is not None
    assert out["tail_items"] is None and out["n_tail_items"] == 10
