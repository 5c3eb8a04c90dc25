"""Feast's Spark offline store (pyspark in local mode, Java from the distribution) against the DuckDB
default on real MovieLens-100K: the point-in-time training sets equal row for row, a later profile
version included, and the text view rendered by Spark SQL equals DuckDB's."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import pandas as pd
import pytest

from core.backends import Backends, spark_session
from core.settings import Paths
from core.spec import load_spec
from feature_repo.online import materialize, online_features
from feature_repo.store import apply, open_store
from feature_repo.training_sets import build_training_sets, load_training_sets
from ingestion.text_sql import render_spark, text_sql
from ingestion.warehouse import connect, export_snapshots, ingest, rerender_text
from tests.engines.conftest import plain, require_module, require_program
from validation import gate

pytestmark = pytest.mark.engines
SPEC = load_spec("movielens-100k")
CHANGE = datetime(1998, 1, 1, tzinfo=timezone.utc)  # user 13's profile changes mid-way through their ratings
SPARK = Backends(offline_store="spark", spark_master="local[2]")


@pytest.fixture(scope="module")
def spark_ready():
    require_module("pyspark", "spark")
    require_program("java", "default-jre-headless")
    return spark_session(SPARK)


@pytest.fixture(scope="module")
def ml100k_home(real_ml100k_raw, tmp_path_factory) -> Paths:
    """Real ML-100K ingested, with a second version of user 13's profile valid from CHANGE."""
    home = Paths(tmp_path_factory.mktemp("spark_home"))
    ingest(SPEC, real_ml100k_raw, home.warehouse, home.snapshots, gate)
    with connect(home.warehouse) as con:
        con.execute("INSERT INTO users SELECT user_id, gender, age, 'writer', zip_code, ? FROM users WHERE user_id = 13",
                    [CHANGE])
        con.execute(f"CREATE OR REPLACE TABLE user_text AS {text_sql(SPEC, 'user')}")
        export_snapshots(con, SPEC, home.snapshots)
    return home


def _copy_home(home: Paths, folder) -> Paths:
    other = Paths(folder)
    shutil.copytree(home.data, other.data)
    shutil.rmtree(other.feast, ignore_errors=True)
    return other


def test_spark_training_sets_equal_duckdbs_row_for_row(spark_ready, ml100k_home, tmp_path):
    duck, spark = _copy_home(ml100k_home, tmp_path / "duckdb"), _copy_home(ml100k_home, tmp_path / "spark")
    apply(SPEC, duck, backends=Backends())
    want_ref = build_training_sets(SPEC, duck, store=open_store(duck, Backends()))
    store = open_store(spark, SPARK)
    apply(SPEC, spark, store=store, backends=SPARK)
    assert {type(fv.batch_source).__name__ for fv in store.list_feature_views()} == {"SparkSource"}
    got_ref = build_training_sets(SPEC, spark, store=store)
    a, want = load_training_sets(want_ref)
    b, got = load_training_sets(got_ref)
    assert (got.offline_store, want.offline_store) == ("spark", "duckdb")
    assert got.splits == want.splits and got.features == want.features
    assert got_ref.identity == want_ref.identity  # the same inputs: the same build, whichever engine joined
    for split in ("train", "valid", "test"):
        assert list(b[split].columns) == list(a[split].columns)
        pd.testing.assert_frame_equal(b[split], a[split], check_dtype=True)
    events = pd.concat(b.values())
    assert len(events) == 100_000
    user13 = events[events.user_id == 13]
    before, after = user13[user13.event_timestamp < CHANGE], user13[user13.event_timestamp >= CHANGE]
    assert len(before) > 0 and len(after) > 0  # the change falls inside user 13's ratings
    assert set(before.occupation) == {"educator"} and set(after.occupation) == {"writer"}
    assert all("Job is writer." in t for t in after.user_text) and not any("writer" in t for t in before.user_text)


def test_spark_sql_renders_the_text_view_as_duckdb_does(spark_ready, ml100k_home, tmp_path):
    frames = render_spark(spark_ready, SPEC, ml100k_home.snapshots)
    for entity in ("user", "item"):
        name, key = SPEC.text_column(entity), SPEC.entities[entity].key
        want = pd.read_parquet(ml100k_home.snapshots / f"{name}.parquet").sort_values([key, "event_timestamp"])
        got = frames[name].toPandas().sort_values([key, "event_timestamp"])
        assert len(got) == len(want) > 900
        assert got[name].tolist() == want[name].tolist(), name
        assert got[key].tolist() == want[key].tolist()

    # the render-text path on Spark commits the same tables: the same snapshot hash
    home = _copy_home(ml100k_home, tmp_path / "render")
    before = (home.snapshots / "manifest.json").read_text()
    rerender_text(SPEC, home.warehouse, home.snapshots, gate, spark=spark_ready)
    import json
    assert json.loads((home.snapshots / "manifest.json").read_text())["snapshot_hash"] == json.loads(before)["snapshot_hash"]


def test_materialize_from_spark_gives_the_duckdb_online_values(spark_ready, ml100k_home, tmp_path):
    duck, spark = _copy_home(ml100k_home, tmp_path / "duckdb"), _copy_home(ml100k_home, tmp_path / "spark")
    apply(SPEC, duck, backends=Backends())
    materialize(SPEC, duck, store=open_store(duck, Backends()))
    store = open_store(spark, SPARK)
    apply(SPEC, spark, store=store, backends=SPARK)
    materialize(SPEC, spark, store=store)
    rows = [{"user_id": u, "item_id": i} for u in (1, 13, 196, 943) for i in (1, 242, 1682)]
    want = online_features(duck, rows, "clickprompt_v1", store=open_store(duck, Backends()))
    got = online_features(spark, rows, "clickprompt_v1", store=store)
    assert plain(got) == plain(want)
    assert got["occupation"][3] == "writer"  # user 13's latest version
