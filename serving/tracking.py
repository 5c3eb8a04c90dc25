"""MLflow tracking: every training run (pipeline, ``clickprompt train``, weekly retrain, benchmark
run and seed) as an MLflow run, read back by ``clickprompt ui`` and any MLflow client.

The store is the project home's ``mlruns.db`` (SQLite: tracking and the model registry, offline,
no server) with artifacts under ``mlartifacts/``; ``MLFLOW_TRACKING_URI`` points both at a team
server instead, with no code change.

One MLflow run per run folder and training: logging the same finished run again (a cached flow
re-run) returns the run already logged; a run folder that gained stages since, or whose stages were
scored again (the same training, the same validation curve), updates that MLflow run - the new
stages' metrics and curves, the changed figures, ``metrics.json`` and the tags - rather than starting
a second one. A stage trained again (its validation curve differs) or another config (params are
immutable in MLflow) starts a new MLflow run of the folder, so what a registered version links to
keeps the figures it was trained with, unless an earlier run of the folder holds that training: a
config changed and changed back, trained the same, is its first run again. A run is found by
digests in its tags (of its folder's path, its config, each stage's metrics and curve); only
FINISHED runs count (one whose logging failed or was cut off is left as it is, and the next logging
starts anew). Runs logged before the digests existed are found by their path where a filter string
can hold it, and adopted when their ``metrics.json`` and params are the same. What an MLflow run holds:

* params: the run's typed config (``config.json``, ``TrainConfig.model_dump``), flattened with dots;
* metrics per stage, ``<stage>.<name>``: test AUC / LogLoss, valid AUC, the with-LM model's branch
  AUCs and ``a``, PA-MLM accuracies with and without prompts, rows, epochs, seconds, samples/s; and
  the validation curve, ``<stage>.valid.<name>`` at each evaluation step;
* tags: data set, snapshot hash, training-set identity, code version, device, profile, method;
* artifacts: ``metrics.json``, ``training_set.json`` and whatever the caller adds (plots, report).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Iterable

from core.io import digest
from core.settings import Paths
from serving.artifacts import code_version

log = logging.getLogger("clickprompt.tracking")

TRAINING_EXPERIMENT = "clickprompt-training"
RUN_DIR_TAG, METRICS_SHA_TAG = "clickprompt.run_dir", "clickprompt.metrics_sha256"
RUN_DIR_KEY_TAG, CONFIG_TAG = "clickprompt.run_dir_sha256", "clickprompt.config_sha256"
STAGE_SHA_TAG, CURVE_SHA_TAG = "clickprompt.stage_sha256.", "clickprompt.curve_sha256."  # + the stage's name


def store_path(paths: Paths) -> Path:
    return paths.registry


def tracking_uri(paths: Paths) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project home's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_path(paths)}"


def public_uri(uri: str) -> str:
    """``uri`` as summaries and logs show it: a team server's ``user:token@`` left out."""
    return re.sub(r"//[^/@]*@", "//", uri)


def artifact_location(paths: Paths, experiment: str) -> str | None:
    """Local store: artifacts under the project home; a team server decides its own."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (paths.home / "mlartifacts" / experiment).as_uri()


def client(paths: Paths):
    """An MlflowClient on the project's store (tracking and the model registry)."""
    from mlflow import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)  # the store's schema check, not the user's business
    paths.home.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(paths)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


_warned_moved: set[tuple[Path, str]] = set()


def experiment_id(mlc, paths: Paths, name: str) -> str:
    found = mlc.get_experiment_by_name(name)
    if found is not None:
        here = artifact_location(paths, name)
        if here is not None and found.artifact_location != here and (paths.home, name) not in _warned_moved:
            _warned_moved.add((paths.home, name))  # MLflow keeps an experiment's artifact folder as it was made: absolute
            log.warning("MLflow experiment %r keeps its artifacts in %s, not under this home (%s): the home was "
                        "copied or moved from there, and new runs' files go there (the registry's models are "
                        "served from this home's copy)", name, found.artifact_location, paths.home)
        return found.experiment_id
    from mlflow.exceptions import MlflowException

    try:
        return mlc.create_experiment(name, artifact_location=artifact_location(paths, name))
    except MlflowException:  # created meanwhile by another process
        return mlc.get_experiment_by_name(name).experiment_id


def flatten(value: dict, prefix: str = "") -> dict[str, str]:
    """Nested config values as ``a.b.c`` -> str (MLflow params are strings)."""
    out: dict[str, str] = {}
    for key, v in value.items():
        name = f"{prefix}{key}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{name}."))
        else:
            out[name] = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
    return out


def stage_metrics(stage: str, m: dict) -> dict[str, float]:
    """The stage's summary figures as recorded (unrounded), ``<stage>.<name>`` -> value; missing and
    NaN figures are left out."""
    test, valid, branches = m.get("test", {}), m.get("valid", {}), m.get("branches", {})
    values = {"test_auc": test.get("auc"), "test_logloss": test.get("logloss"), "test_n": test.get("n"),
              "valid_auc": m.get("valid_auc"), "a": m.get("a"),
              "ctr_branch_auc": branches.get("ctr_branch", {}).get("auc"),
              "lm_branch_auc": branches.get("lm_branch", {}).get("auc"),
              "mlm_acc": valid.get("mlm_acc"), "mlm_acc_zero_prompts": valid.get("mlm_acc_zero_prompts"),
              "rows": m.get("trained_on", {}).get("rows"), "epochs": m.get("trained_on", {}).get("epochs"),
              "seconds": m.get("seconds", m.get("fit", {}).get("seconds")),
              "samples_per_s": m.get("fit", {}).get("samples_per_s")}
    return {f"{stage}.{k}": float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def curve(stage: str, m: dict) -> list[tuple[str, float, int]]:
    """The validation curve: (``<stage>.valid.<name>``, value, step) per evaluation step."""
    out = []
    for point in m.get("fit", {}).get("history", []):
        step = int(point.get("step", 0))
        for key, v in point.items():
            if key != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                out.append((f"{stage}.valid.{key}", float(v), step))
    return out


def run_tags(run_dir: Path, run: dict, config: dict) -> dict[str, str]:
    from models.runtime import pick_device

    tags = {"dataset": "", "snapshot_hash": run.get("snapshot_hash") or "", "training_set": "",
            "training_set_hash": run.get("training_set_hash") or "", "code_version": code_version(),
            "device": str(pick_device(config.get("device", "auto"))), "profile": str(run.get("profile")),
            "method": str(run.get("method")), "backbone": str(run.get("backbone")), RUN_DIR_TAG: str(run_dir),
            "mlflow.runName": run_dir.name}
    ts = run_dir / "training_set.json"
    if ts.is_file():
        recorded = json.loads(ts.read_text(encoding="utf-8"))
        manifest, ref = recorded.get("manifest", {}), recorded.get("ref", {})
        tags["dataset"] = str(manifest.get("dataset") or "")
        tags["training_set"] = str(manifest.get("identity") or Path(str(ref.get("folder", ""))).name)
        tags["training_set_manifest_sha256"] = str(ref.get("manifest_hash") or "")
    return {k: v for k, v in tags.items() if v}


def run_dir_key(run_dir: Path) -> str:
    """The run folder's path as a digest: a filter string matches it whatever characters the path holds."""
    return digest(str(run_dir))


def runs_of_folder(mlc, experiment_ids: list[str], run_dir: Path) -> list:
    """The FINISHED MLflow runs logged of ``run_dir``, newest first. Runs logged before they carried
    the path's digest are found by the path itself, where a filter string can hold it (no quote in it)."""
    newest, finished = ["attributes.start_time DESC"], "attributes.status = 'FINISHED'"
    found = mlc.search_runs(experiment_ids, order_by=newest,
                            filter_string=f"tags.`{RUN_DIR_KEY_TAG}` = '{run_dir_key(run_dir)}' and {finished}")
    if not found and "'" not in str(run_dir):
        found = [r for r in mlc.search_runs(experiment_ids, order_by=newest,
                                            filter_string=f"tags.`{RUN_DIR_TAG}` = '{run_dir}' and {finished}")
                 if RUN_DIR_KEY_TAG not in r.data.tags]
    return found


def logged_run_of(mlc, experiment_ids: list[str], run_dir: Path | str):
    """The FINISHED MLflow run of ``run_dir`` that a model version registered from it now links to:
    the run holding the folder as it is (``_match``), else the newest of its config, else the folder's
    newest run, else None."""
    run_dir = Path(run_dir).resolve()
    found = runs_of_folder(mlc, experiment_ids, run_dir)
    try:
        run, config, digests = _state(run_dir)
    except (OSError, ValueError, KeyError):  # a folder that no longer reads: its newest run
        return found[0] if found else None
    same_config = (r for r in found if r.data.tags.get(CONFIG_TAG) == digests[CONFIG_TAG])
    return _match(found, run, config, digests) or next(same_config, found[0] if found else None)


def _state(run_dir: Path) -> tuple[dict, dict, dict[str, str]]:
    """The finished folder's ``metrics.json``, ``config.json`` and the digests of both (``_digests``)."""
    raw = (run_dir / "metrics.json").read_bytes()  # read once: the figures and their digest are one version
    run, config = json.loads(raw), json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    return run, config, _digests(run, config, run_dir, hashlib.sha256(raw).hexdigest())


def _digests(run: dict, config: dict, run_dir: Path, metrics_sha: str) -> dict[str, str]:
    """What identifies the logged state: the folder, its config, its metrics.json and each stage's
    metrics and validation curve."""
    tags = {RUN_DIR_KEY_TAG: run_dir_key(run_dir), CONFIG_TAG: digest(config), METRICS_SHA_TAG: metrics_sha}
    for stage, m in run["stages"].items():
        tags[STAGE_SHA_TAG + stage] = digest(m)
        tags[CURVE_SHA_TAG + stage] = digest(m.get("fit", {}).get("history", []))
    return tags


def _params(config: dict) -> dict[str, str]:
    return {k: v[:6000] for k, v in flatten(config).items()}


def _continues(had: dict[str, str], run: dict, digests: dict[str, str]) -> bool:
    """Whether the state ``digests`` describes continues the MLflow run tagged ``had``: the same config,
    each stage it logged (metrics or curve) still in the folder, each curve it logged the same."""
    stages_had = {k[len(prefix):] for k in had for prefix in (STAGE_SHA_TAG, CURVE_SHA_TAG) if k.startswith(prefix)}
    return had.get(CONFIG_TAG) == digests[CONFIG_TAG] and not stages_had - set(run["stages"]) and all(
        had.get(CURVE_SHA_TAG + s, digests[CURVE_SHA_TAG + s]) == digests[CURVE_SHA_TAG + s] for s in run["stages"])


def _match(found: list, run: dict, config: dict, digests: dict[str, str]):
    """Of the folder's runs (newest first), the one this state is or continues: one holding it exactly
    (the same config and ``metrics.json``); else the newest it continues; else, where only runs logged
    before the digests exist, one of the same ``metrics.json`` and params. None: a new run."""
    keyed = [r for r in found if RUN_DIR_KEY_TAG in r.data.tags]
    if not keyed:
        return next((r for r in found if r.data.tags.get(METRICS_SHA_TAG) == digests[METRICS_SHA_TAG]
                     and r.data.params == _params(config)), None)
    exact = (r for r in keyed if all(r.data.tags.get(k) == digests[k] for k in (CONFIG_TAG, METRICS_SHA_TAG)))
    return next(exact, None) or next((r for r in keyed if _continues(r.data.tags, run, digests)), None)


def log_training_run(paths: Paths, run_dir: Path | str, experiment: str = TRAINING_EXPERIMENT,
                     tags: dict[str, str] | None = None, artifacts: Iterable[Path] = ()) -> str:
    """Log the finished run folder ``run_dir`` (its ``metrics.json``) as an MLflow run; returns its id.
    The same finished run logged again returns the MLflow run already logged; a run folder with new or
    re-scored stages updates it, one with a stage trained again starts a new one (the module's docstring)."""
    from mlflow.entities import Metric, Param, RunTag

    run_dir = Path(run_dir).resolve()
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path} is missing: the run in {run_dir} has not finished")
    run, config, digests = _state(run_dir)
    mlc = client(paths)
    exp = experiment_id(mlc, paths, experiment)
    logged = _match(runs_of_folder(mlc, [exp], run_dir), run, config, digests)
    if logged is not None and RUN_DIR_KEY_TAG not in logged.data.tags:  # logged before runs carried digests
        mlc.log_batch(logged.info.run_id, tags=[RunTag(k, v) for k, v in digests.items()])  # it now says what it holds
        return logged.info.run_id
    if logged is not None and logged.data.tags.get(METRICS_SHA_TAG) == digests[METRICS_SHA_TAG]:
        return logged.info.run_id
    all_tags = {**run_tags(run_dir, run, config), **(tags or {})}
    if logged is None:
        run_id, changed = mlc.create_run(exp, run_name=run_dir.name).info.run_id, list(run["stages"])
        had, had_metrics, had_params = {}, {}, {}
    else:  # the stages that are new or whose figures changed (a stage scored again: its seconds)
        run_id, had = logged.info.run_id, logged.data.tags
        had_metrics, had_params = logged.data.metrics, logged.data.params
        changed = [s for s in run["stages"] if had.get(STAGE_SHA_TAG + s) != digests[STAGE_SHA_TAG + s]]
    try:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for s in changed for k, v in stage_metrics(s, run["stages"][s]).items()
                   if had_metrics.get(k) != v]
        new_curves = [s for s in changed if CURVE_SHA_TAG + s not in had]  # one logged is this same curve
        metrics += [Metric(k, v, now, step) for s in new_curves for k, v, step in curve(s, run["stages"][s])]
        params = [Param(k, v) for k, v in _params(config).items() if k not in had_params]
        tag_list = [RunTag(k, str(v)) for k, v in all_tags.items()]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limits: 1000 metrics, 100 params / tags
            mlc.log_batch(run_id, metrics=metrics[i:i + 1000])
        curves_done = [RunTag(CURVE_SHA_TAG + s, digests[CURVE_SHA_TAG + s]) for s in new_curves]
        for i in range(0, len(curves_done), 100):  # at once: a logging that fails after this never logs them twice
            mlc.log_batch(run_id, tags=curves_done[i:i + 100])
        for i in range(0, max(len(params), len(tag_list)), 100):
            mlc.log_batch(run_id, params=params[i:i + 100], tags=tag_list[i:i + 100])
        for path in [metrics_path, run_dir / "training_set.json", *map(Path, artifacts)]:
            if path.is_file():
                mlc.log_artifact(run_id, str(path))
            elif path.is_dir():
                mlc.log_artifacts(run_id, str(path), path.name)
        # last: what was logged, so a logging that fails part-way is completed by the next one
        done = [RunTag(k, v) for k, v in digests.items()]
        for i in range(0, len(done), 100):
            mlc.log_batch(run_id, tags=done[i:i + 100])
        mlc.set_terminated(run_id)
    except BaseException:
        if logged is None:  # an update leaves the finished run's status, and its figures, as they were
            mlc.set_terminated(run_id, status="FAILED")
        raise
    if logged is None:
        log.info("run %s logged to MLflow (%s) as run %s", run_dir.name, public_uri(tracking_uri(paths)), run_id)
    else:
        log.info("run %s: MLflow run %s updated (%s)", run_dir.name, run_id,
                 f"stages {', '.join(changed)}" if changed else "its metrics.json")
    return run_id


def log_report(paths: Paths, folder: Path, experiment: str, tags: dict[str, str]) -> str:
    """A benchmark's report (``results.json``, ``report.md``, the plots) as one MLflow run of ``experiment``."""
    mlc = client(paths)
    run_id = mlc.create_run(experiment_id(mlc, paths, experiment), run_name=f"report {folder.name}",
                            tags={**tags, "clickprompt.report_dir": str(folder)}).info.run_id
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in {".json", ".md", ".png"}:
            mlc.log_artifact(run_id, str(path))
    mlc.set_terminated(run_id)
    return run_id
