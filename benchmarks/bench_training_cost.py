"""Training-cost benchmark: FLOPs per sample (counted), samples/s and utilisation of every stage.

    .venv/bin/python benchmarks/bench_training_cost.py [--profile demo] [--stages ...] [--batches 10]
        [--rounds 3] [--no-choices] [--plm-shape bert-base] [--set key=value ...] [--out artifacts/bench/cost]

Reads the training sets of the project home (``make data`` builds them). Prints one table: each
stage as configured, then each waste-cutting choice against its alternative on the same batches
(restricted vs full MLM decoder, length-grouped vs random batches, threads, bf16 autocast on the
CPU, torch.compile); writes ``cost.json`` and ``cost.md`` to ``--out``. The ceiling is the GEMM of
the device the model runs on (bf16 on CUDA, float32 on the CPU; ``--set device=cuda``), named in the
table; each stage's row carries its peak memory (CUDA memory allocated, or the process's peak RSS).
``--plm-shape bert-base`` (or ``bert-large``, ``minilm-l6``, ``<layers>x<hidden>``) times an LM of
that shape with random weights and the configured PLM's tokenizer: the paper's shape, no download.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from benchmarks.ceiling import random_plm
from benchmarks.cost import cost_table, measure_costs
from core.settings import Paths, apply_environment_defaults
from core.training_data import load_training_data
from feature_repo.training_sets import latest_training_set
from models.train.config import load_config, parse_set
from models.train.prepare import prepare
from models.train.stages import CLICKPROMPT_STAGES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--stages", nargs="+", default=[str(s) for s in CLICKPROMPT_STAGES])
    parser.add_argument("--batches", type=int, default=10, help="timed batches per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (median kept)")
    parser.add_argument("--no-choices", action="store_true", help="only the stages as configured")
    parser.add_argument("--plm-shape", default=None, metavar="SHAPE",
                        help="an LM of this shape with random weights: bert-base, bert-large, minilm-l6, <layers>x<hidden>")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    apply_environment_defaults()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("clickprompt.plm", "clickprompt.train", "models.prompt", "clickprompt.trainer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    paths = Paths.default()
    cfg = load_config(args.profile, parse_set(args.set))
    out = args.out or paths.artifacts / "bench" / f"cost-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    plm_source = paths.plm_source(cfg.plm)
    if args.plm_shape:
        plm_source = random_plm(args.plm_shape, plm_source, out / f"plm-{args.plm_shape}", cfg.max_len)
    ctx = prepare(cfg, load_training_data(latest_training_set(paths)), out / "run", list(args.stages), plm_source)
    result = measure_costs(ctx, args.stages, args.batches, args.rounds, choices=not args.no_choices)
    result.update(profile=args.profile, plm_shape=args.plm_shape, machine=f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                  f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    (out / "cost.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    table = cost_table(result)
    (out / "cost.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
