"""The benchmark suite as a flow: gate the data, time the data path, train every run per seed, report.

    validate_data -> data-path timings -> one task per (run, seed) -> results.json + report.md + plots

What trains and how it is compared lives in benchmarks/suite.py; ``make bench`` and
``clickprompt bench`` run this flow. Each training run is its own task, so the Prefect UI shows
progress run by run, and the report becomes a markdown artifact. Passing the ``out`` folder of a
failed attempt resumes it: runs that finished there (same config) are taken from their folders.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import AfterValidator, Field

from benchmarks import datapath
from benchmarks.results import train_run, write_results
from benchmarks.suite import BENCH_PROFILES, RunSpec, SuitePlan, plan_suite, suite
from core.backends import Backends
from core.settings import Paths
from core.spec import SplitPolicy
from core.training_data import TrainingData, TrainingSetRef, load_training_data
from feature_repo.training_sets import latest_training_set
from flows.common import project_paths
from flows.runners import fans_out, gather, task_runner
from flows.validate_data import validate_data

REPORT_KEY = "benchmark-report"
BENCH_EXPERIMENT = "clickprompt-benchmark"  # MLflow: one run per (run, seed), one for the report
log = logging.getLogger("clickprompt.bench")


def _known_bench_profile(name: str) -> str:
    if name not in BENCH_PROFILES:
        raise ValueError(f"unknown benchmark profile {name!r}; known: {sorted(BENCH_PROFILES)}")
    return name


def _known_run(name: str) -> str:
    known = [r.name for r in suite()[0]]
    if name not in known:
        raise ValueError(f"unknown run {name!r}; known: {known}")
    return name


BenchProfile = Annotated[str, AfterValidator(_known_bench_profile),
                         Field(description="benchmark profile (benchmarks/suite.py)")]
RunName = Annotated[str, AfterValidator(_known_run), Field(description="a run of the suite, e.g. cp-dcnv2")]


def default_out(paths: Paths, profile: str) -> Path:
    return paths.artifacts / "bench" / f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{profile}"


# No Prefect caching: a SuitePlan / RunSpec (dict fields) cannot be hashed by the default policy, and
# resuming is the run folders' job (results.train_run reuses a run that finished with the same config).
@task(task_run_name="time the data path", cache_policy=NO_CACHE)
def time_data_path(dataset: str, paths: Paths) -> dict[str, float]:
    return datapath.stage_times(dataset, paths.raw(dataset))


@task(task_run_name="train {run.name} seed {seed}", cache_policy=NO_CACHE)
def train(plan: SuitePlan, run: RunSpec, seed: int, data: TrainingData, paths: Paths) -> dict:
    from serving.tracking import log_training_run

    summary = train_run(plan, run, seed, data, paths)
    tags = {"benchmark": plan.out.name, "benchmark_profile": plan.profile, "benchmark_run": run.name, "seed": str(seed)}
    summary["mlflow_run_id"] = log_training_run(paths, plan.run_dir(run, seed), experiment=BENCH_EXPERIMENT, tags=tags)
    return summary


@task(cache_policy=NO_CACHE)
def report(plan: SuitePlan, metrics: dict, data: TrainingData, paths: Paths, seconds: float,
           data_times: dict | None) -> str:
    from serving.tracking import log_report

    results = write_results(plan, metrics, data, paths, seconds, data_times)
    log_report(paths, results.parent, BENCH_EXPERIMENT, {"benchmark": plan.out.name, "benchmark_profile": plan.profile})
    create_markdown_artifact((results.parent / "report.md").read_text(encoding="utf-8"), key=REPORT_KEY,
                             description=f"benchmark ({plan.profile} profile) in {results.parent}")
    return str(results)


def bench_training_set(paths: Paths, split: str | None, folder: str | None) -> TrainingSetRef:
    if folder:
        return TrainingSetRef.of(folder)
    newest = latest_training_set(paths)
    if split is None:
        return newest
    from core.spec import load_spec
    from flows.build_features import build_training_set

    spec = load_spec(newest.manifest().dataset)
    return TrainingSetRef.from_dict(build_training_set(spec, paths, policy=split)["ref"])


@flow(name="run-benchmark", task_runner=task_runner())  # CLICKPROMPT_TASK_RUNNER: local (default) or dask
def run_benchmark(
    profile: BenchProfile = "cpu",
    seeds: list[int] = [1, 2, 3],  # noqa: B006 - Prefect copies parameters per run
    only: list[RunName] | None = None,
    overrides: dict[str, Any] | None = None,
    out: str | None = None,
    time_data: bool = True,
    split: SplitPolicy | None = None,
    training_set: str | None = None,
) -> str:
    """Benchmark the suite's models on the training sets the project home holds; returns the path
    of ``results.json``. ``only`` picks runs by name; ``overrides`` (dotted config keys) apply to
    every run; ``out`` defaults to ``artifacts/bench/<UTC timestamp>-<profile>``. Every run trains on
    one training set: ``training_set`` (a build folder), else the build of ``split`` (built when
    missing), else the newest build of the project home."""
    paths = project_paths()
    folder = Path(out) if out else default_out(paths, profile)
    plan = plan_suite(profile, seeds, folder, only, overrides)  # bad names / overrides fail before anything runs
    data = load_training_data(bench_training_set(paths, split, training_set))  # read once: every run shares it
    dataset = data.spec.name
    validate_data(dataset)  # a failed gate stops the benchmark before any training
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data_times = time_data_path(dataset, paths) if time_data else None
    metrics: dict[str, dict[int, dict]] = {r.name: {} for r in plan.runs}
    grid = [(s, r) for s in plan.seeds for r in plan.runs]
    if fans_out():  # every (run, seed) at once on the distributed runner's workers
        log.info("benchmark: %d runs submitted to the %s task runner", len(grid), Backends.from_env().task_runner)
        done = gather(train, [(plan, r, seed, data, paths) for seed, r in grid])
        for (seed, r), summary in zip(grid, done):
            metrics[r.name][seed] = summary
    else:
        for i, (seed, r) in enumerate(grid, start=1):
            log.info("benchmark run %d/%d: %s seed %d (%.0f s so far)", i, len(grid), r.name, seed,
                     time.perf_counter() - started)  # the Prefect UI shows the same as task runs
            metrics[r.name][seed] = train(plan, r, seed, data, paths)
    return report(plan, metrics, data, paths, time.perf_counter() - started, data_times)


if __name__ == "__main__":
    run_benchmark()
