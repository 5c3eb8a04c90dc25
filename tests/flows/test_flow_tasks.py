"""The flows' tasks and helpers without a flow run (``task.fn()``): library calls, cache keys,
typed parameters, reports."""

from __future__ import annotations

import json
import math

import duckdb
import pandas as pd
import pytest
from prefect.exceptions import ParameterTypeError

from core.settings import Paths
from core.spec import load_spec
from flows.build_features import _training_sets_key
from flows.common import folder_digest, snapshot_hash
from flows.evaluate_model import stage_rows
from flows.ingest_data import _ingest_key, ingest_raw
from flows.render_text import render
from flows.train_pipeline import summary_table, train_pipeline
from flows.training import _stage_key, default_run_id, train_config
from flows.validate_data import failure_rows, report_markdown
from models.train.run import finished_stage, read_run
from models.train.stages import default_stages
from tests.conftest import write_small_raw
from validation.runner import run_suites

DATASET = "movielens-100k"


SPEC = load_spec(DATASET)


def _ingest(paths: Paths) -> dict:
    write_small_raw(paths.raw(DATASET))
    return ingest_raw.fn(SPEC, paths)


def test_ingest_and_render_tasks_call_the_library(paths):
    report = _ingest(paths)
    assert report["rows_after"]["interactions"] == 20 and report["rejected"] == 0
    assert report["snapshot_hash"] == snapshot_hash(paths)
    rendered = render.fn(SPEC, paths)
    assert rendered == {"rows": {"user_text": 4, "item_text": 4}, "snapshot_hash": report["snapshot_hash"]}


def test_ingest_key_follows_the_raw_files_and_the_home(paths, tmp_path_factory):
    raw = write_small_raw(paths.raw(DATASET))
    params = {"spec": SPEC, "paths": paths, "quarantine": False}
    key = _ingest_key(None, params)
    assert key == _ingest_key(None, dict(params)) and key.startswith("ingest-")
    assert _ingest_key(None, {**params, "quarantine": True}) != key
    assert _ingest_key(None, {**params, "paths": Paths(tmp_path_factory.mktemp("other"))}) != key
    before = folder_digest(raw)
    (raw / "u.data").write_text((raw / "u.data").read_text() + "4\t4\t5\t880000000\n")
    assert folder_digest(raw) != before and _ingest_key(None, params) != key


def test_feature_and_stage_keys_follow_the_snapshot_and_upstream_weights(paths):
    _ingest(paths)
    cfg = train_config("smoke", "clickprompt", None, {})
    run_dir = paths.runs / "r1"
    ref = {"folder": "sets/a", "manifest_hash": "a" * 64}

    def stage_key(cfg, stage, ref=ref):
        return _stage_key(None, {"cfg": cfg, "paths": paths, "run_dir": run_dir, "stage": stage, "ref": ref})

    keys = {s: stage_key(cfg, s) for s in ("baseline", "finetune-ctr-only")}
    sets = {"spec": SPEC, "paths": paths, "service": "clickprompt_v1", "fractions": (0.8, 0.1, 0.1),
            "policy": "global-temporal", "window": None}
    features = _training_sets_key(None, sets)
    # a retrain's window and another split policy are other training sets: other cache entries
    assert _training_sets_key(None, {**sets, "window": [None, "1998-03-01T00:00:00+00:00"]}) != features
    assert _training_sets_key(None, {**sets, "policy": "random"}) != features
    # a stage trained on another training set (another manifest) is another cache entry
    assert stage_key(cfg, "baseline", {"folder": "sets/b", "manifest_hash": "b" * 64}) != keys["baseline"]
    (run_dir / "pretrain").mkdir(parents=True)
    (run_dir / "pretrain" / "model.safetensors").write_bytes(b"weights")  # a (re)trained PA-MLM checkpoint
    assert stage_key(cfg, "baseline") == keys["baseline"]
    trained = stage_key(cfg, "finetune-ctr-only")
    assert trained != keys["finetune-ctr-only"]
    (run_dir / "pretrain" / "metrics.json").write_text("{}")  # scored again, the same weights: the same entry
    assert stage_key(cfg, "finetune-ctr-only") == trained
    other = train_config("smoke", "clickprompt", None, {"baseline.epochs": 1})
    assert stage_key(other, "baseline") != keys["baseline"]

    with duckdb.connect(str(paths.warehouse)) as con:  # new data -> new snapshot hash
        con.execute("UPDATE interactions SET rating = 1 WHERE user_id = 2")
    render.fn(SPEC, paths)
    assert _training_sets_key(None, sets) != features


def test_run_id_is_derived_from_config_and_data(paths):
    _ingest(paths)
    cfg = train_config("smoke", "clickprompt", "dnn", {"pretrain.epochs": 1})
    assert (cfg.backbone, cfg.method, cfg.pretrain.epochs, cfg.profile) == ("dnn", "clickprompt", 1, "smoke")
    ref = {"folder": str(paths.training_sets / "clickprompt_v1" / "0123456789abcdef"), "manifest_hash": "a" * 64}
    run_id = default_run_id(cfg, ref)
    assert run_id.startswith("smoke-clickprompt-dnn-") and run_id == default_run_id(cfg, ref)
    assert default_run_id(train_config("smoke", "clickprompt", "dnn", {}), ref) != run_id
    window = {**ref, "folder": str(paths.training_sets / "clickprompt_v1" / "fedcba9876543210")}
    assert default_run_id(cfg, window) != run_id  # another training set (a retrain's window): another run
    with pytest.raises(ValueError):
        train_config("smoke", "clickprompt", None, {"pretrain.epoch": 1})  # typo: rejected
    assert default_stages("baseline") == ["baseline"] and default_stages("lm_only") == ["finetune-lm-only"]
    assert finished_stage(paths.runs / run_id, "baseline", cfg, ref["manifest_hash"]) is None


@pytest.mark.parametrize("bad", [
    {"profile": "huge"},
    {"method": "gpt"},
    {"stages": ["pretrain", "finetune"]},
    {"run_id": "../outside"},
    {"dataset": "movielens-9m"},
    {"backbone": "DCN V2"},
])
def test_pipeline_parameters_are_validated(bad):
    with pytest.raises(ParameterTypeError):
        train_pipeline.validate_parameters(bad)


def test_pipeline_parameters_accept_the_documented_values():
    params = train_pipeline.validate_parameters({
        "profile": "smoke", "method": "alt", "backbone": "autoint", "run_id": "weekly-2024.01",
        "stages": ["baseline", "finetune-ctr-only"], "overrides": {"pretrain.epochs": 2},
    })
    assert params["stages"] == ["baseline", "finetune-ctr-only"] and params["method"] == "alt"


def test_validation_report_renders_as_markdown_and_rows():
    spec = load_spec(DATASET)
    bad = pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "rating": [9, 3], "label": [1, 0],
                        "event_timestamp": pd.to_datetime(["1997-10-01", "1997-10-02"], utc=True)})
    report = run_suites(spec, {"interactions": bad}).to_dict()
    rows = failure_rows(report)
    rating = next(r for r in rows if r["column"] == "rating")
    assert (rating["suite"], rating["unexpected_count"], json.loads(rating["examples"])) == ("interactions", 1, [9])
    text = report_markdown(report, DATASET)
    assert text.startswith(f"# Data quality: {DATASET} FAILED") and "| interactions | **FAIL** |" in text
    assert "expect_column_values_to_be_between" in text


def test_run_metrics_are_merged_and_tabulated(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "baseline").mkdir(parents=True)
    (run_dir / "pretrain").mkdir()
    (run_dir / "config.json").write_text(json.dumps({"profile": "smoke", "method": "clickprompt", "backbone": "dcnv2"}))
    common = {"config_hash": "c" * 16, "snapshot_hash": "s" * 64, "fit": {"seconds": 2.0}}
    (run_dir / "baseline" / "metrics.json").write_text(json.dumps(
        {**common, "test": {"auc": 0.75, "logloss": 0.55, "n": 10}, "valid_auc": float("nan")}))
    (run_dir / "pretrain" / "metrics.json").write_text(json.dumps(
        {**common, "valid": {"mlm_acc": 0.5, "mlm_acc_zero_prompts": 0.4}}))
    (run_dir / "finetune-lm-only").mkdir()  # a stage the method switch added: listed after the others
    (run_dir / "finetune-lm-only" / "metrics.json").write_text(json.dumps(
        {**common, "test": {"auc": 0.6, "logloss": 0.65, "n": 10}, "valid_auc": 0.61}))
    run = read_run(run_dir)
    assert list(run["stages"]) == ["baseline", "pretrain", "finetune-lm-only"] and run["backbone"] == "dcnv2"
    rows = {r.stage: r.to_dict() for r in stage_rows(run["stages"])}
    assert rows["baseline"]["test_auc"] == 0.75 and rows["baseline"]["valid_auc"] is None  # NaN -> None
    assert rows["pretrain"]["mlm_acc"] == 0.5 and rows["pretrain"]["test_auc"] is None
    assert rows["pretrain"]["alignment"] == "masked-token acc 0.5000 with prompts, 0.4000 zeroed"
    assert not any(isinstance(v, float) and math.isnan(v) for r in rows.values() for v in r.values())
    summary = {"run_id": "run", "method": "clickprompt", "backbone": "dcnv2", "profile": "smoke",
               "dataset": DATASET, "training_set": {"train": 8, "valid": 1, "test": 1}, "variants": rows,
               "registered": {"stage": "finetune-ctr-only", "version": 3, "promoted": True, "reason": ""}}
    table = summary_table(summary)
    assert "baseline" in table and "0.7500" in table and "version 3: promoted" in table
    assert "pretrain: masked-token acc 0.5000" in table
    assert "note:" not in table  # no finetune-ctr-only row to compare
    for ctr_only, noted in ((0.70, True), (0.75, False), (0.76, False)):
        variants = {**rows, "finetune-ctr-only": {**rows["baseline"], "stage": "finetune-ctr-only", "test_auc": ctr_only}}
        table = summary_table({**summary, "variants": variants})
        assert ("note: the registered finetune-ctr-only (test AUC 0.7000) is below this run's plain dcnv2 baseline "
                "(0.7500) on the same test rows, one seed; `clickprompt bench` compares them over seeds, and "
                "`clickprompt registry register --run artifacts/runs/run --stage baseline` registers the baseline "
                "as a candidate to promote" in table) is noted
        assert ("note:" in table) is noted  # and no other note


def test_cli_pipeline_rejects_bad_parameters_before_starting_prefect(paths, capsys):
    from cli import main

    assert main(["pipeline", "--profile", "huge", "--stages", "pretrain,nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'huge'" in err and "unknown stage 'nope'" in err
    assert not (paths.home / ".prefect").exists()  # no temporary server was started


def test_cli_pipeline_show_records_the_online_prediction(paths, capsys):
    from cli import main
    from core.io import write_json_atomic
    from flows.train_pipeline import latest_summary_path

    rows = {"finetune-ctr-only": {"stage": "finetune-ctr-only", "test_auc": 0.71, "test_logloss": 0.62,
                                  "mlm_acc": None, "mlm_acc_zero_prompts": None, "seconds": 4.0}}
    write_json_atomic(latest_summary_path(paths), {
        "run_id": "r", "method": "clickprompt", "backbone": "dcnv2", "profile": "demo", "dataset": DATASET,
        "training_set": {"train": 8, "valid": 1, "test": 1}, "variants": rows,
        "registered": {"stage": "finetune-ctr-only", "version": 1, "promoted": True, "reason": "first"}})
    response = paths.home / "prediction.json"
    response.write_text(json.dumps({"click_probability": 0.77, "model_version": 1}))
    assert main(["pipeline", "--show", "--prediction", str(response)]) == 0
    out = capsys.readouterr().out
    assert "0.7100" in out and "promoted to production" in out and '"click_probability": 0.77' in out
    assert json.loads(latest_summary_path(paths).read_text())["online_prediction"]["model_version"] == 1
