"""``clickprompt features ...``: the Feast feature store - definitions, the online store, training sets
as values and the bundles that carry them (``data.py`` holds the data path before it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from cli.common import add_profile, entity_id, fractions, print_json, require_feature_store, spec_of
from core.names import CLICKPROMPT_SERVICE, CTR_SERVICE
from core.settings import Paths
from core.spec import SPLIT_POLICIES

SERVICES = (CTR_SERVICE, CLICKPROMPT_SERVICE)  # the versioned feature services every spec's features apply


def _current_snapshots(paths: Paths, spec) -> None:
    """Snapshots a killed writer left stale are exported again before Feast reads them."""
    from ingestion.snapshots import reconcile_snapshots

    problem = reconcile_snapshots(spec, paths.warehouse, paths.snapshots)
    if problem:
        print(f"rebuilt the snapshots: {problem}")


def cmd_features_apply(args, paths: Paths) -> int:
    from feature_repo.store import apply
    from ingestion.warehouse import require_warehouse

    require_warehouse(paths.warehouse)
    spec = spec_of(paths, args.dataset)
    _current_snapshots(paths, spec)
    defs = apply(spec, paths)
    print(f"applied entities {[e.name for e in defs.entities]}, views {list(defs.views)}, services {list(defs.services)}")
    return 0


def cmd_features_materialize(args, paths: Paths) -> int:
    from feature_repo.online import materialize

    require_feature_store(paths)
    spec = spec_of(paths, args.dataset)
    _current_snapshots(paths, spec)
    out = materialize(spec, paths)
    print(f"materialized {out['views']} up to {out['end']}")
    return 0


def cmd_features_training_set(args, paths: Paths) -> int:
    from feature_repo.training_sets import build_training_sets

    require_feature_store(paths)
    spec = spec_of(paths, args.dataset)
    _current_snapshots(paths, spec)
    ref = build_training_sets(spec, paths, service=args.service, fractions=args.fractions, policy=args.split)
    print_json({"ref": ref.to_dict(), "manifest": ref.manifest().to_dict()})
    return 0


def cmd_features_export_bundle(args, paths: Paths) -> int:
    """A training bundle (models.train.bundle) from a build: the newest of the service, or --training-set."""
    from core.training_data import TrainingSetRef
    from feature_repo.training_sets import latest_training_set
    from models.train.bundle import export_bundle
    from models.train.config import build_config, parse_set

    ref = TrainingSetRef.of(args.training_set) if args.training_set else latest_training_set(paths, args.service)
    cfg = build_config(args.profile, args.method, args.backbone, parse_set(args.set or []))
    plm = None
    if args.with_plm:
        plm = paths.plm_source(cfg.plm)
        if not Path(plm).is_dir():
            raise FileNotFoundError(f"PLM {cfg.plm!r} is not a folder here ({plm}): run `clickprompt plm fetch "
                                    f"{cfg.plm}` first, or export without --with-plm")
    out = export_bundle(ref, Path(args.dir), cfg, Path(plm) if plm else None)
    print(f"bundle {out}: training set {ref.identity} ({ref.manifest().split_policy}), config {cfg.profile}/"
          f"{cfg.method}/{cfg.backbone}{', PLM ' + cfg.plm if plm else ''}")
    print(f"train it anywhere torch runs: python -m models.train --bundle {out}")
    return 0


def cmd_features_engines(args, paths: Paths) -> int:
    from core.backends import Backends
    from feature_repo.online_engines import online_engine
    from feature_repo.store import raw_config

    backends = Backends.from_env()
    config = raw_config(paths, backends)
    config["online_store"] = online_engine(paths, backends).public_config()  # no password
    print_json({"engines": {**backends.to_dict(), "redis": backends.online_label}, "feature_store": config})
    return 0


def cmd_features_online(args, paths: Paths) -> int:
    from feature_repo.online import online_features

    require_feature_store(paths)
    spec = spec_of(paths, args.dataset)
    row = {spec.entities["user"].key: args.user_id, spec.entities["item"].key: args.item_id}
    values = online_features(paths, [row], service=args.service)
    print_json({k: v[0] for k, v in values.items()})
    return 0


# --- language models -------------------------------------------------------------------


def add_commands(sub, add: Callable) -> None:
    def dataset_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", help="data set spec name (default: the one in the warehouse)")

    feats = sub.add_parser("features", help="the Feast feature store").add_subparsers(dest="features_cmd", required=True)
    dataset_opt(add(feats, "apply", cmd_features_apply, "register entities, feature views and services"))
    dataset_opt(add(feats, "materialize", cmd_features_materialize, "load the online store (SQLite; Redis when configured)"))
    p = add(feats, "training-set", cmd_features_training_set, "point-in-time train/valid/test sets via Feast")
    dataset_opt(p)
    p.add_argument("--service", default=CLICKPROMPT_SERVICE, choices=SERVICES, help="feature service (default "
                   f"{CLICKPROMPT_SERVICE}: IDs and text; {CTR_SERVICE}: IDs only)")
    p.add_argument("--fractions", type=fractions, default=(0.8, 0.1, 0.1), help="train,valid,test fractions "
                   "(default 0.8,0.1,0.1)")
    p.add_argument("--split", choices=SPLIT_POLICIES, help="split policy (default: the data set spec's): "
                   "global-temporal | per-user-temporal | random")
    p = add(feats, "export-bundle", cmd_features_export_bundle, "write a training bundle (a training set, its spec, "
            "the run config, optionally the PLM) that `python -m models.train --bundle DIR` trains anywhere")
    p.add_argument("dir", help="the bundle folder: new, empty or an earlier bundle (replaced whole); any other folder is refused")
    p.add_argument("--service", default=CLICKPROMPT_SERVICE, choices=SERVICES, help="whose newest training set "
                   f"(default {CLICKPROMPT_SERVICE})")
    p.add_argument("--training-set", metavar="FOLDER", help="a build folder under data/training_sets (default: the "
                   "service's newest)")
    add_profile(p, "demo", "the run config's training profile: smoke | demo | default | paper (default demo)")
    p.add_argument("--method", default="clickprompt")
    p.add_argument("--backbone")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. plm=minilm-l6")
    p.add_argument("--with-plm", action="store_true", help="copy the config's PLM folder into the bundle")
    add(feats, "engines", cmd_features_engines, "the configured engines (offline / online store, task runner) "
        "and the Feast store config they give")
    p = add(feats, "online", cmd_features_online, "look up one user/item pair in the online store")
    dataset_opt(p)
    p.add_argument("--user-id", type=entity_id, required=True)
    p.add_argument("--item-id", type=entity_id, required=True)
    p.add_argument("--service", default=CLICKPROMPT_SERVICE, choices=SERVICES, help=f"default {CLICKPROMPT_SERVICE}")
