"""The nightly data flow: the new batches of the landing area into the warehouse and the online store.

    ingest new batches (each gated, committed or rejected whole; text of new versions rendered)
      -> snapshots -> Feast apply -> materialize incremental -> data-quality trend (markdown + PNG)

A rejected batch leaves the warehouse as it was and fails the run after the good batches are in
and the report is written, so the schedule shows it - in every run while it stays in the inbox
unchanged (corrected, it is taken again; moved out, it is given up); so does any batch still
waiting on an earlier one (``ingestion.batch_log``), in every run until it is in. The trend report flags batches whose
label rate or share of new users / items drifts beyond the thresholds. The run holds the warehouse
lock (a second run waits, then fails with "warehouse is busy (pid N since T)"); snapshots a killed
run left stale are rebuilt first, and an online store loaded from other snapshots than the current
ones is loaded again.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from core.settings import Paths
from core.spec import DatasetSpec, load_spec
from flows.common import DEFAULT_DATASET, Dataset, project_paths
from flows.ingest_data import _run_id, ingest_batches

TREND_KEY = "data-quality-trend"


class RejectedBatches(RuntimeError):
    """Some batches were rejected or wait on an earlier one (the others are in); their reasons name
    file, line and field. ``problems``: one line each; ``summary``: what the run did all the same."""

    def __init__(self, problems: list[str], summary: dict | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems, self.summary = problems, summary


@task
def follow_online_store(spec: DatasetSpec, paths: Paths, since: str | None) -> dict:
    """Feast apply (the views over the rewritten snapshots), then materialize what arrived. ``since``
    "all": the online store was loaded from other snapshots (a killed run's), load it whole."""
    from datetime import datetime

    from feature_repo.online import materialize, materialize_incremental
    from feature_repo.store import apply

    apply(spec, paths)
    if since == "all":
        return materialize(spec, paths)
    return materialize_incremental(spec, paths, since=datetime.fromisoformat(since) if since else None)


@task
def trend_report(spec: DatasetSpec, paths: Paths, label_rate: float, new_user_share: float,
                 new_item_share: float) -> dict:
    """``artifacts/data_quality/<dataset>/{trend.md, data_quality.png}`` and a Prefect artifact."""
    from core.io import write_text_atomic
    from ingestion.increments import quality_history
    from validation.trends import DriftThresholds, drift_flags, plot_trend, trend_markdown

    thresholds = DriftThresholds(label_rate, new_user_share, new_item_share)
    flagged = drift_flags(quality_history(paths.warehouse), thresholds)
    folder = paths.artifacts / "data_quality" / spec.name
    text = trend_markdown(flagged, spec.name, thresholds)
    write_text_atomic(folder / "trend.md", text)
    if not flagged.empty:
        plot_trend(flagged, folder / "data_quality.png", spec.name)
    create_markdown_artifact(text, key=TREND_KEY, description=f"data-quality trend of {spec.name}'s batches")
    return {"report": str(folder / "trend.md"), "batches": len(flagged),
            "flagged": flagged.loc[flagged["flags"] != "", "batch_id"].tolist() if not flagged.empty else []}


@flow(name="update-data")
def update_data(
    dataset: Dataset = DEFAULT_DATASET,
    max_batches: int | None = None,
    label_rate_drift: float = 0.05,
    new_user_share_drift: float = 0.25,
    new_item_share_drift: float = 0.10,
) -> dict:
    """Take the new batches (at most ``max_batches``, oldest first), follow with the online store,
    write the trend report; raise ``RejectedBatches`` at the end if any batch was rejected (now, or
    earlier and still in the inbox unchanged) or waits."""
    from feature_repo.online import online_store_current, online_store_ready
    from ingestion.batch_log import held_batches, waiting_batches
    from ingestion.snapshots import warehouse_lock

    paths = project_paths()
    spec = load_spec(dataset)
    with warehouse_lock(paths.warehouse):
        reports = ingest_batches(spec, paths, run_id=_run_id(), limit=max_batches)
        accepted = [r for r in reports if r["status"] == "accepted"]
        online = None
        if (paths.snapshots / "manifest.json").exists():
            since = min((r["valid_from"] for r in accepted if r["user_versions"] or r["item_versions"]), default=None)
            if not accepted and online_store_ready(paths) and not online_store_current(paths):
                since = "all"  # loaded from other snapshots than these: a killed run's
            if accepted or since == "all" or not online_store_ready(paths):
                online = follow_online_store(spec, paths, since)
        trend = trend_report(spec, paths, label_rate_drift, new_user_share_drift, new_item_share_drift)
        waiting = waiting_batches(paths.warehouse)
        held = held_batches(paths.inbox(spec.name), paths.warehouse, changed=False)
    summary = {"dataset": spec.name, "batches": reports, "online": online, "trend": trend}
    rejected_now = {r["batch_id"]: r["reason"] for r in reports if r["status"] == "rejected"}
    problems = [f"batch {batch} rejected: {reason}" for batch, reason in rejected_now.items()]
    problems += [h.line for batch, h in held.items() if batch not in rejected_now]  # rejected in an earlier run
    problems += [f"batch {w.batch_id} waits on batch {w.waiting_on}: {w.reason}" for w in waiting.itertuples()]
    if problems:
        raise RejectedBatches(problems, summary)
    return summary


if __name__ == "__main__":
    update_data()

