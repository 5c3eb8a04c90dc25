"""Real flow runs on the small data set: a failure late in the pipeline, the re-run that resumes
there, and the data-quality gate stopping the pipeline before features or models change."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import datetime, timezone

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, TaskRunFilter, TaskRunFilterStartTime
from prefect.client.schemas.sorting import ArtifactSort

from flows.evaluate_model import METRICS_KEY
from flows.register_model import register_model
from flows.train_pipeline import latest_summary_path, summary_table, train_pipeline
from flows.validate_data import FAILURES_KEY, REPORT_KEY
from serving.registry import Registry

STAGES = ["baseline", "pretrain", "finetune-with-lm", "finetune-ctr-only"]


def _task_states_since(start: datetime) -> dict[str, list[str]]:
    """{task run name prefix: [state names]} of the task runs started after ``start``."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(start_time=TaskRunFilterStartTime(after_=start)))
    states: dict[str, list[str]] = {}
    for run in runs:
        name = run.name if run.name.startswith("train-") else run.name.rsplit("-", 1)[0]
        states.setdefault(name, []).append(run.state_name)
    return states


def _latest_artifact(key: str):
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                      sort=ArtifactSort.CREATED_DESC, limit=1)
    return found[0] if found else None


@pytest.fixture
def counted(monkeypatch):
    """Count the library calls behind the stages; ``fail`` names a training stage that crashes."""
    import feature_repo.training_sets as training_sets
    import ingestion.warehouse as warehouse
    import models.train.run as stages

    calls: Counter = Counter()
    fail: set[str] = set()

    def wrap(module, name: str, label=None):
        real = getattr(module, name)

        def counting(*args, **kwargs):
            key = label(*args) if label else name
            calls[key] += 1
            if key in fail:
                raise RuntimeError(f"simulated crash in {key}")
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counting)

    wrap(warehouse, "ingest")
    wrap(training_sets, "build_training_sets")
    wrap(stages, "run_training", label=lambda cfg, data, names, run_dir, plm=None: names[0])
    return calls, fail


def test_rerun_after_a_late_failure_resumes_at_the_failed_stage(flow_home, small_pipeline, counted):
    calls, fail = counted
    fail.add("finetune-ctr-only")
    first = train_pipeline(**small_pipeline, return_state=True)
    assert first.is_failed()
    assert calls == Counter({"ingest": 1, "build_training_sets": 1, **{s: 1 for s in STAGES}})
    run_dirs = list(flow_home.runs.iterdir())
    assert len(run_dirs) == 1  # the run id is derived from config and data: the re-run lands here too
    assert not (run_dirs[0] / "finetune-ctr-only" / "metrics.json").exists()
    pretrain_weights = (run_dirs[0] / "pretrain" / "model.safetensors").stat().st_mtime_ns

    fail.clear()
    started = datetime.now(timezone.utc)
    summary = train_pipeline(**small_pipeline)
    # Only the failed stage ran again; ingest, features and the finished stages came from the cache.
    assert calls == Counter({"ingest": 1, "build_training_sets": 1, **{s: 1 for s in STAGES},
                             "finetune-ctr-only": 2})
    assert (run_dirs[0] / "pretrain" / "model.safetensors").stat().st_mtime_ns == pretrain_weights
    states = _task_states_since(started)
    for name in ("ingest_raw", "apply_definitions", "training_sets", "materialize_online",
                 "train-baseline", "train-pretrain", "train-finetune-with-lm"):
        assert states[name] == ["Cached"], name
    assert states["train-finetune-ctr-only"] == ["Completed"] and states["register_and_promote"] == ["Completed"]
    # the text is rendered and gated once per data change, inside ingest: no second render or gate
    assert "render" not in states and "run_validation" not in states

    assert summary["run_id"] == run_dirs[0].name
    assert list(summary["variants"]) == STAGES
    assert summary["variants"]["finetune-ctr-only"]["test_n"] == 2
    assert summary["training_set"] == {"train": 16, "valid": 2, "test": 2}
    assert json.loads(latest_summary_path(flow_home).read_text())["run_id"] == summary["run_id"]
    merged = json.loads((run_dirs[0] / "metrics.json").read_text())
    assert list(merged["stages"]) == STAGES and merged["profile"] == "smoke"
    assert "finetune-ctr-only" in summary_table(summary)
    assert flow_home.online_store.exists()
    metrics_table = json.loads(_latest_artifact(METRICS_KEY).data)
    assert [r["stage"] for r in metrics_table] == STAGES

    # Registered once; two test rows of one class give no AUC, so the registry refuses to promote.
    registered = summary["registered"]
    assert (registered["version"], registered["promoted"], registered["production_version"]) == (1, False, None)
    assert "no auc" in registered["reason"]
    # On LogLoss (defined here) it is refused too: 0.70 on two rows is worse than a coin's ln 2, and
    # a model worse than no model is never served unforced. Registering is idempotent: v1 again.
    by_logloss = register_model(summary["run_id"], metric="logloss")
    assert (by_logloss["version"], by_logloss["promoted"], by_logloss["production_version"]) == (1, False, None)
    assert "is no better than a constant 0.5 (0.6931): not served" in by_logloss["reason"]
    cached_again = register_model(summary["run_id"], metric="logloss")  # cached: not registered again, and said so
    assert not by_logloss["earlier_run"] and cached_again == {**by_logloss, "earlier_run": True}
    registry = Registry(flow_home)
    registry.promote(1, metric="logloss", force=True)  # what a user who knows better does
    forced = register_model(summary["run_id"], metric="logloss")
    assert (forced["production_version"], forced["version_stage"]) == (1, "production")

    # another version promoted since: the cached decision is reported with the registry as it is now
    other = flow_home.runs / "other"
    shutil.copytree(run_dirs[0], other)
    (other / "finetune-ctr-only" / "model.safetensors").write_bytes(b"other weights")
    registry.promote(registry.register(other).version, metric="logloss", force=True)
    again = register_model(summary["run_id"], metric="logloss")
    assert (again["version"], again["promoted"], again["production_version"], again["version_stage"]) == (
        1, False, 2, "archived")
    table = summary_table({**summary, "registered": again})
    assert "registered finetune-ctr-only as version 1: not promoted (" in table and table.count("(archived now)") == 1
    assert f" (decided in an earlier run, {by_logloss['decided_at'][:10]} " in table
    assert "production model: ctr v2" in table


def test_failed_gate_stops_the_pipeline_before_features_and_models(flow_home, small_pipeline, tmp_path):
    """A row the parser accepts but the gate rejects (an event after the data set's range): ingest
    rolls back, the report is published, nothing downstream runs."""
    from tests.conftest import small_ratings, write_small_raw

    source = write_small_raw(tmp_path / "future", ratings=small_ratings() + ["1\t2\t5\t1900000000"])
    started = datetime.now(timezone.utc)
    state = train_pipeline(**{**small_pipeline, "source": str(source)}, return_state=True)
    assert state.is_failed()
    assert "event_timestamp" in state.message or "validation" in state.message.lower()
    for untouched in (flow_home.feast, flow_home.training_sets, flow_home.runs, latest_summary_path(flow_home)):
        assert not untouched.exists(), untouched

    report = _latest_artifact(REPORT_KEY)
    assert report.created >= started and "FAILED" in report.data and "interactions" in report.data
    failures = json.loads(_latest_artifact(FAILURES_KEY).data)
    late = [r for r in failures if (r["suite"], r["column"]) == ("interactions", "event_timestamp")]
    assert late and late[0]["unexpected_count"] == 1


def test_fetch_retries_a_network_error_but_not_a_bad_checksum(flow_home, monkeypatch):
    import ingestion.fetch as fetch
    from flows.ingest_data import fetch_raw

    calls: list[str] = []
    errors = [ConnectionError("package index hiccup"), None]

    def flaky(name, paths, source=None):
        calls.append(name)
        error = errors.pop(0)
        if error:
            raise error
        return paths.raw(name)

    monkeypatch.setattr(fetch, "fetch_dataset", flaky)
    quick = fetch_raw.with_options(retry_delay_seconds=0)
    assert quick("movielens-100k", flow_home) == str(flow_home.raw("movielens-100k")) and len(calls) == 2

    calls.clear()
    errors[:] = [fetch.ChecksumError("ml-100k.inter", "a" * 64, "b" * 64)] * 3
    state = quick("movielens-100k", flow_home, return_state=True)
    assert state.is_failed() and len(calls) == 1  # a damaged file is not fixed by fetching again
