"""Collect a run's test metrics (each stage scored its test split once) into one table and summary."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core.io import write_json_atomic
from flows.common import RunId, project_paths
from models.metrics import StageRow, markdown_table, stage_rows

METRICS_KEY = "run-metrics"  # table: one row per trained stage
SUMMARY_KEY = "run-summary"  # markdown: the table plus what it means


def read_run(run_dir: Path) -> dict:
    """The run's metrics as ``run_training`` writes them, merged over every finished stage folder
    (each stage task writes ``metrics.json`` of its own stage only)."""
    from models.stages import STAGES

    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"no training run in {run_dir}")
    config = json.loads((run_dir / "config.json").read_text())
    found = {p.parent.name: p for p in run_dir.glob("*/metrics.json")}
    order = [s for s in STAGES if s in found] + sorted(set(found) - set(STAGES))
    stages = {s: json.loads(found[s].read_text()) for s in order}
    if not stages:
        raise FileNotFoundError(f"no finished stage in {run_dir}")
    first = next(iter(stages.values()))
    return {"config_hash": first["config_hash"], "profile": config["profile"], "method": config["method"],
            "backbone": config["backbone"], "snapshot_hash": first["snapshot_hash"], "stages": stages}


def summary_markdown(run_id: str, run: dict, rows: list[StageRow]) -> str:
    lines = [f"# Run {run_id}", "",
             f"{run['method']} on {run['backbone']}, profile {run['profile']}, config {run['config_hash']}, "
             f"snapshot {run['snapshot_hash'][:12]}", "", markdown_table(rows)]
    by_stage = {r.stage: r for r in rows}
    base, ctr_only = by_stage.get("baseline"), by_stage.get("finetune-ctr-only")
    if base and ctr_only and base.test_auc is not None and ctr_only.test_auc is not None:
        lines += ["", f"CTR-only after pretraining vs baseline: {ctr_only.test_auc - base.test_auc:+.4f} test AUC "
                      "(same inference graph)."]
    return "\n".join(lines)


@task
def collect_metrics(run_dir: Path) -> dict:
    """Merge the stages' metrics into ``<run_dir>/metrics.json`` and publish them as artifacts."""
    run = read_run(run_dir)
    write_json_atomic(run_dir / "metrics.json", run)  # the file that marks a finished run: never half-written
    rows = stage_rows(run["stages"])
    create_table_artifact([r.to_dict() for r in rows], key=METRICS_KEY, description=f"test metrics of run {run_dir.name}")
    create_markdown_artifact(summary_markdown(run_dir.name, run, rows), key=SUMMARY_KEY,
                             description=f"summary of run {run_dir.name}")
    return {"run_id": run_dir.name, "run_dir": str(run_dir), **{k: v for k, v in run.items() if k != "stages"},
            "variants": {r.stage: r.to_dict() for r in rows}}


@flow(name="evaluate-model")
def evaluate_model(run_id: RunId) -> dict:
    """The test metrics every stage of ``artifacts/runs/<run_id>`` recorded (never re-scored here:
    the test split is scored once, when a stage finishes)."""
    return collect_metrics(project_paths().runs / run_id)
