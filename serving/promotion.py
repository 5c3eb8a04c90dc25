"""The promotion policy: which metric decides, which direction wins, and the decision's words.

``Registry.promote`` applies it inside one transaction and logs every decision, refusals included.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# metric -> which direction is better
METRICS: dict[str, str] = {"auc": "higher", "logloss": "lower"}
# what a first production version must beat: random ranking (AUC 0.5), a coin's constant 0.5 (LogLoss
# ln 2); a model past it is worse than serving no model. Once one is served, a candidate need only beat it
# (the weekly retrain may find both below the floor on a drifted window: the better one serves)
FLOORS: dict[str, float] = {"auc": 0.5, "logloss": math.log(2)}


@dataclass(frozen=True)
class PromotionResult:
    name: str
    version: int
    promoted: bool
    reason: str
    metric: str
    candidate_value: float | None
    production_value: float | None  # the previous production's value (None when there was none)
    previous_version: int | None
    forced: bool
    basis: str = ""  # what both figures were measured on
    margin: float = 0.0
    already: bool = False  # the version was production already: nothing decided, nothing logged

    def to_dict(self) -> dict:
        return asdict(self)


def metric_value(metrics: dict, metric: str) -> float | None:
    """A metric as a float, None when missing or NaN (e.g. AUC on a one-class split)."""
    value = metrics.get(metric)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class WindowEvaluation:
    """Versions scored on one shared window: what a promotion may compare instead of each run's own
    test split."""

    metric: str
    values: dict[int, float]  # version -> its figure on the window
    start: str  # window [start, end], ISO times of the events
    end: str
    rows: int

    @property
    def basis(self) -> str:
        return f"one shared window, events {self.start[:10]} .. {self.end[:10]} ({self.rows:,} rows)"


def beats(candidate: float | None, production: float | None, metric: str, margin: float = 0.0) -> bool:
    """The candidate is better by more than ``margin`` (at least it, for a positive margin)."""
    if candidate is None:
        return False
    if production is None:
        return True
    gain = candidate - production if METRICS[metric] == "higher" else production - candidate
    return gain > 0 if margin <= 0 else gain >= margin


def decide(name: str, version: int, cand_value: float | None, current: int | None, prod_value: float | None,
           metric: str, force: bool, margin: float = 0.0) -> tuple[bool, str]:
    """(promoted, reason) for candidate ``version`` against production ``current`` (None: none yet;
    the production version itself never comes here: ``Registry.promote`` answers it as a no-op)."""
    need = f" by the margin {margin:g}" if margin > 0 else ""
    if not force and current is None and cand_value is not None and not beats(cand_value, FLOORS[metric], metric):
        return False, (f"{name} v{version} {metric} {_fmt(cand_value)} is no better than "
                       + ("random ranking" if metric == "auc" else "a constant 0.5") + f" ({_fmt(FLOORS[metric])}): "
                       "not served; check its data and training, or use --force to promote anyway")
    if force or beats(cand_value, prod_value, metric, margin):
        if current is None:
            return True, f"{name} v{version} is the first production version"
        if force and not beats(cand_value, prod_value, metric, margin):
            return True, (f"forced: {name} v{version} {metric} {_fmt(cand_value)} replaces "
                          f"v{current} {metric} {_fmt(prod_value)}")
        return True, (f"{name} v{version} {metric} {_fmt(cand_value)} beats production "
                      f"v{current} {_fmt(prod_value)}{need} ({METRICS[metric]} is better)")
    if cand_value is None or current is None:
        return False, f"{name} v{version} has no {metric} to compare; use --force to promote anyway"
    return False, (f"{name} v{version} {metric} {_fmt(cand_value)} does not beat production "
                   f"v{current} {metric} {_fmt(prod_value)}{need} ({METRICS[metric]} is better); "
                   "use --force to promote anyway")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
