"""The data-quality trend of arriving batches: a record per batch (``ingestion.increments`` keeps them
in the warehouse table ``data_quality``), drift flags against the batches before, a Markdown
report and a plot.

A batch drifts when its label rate, or its share of events from users / items never seen before,
moves further than the configured threshold from the mean of the accepted batches before it; the
first accepted batch (the initial load, where every user and item is new by construction) counts
for the label rate only. A rejected batch is always flagged, with its reason, and a batch waiting on an earlier
one is flagged with the batch it waits on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

CHECKED = ("label_rate", "new_user_share", "new_item_share")


@dataclass(frozen=True)
class DriftThresholds:
    label_rate: float = 0.05  # absolute change of the click rate
    new_user_share: float = 0.25  # absolute change of the share of events from new users
    new_item_share: float = 0.10  # ... from new items

    def of(self, column: str) -> float:
        return getattr(self, column)


def drift_flags(history: pd.DataFrame, thresholds: DriftThresholds = DriftThresholds()) -> pd.DataFrame:
    """One row per batch (latest record of each) with a ``flags`` column: what drifted, or rejected."""
    if history.empty:
        return history.assign(flags=pd.Series(dtype=object))
    latest = history.sort_values("recorded_at").groupby("batch_id", as_index=False).last().sort_values("batch_id")
    flags, accepted = [], []
    for _, row in latest.iterrows():
        found = []
        if row["status"] == "waiting":
            found.append(f"waiting on {row.get('waiting_on') or 'an earlier batch'}")
        elif row["status"] != "accepted":
            reason = row.get("reason")
            found.append(f"rejected: {reason}" if isinstance(reason, str) and reason else "rejected")
        elif accepted:
            before = pd.DataFrame(accepted)
            for col in CHECKED:
                base = before[col] if col == "label_rate" else before[col].iloc[1:]
                value, mean = row[col], base.dropna().mean()
                if pd.notna(value) and pd.notna(mean) and abs(value - mean) > thresholds.of(col):
                    found.append(f"{col} {value:.3f} vs {mean:.3f} before (threshold {thresholds.of(col):g})")
        if row["status"] == "accepted":
            accepted.append(row)
        flags.append("; ".join(found))
    return latest.assign(flags=flags).reset_index(drop=True)


def _fmt(value, spec: str = ".3f") -> str:
    return "" if value is None or pd.isna(value) else format(value, spec)


def _cell(text: str, limit: int = 240) -> str:
    """One Markdown table cell: no pipes or line breaks, at most ``limit`` characters."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def trend_markdown(flagged: pd.DataFrame, dataset: str, thresholds: DriftThresholds = DriftThresholds()) -> str:
    drifted = flagged[flagged["flags"] != ""] if not flagged.empty else flagged
    lines = [f"# Data quality trend: {dataset}", "",
             f"{len(flagged)} batches, {len(drifted)} flagged (drift thresholds: label rate ±{thresholds.label_rate:g}, "
             f"new-user share ±{thresholds.new_user_share:g}, new-item share ±{thresholds.new_item_share:g} against "
             "the mean of the accepted batches before).", "",
             "| batch | status | events | user / item versions | label rate | new users | new items | "
             "expectations (failed) | event dates | flags |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in flagged.iterrows():
        span = f"{str(r['events_start'])[:10]} .. {str(r['events_end'])[:10]}" if pd.notna(r["events_start"]) else ""
        lines.append(f"| {r['batch_id']} | {r['status']} | {int(r['events'] or 0):,} | {int(r['user_versions'] or 0)} / "
                     f"{int(r['item_versions'] or 0)} | {_fmt(r['label_rate'])} | {_fmt(r['new_user_share'])} | "
                     f"{_fmt(r['new_item_share'])} | {int(r['expectations'] or 0)} ({int(r['failed_expectations'] or 0)}) | "
                     f"{span} | {_cell(r['flags']) if r['flags'] else '-'} |")
    return "\n".join(lines + ["", "![trend](data_quality.png)", ""])


def plot_trend(flagged: pd.DataFrame, path: Path, dataset: str) -> Path:
    """Events per batch (bars) and label rate / new-user / new-item shares (lines); flagged batches marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    x = range(len(flagged))
    colors = ["#c44e52" if f else "#3b75af" for f in flagged["flags"]]
    ax.bar(x, flagged["events"].fillna(0), color=colors)
    ax.set_yscale("log")
    ax.set_ylabel("events (log)")
    ax.set_title(f"{dataset}: arriving batches (red: flagged)")
    for col, label in (("label_rate", "label rate"), ("new_user_share", "events from new users"),
                       ("new_item_share", "events from new items")):
        bx.plot(list(x), flagged[col], marker="o", label=label)
    for i, f in enumerate(flagged["flags"]):
        if f:
            bx.axvline(i, color="#c44e52", alpha=0.3, linewidth=6)
    bx.set_ylim(0, 1)
    bx.set_ylabel("share")
    bx.legend(fontsize=8)
    bx.set_xticks(list(x), flagged["batch_id"], rotation=30, ha="right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
