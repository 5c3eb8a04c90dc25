"""Fit and finish the stages of a run: the one owner of training that the flows, the CLI, the
benchmarks and a training bundle all call.

``run_training(cfg, data, stages, run_dir)`` prepares the run once (``models.train.prepare``), fits
each stage (``models.train.setups``) with the shared trainer, scores it once (a CTR stage on the
whole test split with its best weights, a pretraining stage on its held-out checks) and writes
``<run_dir>/<stage>/{model.safetensors, metrics.json}``; ``finish_run`` merges the finished stages
into the run's ``metrics.json``, written once, complete (its presence marks a finished run).

The resume rule, one for every caller: a stage (or a run) is finished when its metrics carry the
same fingerprint (config hash + the training set's manifest hash; a finetuning's also names the
pretraining it started from, ``stage_fingerprint``); an interrupted stage resumes
from its last checkpoint with the same fingerprint (``models.train.trainer``); anything else is
trained again. Early stopping uses the validation split; the test split is scored once.

Under torchrun (``models.train.distributed``) every rank runs the same ``run_training``: rank 0
alone writes, evaluates and scores, and each stage's metrics reach every rank by broadcast.
``clickprompt train`` runs the pipeline on rank 0 only; the other ranks ``follow_training``.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.io import digest, sha256_file, write_json_atomic
from core.locks import exclusive
from core.training_data import TrainingData
from models.ctr import count_params
from models.evaluate import evaluate
from models.metrics import pretrain_summary
from models.runtime import predict, predict_parts, save_weights, seed_everything
from models.train import distributed
from models.train.config import TrainConfig
from models.train.prepare import PREPARED_DIR, RunContext, prepare
from models.train.setups import SETUPS, StageSetup, fusion_parts
from models.train.stages import ALIGNMENT_METHODS, FROM_SCRATCH, STAGES, Stage, check_stages
from models.train.trainer import FitResult, Trainer, result_dict

log = logging.getLogger("clickprompt.train")

RUN_METRICS = "metrics.json"


def default_run_id(cfg: TrainConfig, training_set_identity: str) -> str:
    """Deterministic from the config and the training set's identity (snapshot, service, split,
    window): a re-run after a failure lands in the same run folder (and resumes there); new data,
    another window or another config starts a new run."""
    return f"{cfg.profile}-{cfg.method}-{cfg.backbone}-{digest(cfg.config_hash(), training_set_identity)[:10]}"


RUN_LOCK = ".lock"  # inside the run folder: who trains it now (core.locks)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """The run folder to one trainer at a time (``<run_dir>/.lock``): a second pipeline on the same
    run id waits (bounded, ``$CLICKPROMPT_LOCK_WAIT``) and then fails with ``run <id> is busy (pid N
    since T)``. Taken by the process that leads (rank 0 under torchrun: the other ranks follow it)."""
    if not distributed.current().is_main:
        yield
        return
    with exclusive(run_dir / RUN_LOCK, f"run {run_dir.name}"):
        yield


def fingerprint(cfg: TrainConfig, data_id: str) -> str:
    """What a finished stage, a finished run and a checkpoint must match to be taken: same config, same data."""
    return f"{cfg.config_hash()}-{data_id[:16]}"


def stage_fingerprint(run_dir: Path, stage: str, cfg: TrainConfig, data_id: str) -> str:
    """``fingerprint``, and for a stage that starts from the run's pretraining, which one (the digest of
    the weights it loads, ``pretrain/model.safetensors``, or none): a finetuning trained before its
    pretraining is trained again after it, not taken (or resumed) as if it had started from it. The
    weights, not the metrics: a finished pretraining scored again rewrites its seconds, not its weights."""
    base = fingerprint(cfg, data_id)
    if stage in FROM_SCRATCH:
        return base
    weights = run_dir / Stage.PRETRAIN / "model.safetensors"
    return f"{base}-{_digest_of(weights)[:12] if weights.is_file() else 'no-pretrain'}"


def _digest_of(path: Path) -> str:
    stat = path.stat()
    return _cached_digest(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _cached_digest(path: str, mtime_ns: int, size: int) -> str:  # hundreds of MB for a base-sized LM: once
    return sha256_file(Path(path))


def fit_stage(ctx: RunContext, stage: Stage) -> dict:
    """Train ``stage`` (resumable), then score it once: a CTR stage on the whole test split with its
    best weights (a with-LM model's branches on the same rows too), a pretraining stage on its
    held-out checks. Writes ``<stage>/model.safetensors`` and ``<stage>/metrics.json``. Seeded per
    stage: a stage's weights start the same whether it trains alone or after other stages. Its
    ``seconds``: the time of the processes that trained it before (its checkpoint's) plus this whole
    call, preparation and scoring included, so a stage resumed or scored again keeps the time it took
    to train."""
    called = time.perf_counter()
    seed_everything(ctx.cfg.seed)
    setup = SETUPS[stage](ctx)
    sc, out_dir = setup.stage_cfg, ctx.stage_dir(stage)
    desc = f"{stage}-{ctx.cfg.method}" if stage == Stage.PRETRAIN and ctx.cfg.method in ALIGNMENT_METHODS else stage
    fp = stage_fingerprint(ctx.run_dir, stage, ctx.cfg, ctx.data_id)  # its checkpoints' and its metrics'
    trainer = Trainer(setup.model, sc, setup.param_groups, out_dir, ctx.device, ctx.cfg.amp, ctx.cfg.seed,
                      desc=desc, fingerprint=fp)
    rows = (setup.train if setup.train is not None else ctx.split("train", stage)).head(sc.max_train_samples,
                                                                                          ctx.cfg.seed)
    if setup.before_fit is not None:  # a resumed fit then loads its checkpoint's weights over these
        setup.before_fit(rows)
    fit = trainer.fit(rows, setup.step_fn, setup.eval_fn, monitor=setup.monitor, mode=setup.mode)
    # rank 0 scores and writes; every rank returns its metrics
    metrics = distributed.broadcast_object(
        _finish_stage(ctx, stage, setup, fit, fp, called) if distributed.current().is_main else None)
    ctx.results[stage] = metrics
    return metrics


def _finish_stage(ctx: RunContext, stage: Stage, setup: StageSetup, fit: FitResult, fp: str, called: float) -> dict:
    """The fitted stage scored (test split or held-out checks), its weights and metrics.json written
    (``called``: when ``fit_stage`` began, for the stage's ``seconds``)."""
    out_dir = ctx.stage_dir(stage)
    metrics: dict = {"stage": str(stage), "method": ctx.cfg.method, "backbone": ctx.cfg.backbone}
    if setup.score_fn is None:
        metrics["valid"] = setup.eval_fn()
    else:
        metrics.update(valid_auc=fit.best_metric, **_test_metrics(ctx, stage, setup))
    metrics.update(trained_on={"rows": fit.train_rows, "epochs": round(fit.epochs_run, 3)}, fit=result_dict(fit),
                   config_hash=ctx.cfg.config_hash(), snapshot_hash=ctx.snapshot_hash, training_set_hash=ctx.data_id,
                   fingerprint=fp, **setup.extra())
    metrics.setdefault("params", count_params(setup.model))
    save_weights(setup.model, out_dir / "model.safetensors")
    metrics["seconds"] = round(fit.resumed_seconds + time.perf_counter() - called, 2)
    write_json_atomic(out_dir / "metrics.json", metrics)
    if setup.score_fn is None:
        log.info("%s (%s): %s", stage, ctx.cfg.method, pretrain_summary(metrics))
    else:
        log.info("%s: test AUC %.4f, LogLoss %.4f (best valid AUC %.4f)", stage, metrics["test"]["auc"],
                 metrics["test"]["logloss"], fit.best_metric)
    if "branches" in metrics:
        b = metrics["branches"]
        log.info("%s on the same test rows: fused AUC %.4f, CTR branch alone %.4f, LM branch alone %.4f, a=%.3f",
                 stage, b["fused"]["auc"], b["ctr_branch"]["auc"], b["lm_branch"]["auc"], metrics["a"])
    return metrics


def _test_metrics(ctx: RunContext, stage: Stage, setup: StageSetup) -> dict:
    """The test split scored once; per-row predictions kept for the long-tail analysis."""
    data, sc = ctx.split("test", stage), setup.stage_cfg
    out: dict = {}
    if setup.fused:
        probs = predict_parts(setup.model, data, fusion_parts, sc.eval_batch_size, ctx.device, ctx.cfg.amp)
        out["branches"] = {name: evaluate(data.label.numpy(), p) for name, p in probs.items()}
        prob = probs["fused"]
    else:
        prob = predict(setup.model, data, setup.score_fn, sc.eval_batch_size, ctx.device, ctx.cfg.amp)
    out["test"] = evaluate(data.label.numpy(), prob)
    data.meta.assign(label=data.label.numpy(), probability=prob).to_parquet(
        ctx.stage_dir(stage) / "test_predictions.parquet", index=False)
    return out


def run_training(cfg: TrainConfig, data: TrainingData, stages: list[str], run_dir: Path,
                 plm_source: Path | str | None = None, finish: bool = True,
                 run_stages: list[str] | None = None) -> dict:
    """Run ``stages`` in order into ``run_dir`` on ``data``; return {stage: metrics}. ``finish``: then
    write the run's ``metrics.json`` over every finished stage (a flow that trains one stage per task
    leaves that to its evaluation step). ``run_stages``: every stage of the run (default ``stages``),
    so the run's one preparation holds the tokens if any of them needs text."""
    stages = check_stages(cfg.method, stages)
    distributed.announce((cfg, data, stages, run_dir, plm_source, finish, run_stages))  # the waiting ranks join in
    ctx = prepare(cfg, data, run_dir, [*stages, *(run_stages or [])], plm_source)
    for stage in stages:
        fit_stage(ctx, stage)
    summary = {"config_hash": cfg.config_hash(), "profile": cfg.profile, "method": cfg.method,
               "snapshot_hash": ctx.snapshot_hash, "training_set_hash": ctx.data_id, "stages": ctx.results}
    if finish and distributed.current().is_main:
        summary = finish_run(run_dir, order=stages)
    return summary


def finish_run(run_dir: Path, order: list[str] | None = None) -> dict:
    """Merge every finished stage's metrics into ``<run_dir>/metrics.json`` (written once, last: its
    presence marks a finished run) and return it. The run's preparation (``prepared/``, tens of MB of
    tensors) has served every stage by then and is removed. ``order``: the stages in the order trained
    (default: ``STAGES``'s)."""
    run = read_run(run_dir)
    if order:  # the stages as this run trained them first, then any others the folder holds
        run["stages"] = {**{s: run["stages"][s] for s in order if s in run["stages"]},
                         **{s: m for s, m in run["stages"].items() if s not in order}}
    write_json_atomic(run_dir / RUN_METRICS, run)
    shutil.rmtree(run_dir / PREPARED_DIR, ignore_errors=True)
    return run


def read_run(run_dir: Path) -> dict:
    """The run's metrics merged over every finished stage folder, in training order."""
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"no training run in {run_dir}")
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    found = {p.parent.name: p for p in run_dir.glob("*/metrics.json")}
    order = [s for s in STAGES if s in found] + sorted(set(found) - set(STAGES))
    stages = {s: json.loads(found[s].read_text(encoding="utf-8")) for s in order}
    if not stages:
        raise FileNotFoundError(f"no finished stage in {run_dir}")
    first = next(iter(stages.values()))
    training_set = run_dir / "training_set.json"
    return {"config_hash": first["config_hash"], "profile": config["profile"], "method": config["method"],
            "backbone": config["backbone"], "snapshot_hash": first["snapshot_hash"],
            "training_set_hash": first.get("training_set_hash"),
            "training_set_ref": json.loads(training_set.read_text(encoding="utf-8"))["ref"]
            if training_set.is_file() else None,
            "stages": stages}


def finished_stage(run_dir: Path, stage: str, cfg: TrainConfig, data_id: str) -> dict | None:
    """The stage's metrics when it finished with this config on this data (the resume rule), else None."""
    path = run_dir / stage / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text(encoding="utf-8"))
    return metrics if metrics.get("fingerprint") == stage_fingerprint(run_dir, stage, cfg, data_id) else None


def finished_run(run_dir: Path, cfg: TrainConfig, data_id: str, stages: list[str]) -> dict | None:
    """The run's metrics when every one of ``stages`` finished with this config on this data, else None."""
    path = run_dir / RUN_METRICS
    if not path.is_file():
        return None
    run = json.loads(path.read_text(encoding="utf-8"))
    if all(run["stages"].get(s, {}).get("fingerprint") == stage_fingerprint(run_dir, s, cfg, data_id) for s in stages):
        return run
    return None


def follow_training() -> None:
    """A rank after 0 of ``clickprompt train`` under torchrun: train every run rank 0's pipeline
    announces (cached stages are never announced), until rank 0 has finished."""
    while (job := distributed.next_job()) is not None:
        run_training(*job)
