"""A pipeline run is an MLflow run: its params, metrics, validation curve, tags and artifacts equal
what the run folder recorded, read back from the project's MLflow store with MlflowClient."""

from __future__ import annotations

import json
import math

from mlflow import MlflowClient

from flows.train_pipeline import summary_table, train_pipeline
from serving.artifacts import code_version
from serving.tracking import TRAINING_EXPERIMENT, flatten, tracking_uri


def test_pipeline_run_is_an_mlflow_run_with_the_run_folders_values(flow_home, small_pipeline, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    summary = train_pipeline(**small_pipeline, stages=["baseline"], to_registry=False)
    run_dir = flow_home.runs / summary["run_id"]
    recorded = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    training_set = json.loads((run_dir / "training_set.json").read_text())

    assert tracking_uri(flow_home) == f"sqlite:///{flow_home.home / 'mlruns.db'}"
    mlc = MlflowClient(tracking_uri=tracking_uri(flow_home))
    runs = mlc.search_runs([mlc.get_experiment_by_name(TRAINING_EXPERIMENT).experiment_id])
    assert [r.info.run_id for r in runs] == [summary["mlflow_run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == summary["run_id"]
    assert run.data.params == {k: v for k, v in flatten(config).items()}
    assert run.data.params["baseline.epochs"] == str(config["baseline"]["epochs"])

    base = recorded["stages"]["baseline"]
    m = run.data.metrics
    # NaN figures (AUC on a one-class test split of the small data) are left out, never logged as NaN
    assert m.get("baseline.test_auc", math.nan) == base["test"]["auc"] or math.isnan(base["test"]["auc"])
    assert ("baseline.test_auc" in m) != math.isnan(base["test"]["auc"])
    assert m["baseline.test_logloss"] == base["test"]["logloss"] and m["baseline.test_n"] == base["test"]["n"]
    assert m["baseline.valid_auc"] == base["valid_auc"]
    assert m["baseline.rows"] == base["trained_on"]["rows"] and m["baseline.epochs"] == base["trained_on"]["epochs"]
    assert m["baseline.samples_per_s"] == base["fit"]["samples_per_s"] and m["baseline.seconds"] == base["seconds"]
    curve = mlc.get_metric_history(run.info.run_id, "baseline.valid.auc")
    assert [(p.step, p.value) for p in curve] == [(h["step"], h["auc"]) for h in base["fit"]["history"]]
    assert len(curve) >= 1

    tags = run.data.tags
    assert tags["dataset"] == "movielens-100k" and tags["snapshot_hash"] == recorded["snapshot_hash"]
    assert tags["training_set"] == training_set["manifest"]["identity"]
    assert tags["training_set_hash"] == recorded["training_set_hash"]
    assert tags["code_version"] == code_version() and tags["device"] == "cpu"
    artifacts = {a.path for a in mlc.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "training_set.json"} <= artifacts
    assert f"MLflow run {summary['mlflow_run_id']} (experiment clickprompt-training in {tracking_uri(flow_home)}; " \
           "any MLflow UI reads it" in summary_table(summary)  # where it is, whether or not `clickprompt ui` runs here

    # the same finished run again (every stage cached): still one MLflow run
    again = train_pipeline(**small_pipeline, stages=["baseline"], to_registry=False)
    assert again["mlflow_run_id"] == summary["mlflow_run_id"]
    assert len(mlc.search_runs([run.info.experiment_id])) == 1


def test_a_run_folder_that_gains_a_stage_updates_its_mlflow_run(flow_home, small_pipeline, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = train_pipeline(**small_pipeline, stages=["baseline"], to_registry=False)
    mlc = MlflowClient(tracking_uri=tracking_uri(flow_home))
    exp = mlc.get_experiment_by_name(TRAINING_EXPERIMENT).experiment_id
    before = mlc.get_run(first["mlflow_run_id"])
    assert not any(k.startswith("finetune-ctr-only.") for k in before.data.metrics)

    # the same config and training set, so the same run folder: one more stage trained into it
    more = train_pipeline(**small_pipeline, stages=["baseline", "finetune-ctr-only"], to_registry=False)
    assert more["run_id"] == first["run_id"]
    assert more["mlflow_run_id"] == first["mlflow_run_id"]
    assert [r.info.run_id for r in mlc.search_runs([exp])] == [first["mlflow_run_id"]]
    run_dir = flow_home.runs / more["run_id"]
    recorded = json.loads((run_dir / "metrics.json").read_text())
    after = mlc.get_run(more["mlflow_run_id"])
    ctr = recorded["stages"]["finetune-ctr-only"]
    assert after.data.metrics["finetune-ctr-only.test_logloss"] == ctr["test"]["logloss"]
    assert after.data.metrics["finetune-ctr-only.rows"] == ctr["trained_on"]["rows"]
    assert after.data.params == before.data.params
    # the baseline, unchanged, was not logged twice; the artifact is the run folder's metrics.json now
    history = mlc.get_metric_history(after.info.run_id, "baseline.test_logloss")
    assert [p.value for p in history] == [recorded["stages"]["baseline"]["test"]["logloss"]]
    local = mlc.download_artifacts(after.info.run_id, "metrics.json", str(flow_home.home / "dl"))
    assert json.loads(open(local).read()) == recorded
    assert after.info.status == "FINISHED"
