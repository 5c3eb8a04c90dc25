"""The data-quality gate: every Great Expectations suite on the warehouse tables and the snapshots
the Feast views read. Its report becomes a Prefect artifact; a failure stops the flow (and so the
pipeline) before any feature or model changes."""

from __future__ import annotations

import json

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core.settings import Paths
from flows.common import DEFAULT_DATASET, Dataset, project_paths

REPORT_KEY = "data-quality-report"  # markdown: per-suite verdicts and every failure
FAILURES_KEY = "data-quality-failures"  # table: one row per failed expectation


def report_markdown(report: dict, dataset: str) -> str:
    """The report (``ValidationReport.to_dict()``) as markdown: a suite table, then the failures."""
    verdict = "PASSED" if report["success"] else "FAILED"
    lines = [f"# Data quality: {dataset} {verdict}", "", "| suite | result | expectations | failed |",
             "|---|---|---|---|"]
    for s in report["suites"]:
        verdict = "pass" if s["success"] else "**FAIL**"
        lines.append(f"| {s['name']} | {verdict} | {s['evaluated']} | {len(s['failures'])} |")
    rows = failure_rows(report)
    if rows:
        lines += ["", "## Failures", "", "| suite | column | expectation | unexpected | examples | details |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            cells = [r["suite"], r["column"], r["expectation"], r["unexpected_count"], r["examples"], r["details"]]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def failure_rows(report: dict) -> list[dict]:
    """One flat row per failed expectation, for a table artifact."""
    return [
        {
            "suite": s["name"],
            "column": f["column"] or "(table)",
            "expectation": f["expectation"],
            "unexpected_count": f["unexpected_count"],
            "examples": json.dumps(f["examples"], ensure_ascii=False),
            "details": f["details"],
        }
        for s in report["suites"]
        for f in s["failures"]
    ]


def publish_report(summary: dict, dataset: str) -> None:
    """The report (``ValidationReport.to_dict()``) as Prefect artifacts: markdown, and the failures
    as a table when there are any (the validate flow and a gate failing inside ingest both publish)."""
    create_markdown_artifact(report_markdown(summary, dataset), key=REPORT_KEY,
                             description=f"Great Expectations suites on {dataset}")
    if not summary["success"]:
        create_table_artifact(failure_rows(summary), key=FAILURES_KEY, description=f"failed expectations on {dataset}")


@task
def run_validation(dataset: str | None, paths: Paths) -> dict:
    """Run the suites, publish the report as artifacts, raise ``ValidationError`` on any failure."""
    from core.snapshots import snapshot_problem
    from core.spec import load_spec
    from ingestion.warehouse import validation_frames, warehouse_dataset
    from validation.runner import run_suites, snapshot_result

    spec = load_spec(dataset or warehouse_dataset(paths.warehouse) or DEFAULT_DATASET)
    report = run_suites(spec, validation_frames(spec, paths.warehouse, paths.snapshots))
    report.suites.append(snapshot_result(snapshot_problem(paths.snapshots, paths.warehouse)))
    publish_report(report.to_dict(), spec.name)
    report.raise_if_failed()
    return report.to_dict()


@flow(name="validate-data")
def validate_data(dataset: Dataset | None = None) -> dict:
    """Validate the warehouse (``dataset`` defaults to the one it holds). Never cached: a gate
    re-checks every time (the nightly data-quality deployment runs exactly this)."""
    return run_validation(dataset, project_paths())
