"""Train from a bundle where only torch runs: ``python -m models.train --bundle DIR [--out RUN_DIR]``.

Imports torch, transformers, pydantic, pandas, pyarrow, safetensors, yaml and tqdm only (no Feast,
DuckDB, Prefect or Great Expectations; tests/models/test_bundle.py audits it). Prints the test
metrics of each stage and writes the run folder (default ``<bundle>/runs/<run id>``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, type=Path, help="a folder from `clickprompt features export-bundle`")
    p.add_argument("--out", type=Path, help="run folder (default: <bundle>/runs/<run id>)")
    p.add_argument("--profile", help="training profile (default: the bundle's config, else demo)")
    p.add_argument("--stages", nargs="+", help="stages to train (default: the method's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. seed=2")
    p.add_argument("--json", action="store_true", help="print the run's metrics as JSON")
    return p


def train_bundle(bundle_dir: Path, out: Path | None = None, profile: str | None = None,
                 stages: list[str] | None = None, overrides: dict | None = None) -> tuple[Path, dict]:
    """Train ``stages`` from the bundle into ``out``; (run folder, the run's metrics)."""
    from models.train.bundle import Bundle
    from models.train.run import default_run_id, run_lock, run_training
    from models.train.stages import default_stages

    bundle = Bundle(bundle_dir)
    cfg = bundle.config(profile, overrides)
    data = bundle.data()
    run_dir = out or bundle.folder / "runs" / default_run_id(cfg, bundle.ref.identity)
    with run_lock(run_dir):
        summary = run_training(cfg, data, stages or default_stages(cfg.method), run_dir, bundle.plm_source(cfg))
    return run_dir, summary


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from core.locks import Busy
    from models.metrics import stage_rows, text_table
    from models.train.config import parse_set

    try:
        run_dir, summary = train_bundle(args.bundle, args.out, args.profile, args.stages, parse_set(args.set))
    except (FileNotFoundError, ValueError, Busy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"run {run_dir}")
        print(text_table(stage_rows(summary["stages"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
