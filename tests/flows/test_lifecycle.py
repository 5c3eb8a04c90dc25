"""The life cycle as scheduled flows, on real MovieLens-100K replayed as arrivals (real Prefect,
DuckDB, GX, Feast): the nightly update takes the batches and follows with the online store; the
weekly retrain judges its challenger and the production model on ONE shared recent window, stores
both figures with the decision, and promotes only on the margin."""

from __future__ import annotations

import pytest

from core.spec import load_spec
from flows.retrain_model import retrain_model
from flows.update_data import RejectedBatches, update_data
from ingestion.replay import parse_period, replay
from serving.registry import Registry

pytestmark = pytest.mark.slow

SPEC = load_spec("movielens-100k")
# the plain backbone alone, smoke-sized: the decision logic is what is tested, not the model
RETRAIN = dict(profile="smoke", stages=["baseline"], holdout_days=7, overrides={"baseline.epochs": 1})


def test_nightly_updates_and_weekly_retrains_judge_on_one_shared_window(paths, prefect_harness, real_ml100k_raw):
    written = replay(SPEC, real_ml100k_raw, paths.inbox(SPEC.name), parse_period("7d"), 3)

    first = update_data(max_batches=2)  # the initial load and week 1
    assert [b["status"] for b in first["batches"]] == ["accepted", "accepted"]
    assert first["online"]["mode"] == "full" and first["trend"]["batches"] == 2
    assert (paths.artifacts / "data_quality" / SPEC.name / "data_quality.png").read_bytes()[:4] == b"\x89PNG"

    r1 = retrain_model(**RETRAIN)
    j1 = r1["judgement"]
    assert j1["promoted"] and j1["production_version"] == r1["challengers"][0]  # no champion yet
    assert j1["window_start"] >= r1["window"]["holdout_start"][:19]
    assert r1["window"]["manifest"]["splits"]["test"]["end"] < r1["window"]["holdout_start"]  # held out of training

    second = update_data(max_batches=1)  # week 2
    assert second["online"]["mode"] == "incremental"
    r2 = retrain_model(**RETRAIN, margin=0.5)  # no model beats another by 0.5 AUC
    j2 = r2["judgement"]
    roles = {s["role"]: s for s in j2["scores"]}
    assert set(roles) == {"champion", "challenger"} and roles["champion"]["version"] == r1["challengers"][0]
    assert 0.5 < roles["champion"]["auc"] < 0.9 and 0.5 < roles["challenger"]["auc"] < 0.9
    assert not j2["promoted"] and j2["production_version"] == r1["challengers"][0]
    assert j2["window_start"] > j1["window_start"]  # the window moved with the data
    decision = Registry(paths).promotions()[-1]
    assert decision["candidate_value"] == roles["challenger"]["auc"]  # both figures stored, same window
    assert decision["production_value"] == roles["champion"]["auc"]
    assert decision["margin"] == 0.5 and "one shared window" in decision["basis"]
    assert f"{j2['rows']:,} rows" in decision["basis"]

    (written[3].folder / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                                     "1\t1\t7\t890000000\n")  # a broken delivery: rating 7
    with pytest.raises(RejectedBatches, match="ml-100k.inter line 2, field rating"):
        update_data()
