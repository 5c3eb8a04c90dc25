"""The benchmark suite (issue: quality, long tail and efficiency on real data, with plots).

    .venv/bin/python benchmarks/run_suite.py [--profile smoke|cpu|gpu] [--seeds 1 2 3] [--only RUN ...]

Needs the data path done (``make demo``, or the README's data commands) and the default LM
fetched. Writes artifacts/bench/<timestamp>/{results.json, report.md, *.png} and prints the report.
"""

from __future__ import annotations

import argparse
import logging
from datetime import datetime, timezone
from pathlib import Path

from clickprompt.bench.suite import BENCH_PROFILES, run_suite, suite
from clickprompt.settings import Paths
from models.config import parse_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=sorted(BENCH_PROFILES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--only", nargs="+", choices=[r.name for r in suite()[0]], help="a subset of the runs")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every run, e.g. plm=roberta-base")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    paths = Paths.default()
    out = args.out or paths.artifacts / "bench" / f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{args.profile}"
    results = run_suite(args.profile, args.seeds, paths, out, only=args.only, overrides=parse_set(args.set or []))
    print((results.parent / "report.md").read_text())
    print(f"written to {results.parent}")


if __name__ == "__main__":
    main()
