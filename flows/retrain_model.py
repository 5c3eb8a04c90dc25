"""The scheduled retrain: a challenger trained on a window of the data, judged against the champion
on the most recent held-out window, promoted only on a margin.

    holdout = the last ``holdout_days`` of events (never trained, validated or reported on)
    training window = everything before it (growing) or its last ``window_days`` (sliding)
      -> training sets (point in time) -> train (baseline, PA-MLM, CTR-only) -> evaluate
      -> register the challengers (the CTR-only model and the plain backbone: both serve with the
         same inference graph) -> score them and the production model on the holdout
      -> promote the best challenger if it beats production by ``margin``; both figures recorded

The server picks a promotion up without a restart (the registry's generation file).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from core.names import DEFAULT_WINDOW_DAYS
from core.settings import Paths
from core.spec import DatasetSpec, load_spec
from flows.build_features import build_training_set
from flows.common import DEFAULT_DATASET, Backbone, Dataset, Profile, Stage, project_paths
from flows.evaluate_model import evaluate_model
from flows.finetune_model import finetune_model
from flows.pretrain_model import pretrain_model
from flows.training import default_run_id, train_config
from models.train.run import run_lock
from models.train.stages import RETRAIN_STAGES, SERVABLE_STAGES
from models.train.stages import Stage as TrainStage

JUDGEMENT_KEY = "champion-challenger"
CHALLENGER_STAGES = SERVABLE_STAGES  # what may be served: the backbone's inference graph
DEFAULT_RETRAIN_STAGES = RETRAIN_STAGES


def window_training_sets(spec: DatasetSpec, paths: Paths, window: Literal["growing", "sliding"], window_days: int,
                         holdout_days: int) -> dict:
    """The holdout window (the last ``holdout_days`` of events) and the training sets of the window
    before it: a build of its own (``ref``), never the pipeline's."""
    import pandas as pd

    events = pd.read_parquet(paths.snapshots / "interactions.parquet", columns=["event_timestamp"])["event_timestamp"]
    latest = events.max()
    holdout_start = latest - timedelta(days=holdout_days)
    start = holdout_start - timedelta(days=window_days) if window == "sliding" else None
    train_window = [None if start is None else pd.Timestamp(start).isoformat(), pd.Timestamp(holdout_start).isoformat()]
    sets = build_training_set(spec, paths, window=train_window)
    return {"holdout_start": holdout_start.isoformat(), "holdout_end": latest.isoformat(),
            "train_start": None if start is None else start.isoformat(), "ref": sets["ref"],
            "manifest": sets["manifest"]}


@task
def register_challengers(run_dir: str, paths: Paths, stages: list[str]) -> list[int]:
    from pathlib import Path

    from serving.registry import Registry

    registry = Registry(paths)
    return [registry.register(Path(run_dir), stage=s).version for s in CHALLENGER_STAGES if s in stages]


@task
def judge_on_holdout(spec: DatasetSpec, paths: Paths, challengers: list[int], holdout_start: str, holdout_end: str,
                     metric: str, margin: float) -> dict:
    from datetime import datetime

    from serving.challenge import judge

    return judge(paths, spec, challengers, datetime.fromisoformat(holdout_start), datetime.fromisoformat(holdout_end),
                 metric=metric, margin=margin).to_dict()


def judgement_markdown(j: dict, run_id: str) -> str:
    lines = [f"# Champion / challenger: run {run_id}", "",
             f"Shared window: events {j['window_start']} .. {j['window_end']} ({j['rows']:,} rows, held out of "
             f"training); metric {j['metric']}, margin {j['margin']:g}.", "",
             "| version | stage | role | AUC | LogLoss |", "|---|---|---|---|---|"]
    for s in j["scores"]:
        auc = "n/a" if s["auc"] is None else f"{s['auc']:.4f}"
        lines.append(f"| v{s['version']} | {s['training_stage']} | {s['role']} | {auc} | {s['logloss']:.4f} |")
    lines += ["", f"Decision: {'promoted' if j['promoted'] else 'not promoted'} - {j['reason']}",
              "Production: " + ("none" if j["production_version"] is None else f"v{j['production_version']}")]
    return "\n".join(lines)


@flow(name="retrain-model")
def retrain_model(
    dataset: Dataset = DEFAULT_DATASET,
    profile: Profile = "demo",
    backbone: Backbone | None = None,
    stages: list[Stage] | None = None,
    window: Literal["growing", "sliding"] = "growing",
    window_days: Annotated[int, Field(ge=1)] = DEFAULT_WINDOW_DAYS,
    holdout_days: Annotated[int, Field(ge=1)] = 7,
    metric: Literal["auc", "logloss"] = "auc",
    margin: Annotated[float, Field(ge=0)] = 0.001,  # 0: strictly better (a negative one meant the same)
    overrides: dict[str, Any] | None = None,
) -> dict:
    """Retrain ClickPrompt on the training window, then let the challengers meet the champion on the
    holdout window. ``window``: growing (every event before the holdout) or sliding (its last
    ``window_days``); ``margin``: how much better than production a challenger must be."""
    paths = project_paths()
    spec = load_spec(dataset)
    stages = [str(s) for s in (stages or DEFAULT_RETRAIN_STAGES)]
    if not set(CHALLENGER_STAGES) & set(stages):
        raise ValueError(f"the retrain must train a servable stage: one of {[str(s) for s in CHALLENGER_STAGES]}")
    data = window_training_sets(spec, paths, window, window_days, holdout_days)
    cfg = train_config(profile, "clickprompt", backbone, overrides or {})
    run_id = default_run_id(cfg, data["ref"])  # the window is part of the training set's identity
    with run_lock(paths.runs / run_id):
        if TrainStage.PRETRAIN in stages:
            pretrain_model(cfg, run_id, data["ref"], run_stages=stages)
        finetune_model(cfg, run_id, stages, data["ref"])
        evaluation = evaluate_model(run_id)
    challengers = register_challengers(str(paths.runs / run_id), paths, stages)
    judgement = judge_on_holdout(spec, paths, challengers, data["holdout_start"], data["holdout_end"], metric, margin)
    create_markdown_artifact(judgement_markdown(judgement, run_id), key=JUDGEMENT_KEY,
                             description=f"champion / challenger of run {run_id}")
    return {"run_id": run_id, "window": data, "evaluation": evaluation, "challengers": challengers,
            "judgement": judgement}


if __name__ == "__main__":
    retrain_model()
