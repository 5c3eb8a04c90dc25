"""One run folder, one MLflow run while its training stays the same (serving/tracking.py): a
stage gained or scored again updates the run; a stage trained again or another config is a new run;
a config changed and changed back is its first run again; runs logged before the digests existed
are adopted, not doubled; any path works in the search."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Param, RunTag

from core.io import sha256_file
from serving.tracking import (
    METRICS_SHA_TAG,
    RUN_DIR_KEY_TAG,
    RUN_DIR_TAG,
    TRAINING_EXPERIMENT,
    experiment_id,
    flatten,
    log_training_run,
    logged_run_of,
    tracking_uri,
)

CONFIG = {"profile": "smoke", "method": "clickprompt", "backbone": "dcnv2", "seed": 1, "baseline": {"epochs": 2}}


def _stage(auc: float, seconds: float, curve: list[float]) -> dict:
    return {"test": {"auc": auc, "logloss": 0.6, "n": 100}, "valid_auc": curve[-1], "seconds": seconds,
            "trained_on": {"rows": 800, "epochs": 2}, "config_hash": "c", "snapshot_hash": "s",
            "fit": {"seconds": seconds - 1, "samples_per_s": 80.0,
                    "history": [{"step": 10 * (i + 1), "auc": a} for i, a in enumerate(curve)]}}


def _write(run_dir: Path, stages: dict, config: dict = CONFIG) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "metrics.json").write_text(json.dumps({"config_hash": "c", "profile": "smoke", "method": "clickprompt",
                                                      "backbone": "dcnv2", "snapshot_hash": "s", "stages": stages}))


def _runs(paths) -> list:
    mlc = MlflowClient(tracking_uri=tracking_uri(paths))
    return mlc.search_runs([mlc.get_experiment_by_name(TRAINING_EXPERIMENT).experiment_id])


def test_gained_and_rescored_stages_update_the_run_and_a_retrained_stage_starts_a_new_one(paths, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = paths.runs / "it's-a-run"  # a quote in the path: never inside a filter string
    base = _stage(0.70, 10.0, [0.66, 0.69])
    _write(run_dir, {"baseline": base})
    first = log_training_run(paths, run_dir)
    assert log_training_run(paths, run_dir) == first  # the same state again

    ctr = _stage(0.71, 20.0, [0.67, 0.70])
    _write(run_dir, {"baseline": base, "finetune-ctr-only": ctr})  # a stage gained
    assert log_training_run(paths, run_dir) == first
    _write(run_dir, {"baseline": {**base, "seconds": 12.5}, "finetune-ctr-only": ctr})  # scored again: same curve
    assert log_training_run(paths, run_dir) == first
    mlc = MlflowClient(tracking_uri=tracking_uri(paths))
    run = mlc.get_run(first)
    assert run.data.metrics["finetune-ctr-only.test_auc"] == 0.71 and run.data.metrics["baseline.seconds"] == 12.5
    assert [p.value for p in mlc.get_metric_history(first, "baseline.seconds")] == [10.0, 12.5]
    assert [p.value for p in mlc.get_metric_history(first, "baseline.test_auc")] == [0.70]  # unchanged: once
    assert [(p.step, p.value) for p in mlc.get_metric_history(first, "baseline.valid.auc")] == [(10, 0.66), (20, 0.69)]
    assert len(_runs(paths)) == 1

    _write(run_dir, {"baseline": _stage(0.72, 11.0, [0.68]), "finetune-ctr-only": ctr})  # trained again
    retrained = log_training_run(paths, run_dir)
    assert retrained != first and len(_runs(paths)) == 2
    assert [(p.step, p.value) for p in mlc.get_metric_history(retrained, "baseline.valid.auc")] == [(10, 0.68)]
    assert mlc.get_run(first).data.metrics["baseline.test_auc"] == 0.70  # the old run keeps its figures
    assert log_training_run(paths, run_dir) == retrained

    _write(run_dir, {"baseline": _stage(0.72, 11.0, [0.68])}, {**CONFIG, "seed": 2})  # another config
    assert log_training_run(paths, run_dir) not in (first, retrained) and len(_runs(paths)) == 3


def test_a_config_changed_and_changed_back_is_its_first_run_again(paths, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = (paths.runs / "ab").resolve()
    mlc = MlflowClient(tracking_uri=tracking_uri(paths))
    exp = [experiment_id(mlc, paths, TRAINING_EXPERIMENT)]
    base = _stage(0.70, 10.0, [0.69])
    _write(run_dir, {"baseline": base})
    a = log_training_run(paths, run_dir)
    _write(run_dir, {"baseline": _stage(0.69, 10.0, [0.68])}, {**CONFIG, "baseline": {"epochs": 3}})
    b = log_training_run(paths, run_dir)
    assert b != a and logged_run_of(mlc, exp, run_dir).info.run_id == b

    _write(run_dir, {"baseline": base})  # back to config A, trained the same: run A holds this state
    assert log_training_run(paths, run_dir) == a and len(_runs(paths)) == 2
    assert logged_run_of(mlc, exp, run_dir).info.run_id == a  # what a version registered now links to
    _write(run_dir, {"baseline": base, "finetune-ctr-only": _stage(0.71, 20.0, [0.70])})
    assert log_training_run(paths, run_dir) == a  # a stage gained continues run A, not B
    assert mlc.get_run(a).data.metrics["finetune-ctr-only.test_auc"] == 0.71
    assert "finetune-ctr-only.test_auc" not in mlc.get_run(b).data.metrics
    assert logged_run_of(mlc, exp, run_dir).info.run_id == a and len(_runs(paths)) == 2

    # a stage added and not logged yet (or its logging failed): the run it continues, A, not the newest, B
    _write(run_dir, {"baseline": base, "finetune-ctr-only": _stage(0.71, 20.0, [0.70]),
                     "finetune-with-lm": _stage(0.72, 30.0, [0.71])})
    assert logged_run_of(mlc, exp, run_dir).info.run_id == a


def test_a_registered_version_links_to_the_run_that_holds_its_training(paths, monkeypatch):
    from serving.registry import Registry
    from tests.serving.test_model_registry import write_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = write_run(paths.runs / "linked", 0.71, 0.6).resolve()  # what the registry reads
    ctr = _stage(0.71, 20.0, [0.70])
    _write(run_dir, {"finetune-ctr-only": ctr})
    a = log_training_run(paths, run_dir)
    _write(run_dir, {"finetune-ctr-only": _stage(0.69, 20.0, [0.68])}, {**CONFIG, "seed": 2})
    b = log_training_run(paths, run_dir)
    _write(run_dir, {"finetune-ctr-only": ctr})  # back to A's config and training
    assert log_training_run(paths, run_dir) == a and b != a
    assert Registry(paths).register(run_dir).mlflow_run_id == a


def test_a_run_logged_before_the_digests_is_adopted_not_doubled(paths, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = (paths.runs / "older").resolve()
    base = _stage(0.70, 10.0, [0.69])
    _write(run_dir, {"baseline": base})
    mlc = MlflowClient(tracking_uri=tracking_uri(paths))
    exp = experiment_id(mlc, paths, TRAINING_EXPERIMENT)
    old = mlc.create_run(exp, run_name="older").info.run_id  # as the earlier code logged it: path, digest, params
    mlc.log_batch(old, tags=[RunTag(RUN_DIR_TAG, str(run_dir)),
                             RunTag(METRICS_SHA_TAG, sha256_file(run_dir / "metrics.json"))],
                  params=[Param(k, v) for k, v in flatten(CONFIG).items()])
    mlc.set_terminated(old)

    newer = mlc.create_run(exp, run_name="older").info.run_id  # ... and of another config, logged later
    mlc.log_batch(newer, tags=[RunTag(RUN_DIR_TAG, str(run_dir)), RunTag(METRICS_SHA_TAG, "0" * 64)],
                  params=[Param(k, v) for k, v in flatten({**CONFIG, "seed": 2}).items()])
    mlc.set_terminated(newer)

    assert log_training_run(paths, run_dir) == old  # the one that holds this state, not the newest
    assert mlc.get_run(old).data.tags[RUN_DIR_KEY_TAG]  # it carries the digests now ...
    _write(run_dir, {"baseline": base, "finetune-ctr-only": _stage(0.71, 20.0, [0.70])})
    assert log_training_run(paths, run_dir) == old  # ... so a stage gained later updates it
    assert mlc.get_run(old).data.metrics["finetune-ctr-only.test_auc"] == 0.71
    assert len(_runs(paths)) == 2


def test_failed_unknown_and_shrunken_states_start_a_new_run(paths, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = (paths.runs / "r").resolve()
    base, ctr = _stage(0.70, 10.0, [0.69]), _stage(0.71, 20.0, [0.70])
    _write(run_dir, {"baseline": base, "finetune-ctr-only": ctr})
    mlc = MlflowClient(tracking_uri=tracking_uri(paths))
    exp = experiment_id(mlc, paths, TRAINING_EXPERIMENT)
    legacy = mlc.create_run(exp, run_name="r").info.run_id  # an old-code run of another metrics.json
    mlc.log_batch(legacy, tags=[RunTag(RUN_DIR_TAG, str(run_dir)), RunTag(METRICS_SHA_TAG, "0" * 64)])
    mlc.set_terminated(legacy)
    first = log_training_run(paths, run_dir)
    assert first != legacy

    mlc.set_terminated(first, status="FAILED")  # a logging that failed: never taken up again
    second = log_training_run(paths, run_dir)
    assert second not in (first, legacy)

    _write(run_dir, {"baseline": base})  # a stage gone from the folder: the run no longer describes it
    third = log_training_run(paths, run_dir)
    assert third not in (first, second, legacy)
    assert "finetune-ctr-only.test_auc" not in mlc.get_run(third).data.metrics
    assert len(_runs(paths)) == 4
