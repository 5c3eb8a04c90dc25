"""Feast over the warehouse snapshots: apply into a temp folder, point-in-time joins, online store."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from feast.types import Array, Int64, String

from core.settings import REPO_ROOT
from core.spec import load_spec
from feature_repo.online import materialize, online_features
from feature_repo.store import apply, open_store
from feature_repo.training_sets import (
    build_training_sets,
    historical_features,
    load_training_sets,
)
from ingestion.text_sql import text_sql
from ingestion.warehouse import connect, export_snapshots, ingest
from tests.conftest import DAY, DAY0
from validation import gate

SPEC = load_spec("movielens-100k")


@pytest.fixture
def small_home(paths, small_raw):
    ingest(SPEC, small_raw, paths.warehouse, paths.snapshots, gate)
    apply(SPEC, paths)
    return paths


def test_apply_registers_views_and_services_with_spec_types(small_home):
    store = open_store(small_home)
    views = {fv.name: fv for fv in store.list_feature_views()}
    assert set(views) == {"user_profile", "item_profile", "user_text", "item_text"}
    assert {f.name: f.dtype for f in views["user_profile"].features} == {
        "gender": String, "age": Int64, "occupation": String, "zip_code": String}
    assert {f.name: f.dtype for f in views["item_profile"].features}["genres"] == Array(String)
    assert views["user_profile"].ttl == timedelta(0)  # valid until replaced
    services = {s.name: s for s in store.list_feature_services()}
    assert {p.name for p in services["ctr_v1"].feature_view_projections} == {"user_profile", "item_profile"}
    assert len(services["clickprompt_v1"].feature_view_projections) == 4


def test_training_sets_split_by_time_with_manifest(small_home):
    ref = build_training_sets(SPEC, small_home)
    frames, loaded = load_training_sets(ref)
    manifest = loaded
    assert loaded.snapshot_hash == manifest.snapshot_hash and len(manifest.snapshot_hash) == 64
    assert sum(s.rows for s in manifest.splits.values()) == 20
    assert [manifest.splits[s].rows for s in ("train", "valid", "test")] == [len(frames[s]) for s in ("train", "valid", "test")]
    assert frames["train"].event_timestamp.max() < frames["valid"].event_timestamp.min()
    assert frames["valid"].event_timestamp.max() < frames["test"].event_timestamp.min()
    train = frames["train"]
    assert manifest.splits["train"].label_rate == pytest.approx(train.label.mean())
    row = train[(train.user_id == 1)].iloc[0]
    assert row.occupation == "technician" and row.zip_code == "85711"
    assert row.user_text == "User ID is 1. Gender is male. Age is 24. Job is technician. Zipcode is 85711."
    toy = train[train.item_id == 1].iloc[0]
    assert list(toy.genres) == ["Animation", "Children's", "Comedy"] and toy.title == "Toy Story"


def _add_profile_version(paths, user_id: int, occupation: str, valid_from: datetime) -> None:
    """A later version of one user's profile, as a changed upstream profile would arrive."""
    with connect(paths.warehouse) as con:
        con.execute(
            "INSERT INTO users SELECT user_id, gender, age, ?, zip_code, ? FROM users WHERE user_id = ?",
            [occupation, valid_from, user_id],
        )
        con.execute(f"CREATE OR REPLACE TABLE user_text AS {text_sql(SPEC, 'user')}")
        export_snapshots(con, SPEC, paths.snapshots)


def test_point_in_time_join_sees_the_version_valid_at_each_event(small_home):
    # user 1 rates on days 6..10; the profile changes at the start of day 8
    change = datetime.fromtimestamp(DAY0 + 8 * DAY, tz=timezone.utc)
    _add_profile_version(small_home, 1, "writer", change)
    frames, _ = load_training_sets(build_training_sets(SPEC, small_home, fractions=(0.5, 0.25, 0.25)))
    events = pd.concat(frames.values())
    user1 = events[events.user_id == 1].sort_values("event_timestamp")
    before = user1[user1.event_timestamp < change]
    after = user1[user1.event_timestamp >= change]
    assert len(before) == 2 and len(after) == 3
    assert set(before.occupation) == {"technician"} and set(after.occupation) == {"writer"}
    assert all("Job is technician." in t for t in before.user_text)
    assert all("Job is writer." in t for t in after.user_text)
    assert set(events[events.user_id == 2].occupation) == {"other"}  # other users untouched


def test_profiles_never_expire_as_of_much_later(small_home):
    """An as-of lookup decades after the last profile version still sees it (as the online store does)."""
    store = open_store(small_home)
    entity = pd.DataFrame({"user_id": [3], "item_id": [2], "event_timestamp": [pd.Timestamp("2026-11-01", tz="UTC")]})
    row = historical_features(store, entity, "ctr_v1").iloc[0]
    assert row.occupation == "writer" and row.title == "GoldenEye"


def test_materialize_then_online_lookup_returns_warehouse_values(small_home, capsys):
    materialize(SPEC, small_home)
    out, err = capsys.readouterr()  # Feast's banner is not a command's output: `... --json | jq` stays parseable
    assert out == "" and "Materializing" in err
    assert "\x1b[" not in err and re.search(r"Materializing \d+ feature views from ", err), err  # no colour codes in a log
    got = online_features(small_home, [{"user_id": 3, "item_id": 2}, {"user_id": 999, "item_id": 1}])
    assert got["occupation"] == ["writer", None] and got["age"] == [23, None]
    assert got["title"] == ["GoldenEye", "Toy Story"]
    assert list(got["genres"][0]) == ["Action", "Adventure", "Thriller"]
    assert got["user_text"][0] == "User ID is 3. Gender is male. Age is 23. Job is writer. Zipcode is 32067."


def test_online_store_serves_the_latest_profile_version(small_home):
    _add_profile_version(small_home, 1, "writer", datetime(1998, 1, 1, tzinfo=timezone.utc))
    materialize(SPEC, small_home)
    assert online_features(small_home, [{"user_id": 1, "item_id": 1}])["occupation"] == ["writer"]


@pytest.mark.slow
def test_real_movielens_100k_training_sets(real_ml100k_ref):
    frames, manifest = load_training_sets(real_ml100k_ref)
    assert sum(len(f) for f in frames.values()) == 100_000
    assert manifest.splits["train"].rows == pytest.approx(80_000, rel=0.01)
    assert 0.5 < manifest.splits["train"].label_rate < 0.6  # 55% of ML-100K ratings are >= 4
    train = frames["train"]
    u196 = train[train.user_id == 196].iloc[0]
    assert (u196.gender, u196.age, u196.occupation, u196.zip_code) == ("M", 49, "writer", "55105")
    kolya = pd.concat(frames.values()).query("item_id == 242").iloc[0]
    assert kolya.item_text == "Movie ID is 242. Title is Kolya. Release year is 1996. Film genre is Comedy."
    assert frames["test"].event_timestamp.min() > train.event_timestamp.max()


def test_importing_feast_leaves_the_warning_filters_alone():
    """Feast's modules put simplefilter("once", DeprecationWarning) in front of the process's filters
    when imported; through this package they are put back, so the CLI's "ignore" keeps third-party
    deprecations (ibis, GX) out of its logs."""
    import subprocess
    import sys

    code = (
        "import warnings\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "before = list(warnings.filters)\n"
        "import feature_repo.definitions, feature_repo.online, feature_repo.store, feature_repo.training_sets\n"
        "import feast.feature_store, feast.infra.offline_stores.duckdb, feast.infra.online_stores.sqlite\n"
        "print([f[0] + ' ' + f[2].__name__ for f in warnings.filters if f not in before])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO_ROOT).stdout
    assert out.strip() == "[]"
