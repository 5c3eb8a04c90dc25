"""Collect a run's test metrics (each stage scored its test split once) into one table and summary."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core.settings import Paths
from flows.common import RunId, project_paths
from models.metrics import StageRow, markdown_table, stage_rows
from models.train.stages import Stage

METRICS_KEY = "run-metrics"  # table: one row per trained stage
SUMMARY_KEY = "run-summary"  # markdown: the table plus what it means


def summary_markdown(run_id: str, run: dict, rows: list[StageRow]) -> str:
    lines = [f"# Run {run_id}", "",
             f"{run['method']} on {run['backbone']}, profile {run['profile']}, config {run['config_hash']}, "
             f"snapshot {run['snapshot_hash'][:12]}", "", markdown_table(rows)]
    by_stage = {r.stage: r for r in rows}
    base, ctr_only = by_stage.get(Stage.BASELINE), by_stage.get(Stage.FINETUNE_CTR_ONLY)
    if base and ctr_only and base.test_auc is not None and ctr_only.test_auc is not None:
        lines += ["", f"CTR-only after pretraining vs baseline: {ctr_only.test_auc - base.test_auc:+.4f} test AUC "
                      "(same inference graph)."]
    return "\n".join(lines)


@task
def collect_metrics(run_dir: Path) -> dict:
    """Merge the stages' metrics into ``<run_dir>/metrics.json`` and publish them as artifacts."""
    from models.train.run import finish_run

    run = finish_run(run_dir)  # the run's metrics.json, written once, complete: it marks a finished run
    rows = stage_rows(run["stages"])
    create_table_artifact([r.to_dict() for r in rows], key=METRICS_KEY, description=f"test metrics of run {run_dir.name}")
    create_markdown_artifact(summary_markdown(run_dir.name, run, rows), key=SUMMARY_KEY,
                             description=f"summary of run {run_dir.name}")
    return {"run_id": run_dir.name, "run_dir": str(run_dir), **{k: v for k, v in run.items() if k != "stages"},
            "variants": {r.stage: r.to_dict() for r in rows}}


@task
def track_run(run_dir: Path, paths: Paths) -> str:
    """The finished run as an MLflow run (``serving.tracking``); the same run logged again is not doubled."""
    from serving.tracking import log_training_run

    return log_training_run(paths, run_dir)


@flow(name="evaluate-model")
def evaluate_model(run_id: RunId) -> dict:
    """The test metrics every stage of ``artifacts/runs/<run_id>`` recorded (never re-scored here:
    the test split is scored once, when a stage finishes), also logged as an MLflow run."""
    from serving.tracking import public_uri, tracking_uri

    paths = project_paths()
    evaluation = collect_metrics(paths.runs / run_id)
    return {**evaluation, "mlflow_run_id": track_run(paths.runs / run_id, paths),
            "mlflow_uri": public_uri(tracking_uri(paths))}
