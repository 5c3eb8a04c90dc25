"""The benchmark flow's fan-out on Prefect's Dask task runner (a real local Dask cluster of 2
worker processes) gives the local runner's results, run for run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.results import MEMORY_FILE
from core.backends import Backends
from flows.run_benchmark import run_benchmark
from flows.runners import task_runner
from tests.conftest import write_small_raw
from tests.engines.conftest import require_module
from tests.flows.conftest import SMOKE_OVERRIDES
from tests.flows.test_benchmark_flow import _home_with_training_sets, _ratings_both_labels_in_test

pytestmark = pytest.mark.engines


def test_dask_runner_runs_the_benchmark_plan_with_the_local_runners_results(flow_home, tmp_path, monkeypatch):
    require_module("prefect_dask", "dask")
    _home_with_training_sets(flow_home, write_small_raw(tmp_path / "raw", _ratings_both_labels_in_test()))
    params = dict(profile="smoke", seeds=[1, 2], only=["base-dcnv2", "cp-dcnv2"], overrides=SMOKE_OVERRIDES,
                  time_data=False)
    local = json.loads(Path(run_benchmark(**params, out=str(tmp_path / "local"))).read_text())

    monkeypatch.setenv("CLICKPROMPT_TASK_RUNNER", "dask")
    monkeypatch.setenv("CLICKPROMPT_DASK_WORKERS", "2")
    runner = task_runner(Backends.from_env())
    assert type(runner).__name__ == "DaskTaskRunner"
    on_dask = run_benchmark.with_options(task_runner=runner)
    dask = json.loads(Path(on_dask(**params, out=str(tmp_path / "dask"))).read_text())

    assert list(dask["models"]) == list(local["models"]) == [
        "DCNv2", "ClickPrompt CTR-only (DCNv2)", "ClickPrompt with LM"]
    for label, model in local["models"].items():
        for seed in ("1", "2"):
            got, want = dask["models"][label]["per_seed"][seed], model["per_seed"][seed]
            assert got["auc"] == pytest.approx(want["auc"], abs=1e-6), (label, seed)
            assert got["logloss"] == pytest.approx(want["logloss"], abs=1e-6), (label, seed)
    # the runs really ran in Dask's worker processes, not in the flow's (locally: in the flow's)
    def pids(out: str) -> set:
        return {json.loads(p.read_text())["pid"] for p in (tmp_path / out / "runs").glob(f"*/{MEMORY_FILE}")}
    assert pids("local") == {os.getpid()}
    assert len(pids("dask")) >= 1 and os.getpid() not in pids("dask")
