"""Champion and challengers judged on ONE shared, recent window, then the promotion decision.

A model's own test split is a window of its own training run: once the data moves, two runs' test
AUCs are figures on different events and comparing them means nothing. Here every candidate (the
retrained CTR-only model, the retrained plain backbone: both have the inference graph the platform
serves) and the production model are scored on the same events - the most recent held-out window,
which no candidate trained, validated or reported on - each with its point-in-time features from
the offline store through the one scoring path serving uses (``serving.scoring``). The best
challenger is promoted only when it beats the champion by the margin; both figures, the window and
the margin are recorded with the decision (``Registry.promote``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from core.settings import Paths
from core.spec import DatasetSpec
from models.evaluate import evaluate
from serving.promotion import METRICS, WindowEvaluation
from serving.registry import DEFAULT_NAME, ModelVersion, Registry
from serving.scoring import load_model, score_entities

log = logging.getLogger("clickprompt.registry")


@dataclass
class Score:
    version: int
    training_stage: str
    role: str  # champion | challenger
    auc: float | None
    logloss: float | None


@dataclass
class Judgement:
    window_start: str
    window_end: str
    rows: int
    metric: str
    margin: float
    scores: list[Score]
    winner: int | None  # the challenger put to promotion (the best on the window)
    promoted: bool = False
    reason: str = ""
    production_version: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _value(s: Score, metric: str) -> float | None:
    return s.auc if metric == "auc" else s.logloss


def score_on_window(paths: Paths, mv: ModelVersion, rows: pd.DataFrame, store=None) -> tuple[float | None, float | None]:
    """(AUC, LogLoss) of a registered version on labelled event rows, features as of each event."""
    scored = score_entities(paths, rows, load_model(mv, paths), store, where=f"window for {mv.name} v{mv.version}")
    m = evaluate(rows["label"].to_numpy(), scored["click_probability"].to_numpy())
    auc = None if m["auc"] is None or not np.isfinite(m["auc"]) else float(m["auc"])
    return auc, float(m["logloss"])


def judge(paths: Paths, spec: DatasetSpec, challengers: list[int], start: datetime, end: datetime | None = None,
          metric: str = "auc", margin: float = 0.0, name: str = DEFAULT_NAME,
          registry: Registry | None = None) -> Judgement:
    """Score the production version and ``challengers`` (registered versions) on the events with time
    in [start, end], promote the best challenger when it beats production by ``margin``."""
    from feature_repo.store import open_store
    from feature_repo.training_sets import entity_frame

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    if not challengers:
        raise ValueError("no challenger to judge")
    registry = registry or Registry(paths)
    rows = entity_frame(spec, paths, start, None if end is None else pd.Timestamp(end) + pd.Timedelta(microseconds=1))
    if rows.empty or rows["label"].nunique() < 2:
        raise ValueError(f"the window from {start} holds {len(rows)} events with {rows['label'].nunique()} label "
                         "value(s): a judgement needs both clicks and non-clicks")
    champion = registry.production(name)
    store = open_store(paths)
    scores = []
    for role, mv in [("champion", champion)] * (champion is not None) + [("challenger", registry.get(v, name))
                                                                        for v in challengers]:
        auc, ll = score_on_window(paths, mv, rows, store)
        scores.append(Score(mv.version, mv.training_stage, role, auc, ll))
        log.info("window %s..%s: %s v%d (%s) AUC %s, LogLoss %.4f", rows.event_timestamp.min(),
                 rows.event_timestamp.max(), role, mv.version, mv.training_stage, auc, ll)
    contenders = [s for s in scores if s.role == "challenger" and _value(s, metric) is not None]
    better = max if METRICS[metric] == "higher" else min
    best = better(contenders, key=lambda s: _value(s, metric)) if contenders else None
    window = WindowEvaluation(metric, {s.version: _value(s, metric) for s in scores if _value(s, metric) is not None},
                              rows.event_timestamp.min().isoformat(), rows.event_timestamp.max().isoformat(), len(rows))
    out = Judgement(window.start, window.end, len(rows), metric, margin, scores, best.version if best else None)
    if best is None:
        out.reason = f"no challenger has a {metric} on the window"
    else:
        decision = registry.promote(best.version, name=name, metric=metric, margin=margin, evaluation=window)
        out.promoted, out.reason = decision.promoted, decision.reason
    out.production_version = registry.production_version(name)
    return out
