"""Training sets as values: one folder per build identity, references checked by hash, split
policies, the unseen-id shares every manifest states, and the rule that cleans old builds."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from core.spec import load_spec
from core.training_data import TrainingSetRef, load_training_data
from feature_repo.store import apply
from feature_repo.training_sets import (
    KEEP_BUILDS,
    build_training_sets,
    builds,
    latest_training_set,
    load_training_sets,
)
from ingestion.warehouse import ingest
from tests.conftest import DAY, DAY0
from validation import gate

SPEC = load_spec("movielens-100k")
KEYS = ["user_id", "item_id", "event_timestamp"]


@pytest.fixture
def small_home(paths, small_raw):
    ingest(SPEC, small_raw, paths.warehouse, paths.snapshots, gate)
    apply(SPEC, paths)
    return paths


def _rows(frames: dict[str, pd.DataFrame]) -> dict[str, set]:
    return {name: set(map(tuple, f[KEYS].astype(str).to_numpy())) for name, f in frames.items()}


def _unseen(frames: dict[str, pd.DataFrame], split: str, key: str) -> float:
    return float((~frames[split][key].isin(set(frames["train"][key]))).mean())


def test_two_windows_are_two_values_that_never_see_each_others_rows(small_home):
    cut = datetime.fromtimestamp(DAY0 + 10 * DAY, tz=timezone.utc)
    early = build_training_sets(SPEC, small_home, end=cut)
    late = build_training_sets(SPEC, small_home, start=cut)
    full = build_training_sets(SPEC, small_home)
    assert len({early.folder, late.folder, full.folder}) == 3  # each under its own identity
    assert early.folder.parent == full.folder.parent == small_home.training_sets / "clickprompt_v1"
    a, ma = load_training_sets(early)  # still readable after later builds: nothing was overwritten
    b, mb = load_training_sets(late)
    rows_a, rows_b = set().union(*_rows(a).values()), set().union(*_rows(b).values())
    assert rows_a and rows_b and not rows_a & rows_b
    assert max(f.event_timestamp.max() for f in a.values()) < pd.Timestamp(cut)
    assert min(f.event_timestamp.min() for f in b.values()) >= pd.Timestamp(cut)
    assert ma.window == [None, pd.Timestamp(cut).isoformat()] and mb.window == [pd.Timestamp(cut).isoformat(), None]
    assert len(rows_a) + len(rows_b) == 20 == sum(s.rows for s in full.manifest().splits.values())
    # the same inputs name the same folder (and give the same rows and files)
    again = build_training_sets(SPEC, small_home, end=cut)
    assert again.folder == early.folder and again.manifest().files == ma.files


def test_a_reference_refuses_a_changed_build(small_home):
    ref = build_training_sets(SPEC, small_home)
    data = load_training_data(ref, verify=True)
    assert data.ref == ref and data.data_id == ref.manifest_hash and data.spec.name == SPEC.name
    manifest = json.loads((ref.folder / "manifest.json").read_text())
    manifest["splits"]["train"]["rows"] += 1
    (ref.folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"training set {ref.folder} changed since it was referenced"):
        load_training_data(ref)
    fresh = TrainingSetRef.of(ref.folder)
    (ref.folder / "test.parquet").write_bytes(b"not the file the manifest hashed")
    with pytest.raises(ValueError, match="test.parquet: sha256 differs from its manifest"):
        load_training_data(fresh, verify=True)


def test_split_policies(small_home):
    by_policy = {}
    for policy in ("global-temporal", "per-user-temporal", "random"):
        ref = build_training_sets(SPEC, small_home, fractions=(0.6, 0.2, 0.2), policy=policy)
        frames, manifest = load_training_sets(ref)
        assert manifest.split_policy == policy and sum(len(f) for f in frames.values()) == 20
        for split in ("valid", "test"):  # the stated shares are the frames' own
            assert manifest.splits[split].unseen_users == pytest.approx(_unseen(frames, split, "user_id"))
            assert manifest.splits[split].unseen_items == pytest.approx(_unseen(frames, split, "item_id"))
        by_policy[policy] = (ref, frames, manifest)
    _, g, _ = by_policy["global-temporal"]
    assert g["train"].event_timestamp.max() < g["valid"].event_timestamp.min()
    _, u, um = by_policy["per-user-temporal"]
    # every user (5 events each) keeps floor(5 * 0.2) = 1 last event for test, 1 before it for valid
    assert [um.splits[s].rows for s in ("train", "valid", "test")] == [12, 4, 4]
    for user, events in pd.concat(u.values(), keys=list(u)).reset_index(level=0).groupby("user_id"):
        order = events.sort_values(["event_timestamp", "item_id"])["level_0"].tolist()
        assert order == ["train"] * 3 + ["valid", "test"], f"user {user}: {order}"
    assert um.splits["test"].unseen_users == 0.0  # every test user was trained on
    _, r, rm = by_policy["random"]
    assert [rm.splits[s].rows for s in ("train", "valid", "test")] == [12, 4, 4]
    ref_again = build_training_sets(SPEC, small_home, fractions=(0.6, 0.2, 0.2), policy="random")
    assert _rows(load_training_sets(ref_again)[0]) == _rows(r)  # the seed is fixed: one identity, one split
    assert len({ref.folder for ref, _, _ in by_policy.values()}) == 3


def test_the_spec_chooses_the_default_policy(small_home):
    spec = SPEC.model_copy(update={"split": "per-user-temporal"})
    ref = build_training_sets(spec, small_home)
    assert ref.manifest().split_policy == "per-user-temporal" and ref.spec().split == "per-user-temporal"
    with pytest.raises(ValueError, match="unknown split policy 'by-week'"):
        build_training_sets(SPEC, small_home, policy="by-week")


def test_old_builds_are_cleaned_newest_kept(small_home):
    made = []
    for k in range(KEEP_BUILDS + 2):  # each end time is another window: another build
        made.append(build_training_sets(SPEC, small_home, end=datetime.fromtimestamp(DAY0 + (12 + k) * DAY,
                                                                                     tz=timezone.utc)))
    kept = builds(small_home)
    assert len(kept) == KEEP_BUILDS and kept[0] == made[-1].folder
    assert not made[0].folder.exists() and not made[1].folder.exists()
    assert latest_training_set(small_home) == made[-1]
    with pytest.raises(FileNotFoundError, match="build one with `clickprompt features training-set`"):
        load_training_data(made[0])


@pytest.mark.slow
def test_real_movielens_splits_state_their_unseen_shares(real_ml100k_home, real_ml100k_ref):
    """The global time split's cost on ML-100K, as the manifest states it (and the frames confirm)."""
    frames, manifest = load_training_sets(real_ml100k_ref)
    assert manifest.split_policy == "global-temporal"
    share = manifest.splits["test"].unseen_users
    assert share == pytest.approx(_unseen(frames, "test", "user_id")) and 0.7 < share < 0.95
    ref = build_training_sets(SPEC, real_ml100k_home, policy="per-user-temporal")
    per_user = ref.manifest()
    assert per_user.splits["test"].unseen_users == 0.0 and per_user.splits["test"].rows > 9_000
