"""Collect a run's test metrics (each stage scored its test split once) into one table and summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.common import RunId, project_paths

METRICS_KEY = "run-metrics"  # table: one row per trained stage
SUMMARY_KEY = "run-summary"  # markdown: the table plus what it means


def _num(value) -> float | None:
    """JSON-safe float (NaN, e.g. AUC on a one-class split, becomes None)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def stage_rows(stages: dict[str, dict]) -> list[dict]:
    """One row per stage: test AUC / LogLoss for the CTR stages, masked-token accuracy for PA-MLM."""
    rows = []
    for stage, m in stages.items():
        seconds = m.get("seconds", m.get("fit", {}).get("seconds"))
        row = {"stage": stage, "test_auc": None, "test_logloss": None, "test_n": None, "valid_auc": None,
               "mlm_acc": None, "mlm_acc_zero_prompts": None, "alignment": None, "seconds": _num(seconds)}
        if "test" in m:
            row.update(test_auc=_num(m["test"]["auc"]), test_logloss=_num(m["test"]["logloss"]),
                       test_n=m["test"]["n"], valid_auc=_num(m.get("valid_auc")))
        else:
            from models.stages import pretrain_summary

            valid = m.get("valid", {})  # PA-MLM reports both; ALT's contrastive-only objective neither
            row.update(mlm_acc=_num(valid.get("mlm_acc")), mlm_acc_zero_prompts=_num(valid.get("mlm_acc_zero_prompts")),
                       alignment=pretrain_summary(m))
        rows.append(row)
    return rows


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


def summary_markdown(run_id: str, run: dict, rows: list[dict]) -> str:
    fmt = lambda v: "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"# Run {run_id}", "",
             f"{run['method']} on {run['backbone']}, profile {run['profile']}, config {run['config_hash']}, "
             f"snapshot {run['snapshot_hash'][:12]}", "",
             "| stage | test AUC | test LogLoss | n | valid AUC | masked-token acc (prompts / zeroed) | s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        mlm = f"{fmt(r['mlm_acc'])} / {fmt(r['mlm_acc_zero_prompts'])}" if r["mlm_acc"] is not None else ""
        lines.append(f"| {r['stage']} | {fmt(r['test_auc'])} | {fmt(r['test_logloss'])} | {fmt(r['test_n'])} | "
                     f"{fmt(r['valid_auc'])} | {mlm} | {fmt(r['seconds'])} |")
    lines += [f"\n{r['stage']}: {r['alignment']}" for r in rows if r.get("alignment")]
    by_stage = {r["stage"]: r for r in rows}
    base, ctr_only = by_stage.get("baseline", {}).get("test_auc"), by_stage.get("finetune-ctr-only", {}).get("test_auc")
    if base is not None and ctr_only is not None:
        lines += ["", f"CTR-only after PA-MLM vs baseline: {ctr_only - base:+.4f} test AUC (same inference graph)."]
    return "\n".join(lines)


@task
def collect_metrics(run_dir: Path) -> dict:
    """Merge the stages' metrics into ``<run_dir>/metrics.json`` and publish them as artifacts."""
    run = read_run(run_dir)
    (run_dir / "metrics.json").write_text(json.dumps(run, indent=2, default=float))
    rows = stage_rows(run["stages"])
    create_table_artifact(rows, key=METRICS_KEY, description=f"test metrics of run {run_dir.name}")
    create_markdown_artifact(summary_markdown(run_dir.name, run, rows), key=SUMMARY_KEY,
                             description=f"summary of run {run_dir.name}")
    return {"run_id": run_dir.name, "run_dir": str(run_dir), **{k: v for k, v in run.items() if k != "stages"},
            "variants": {r["stage"]: r for r in rows}}


@flow(name="evaluate-model")
def evaluate_model(run_id: RunId) -> dict:
    """The test metrics every stage of ``artifacts/runs/<run_id>`` recorded (never re-scored here:
    the test split is scored once, when a stage finishes)."""
    return collect_metrics(project_paths().runs / run_id)
