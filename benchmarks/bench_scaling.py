"""How the data path's cost grows: generated MovieLens-1M-shaped data at 0.1M, 1M and 10M events.

    .venv/bin/python benchmarks/bench_scaling.py [--sizes 100000 1000000 10000000] [--out DIR]

The data has ML-1M's field kinds and cardinality ratios (6,040 users and 3,883 movies per million
ratings; GroupLens '::' layout, latin-1 titles, age and occupation codes, pipe-separated genres,
ratings 1..5 over 2000-2003) and goes through the real path with the movielens-1m spec: parse,
stage, GX gates, upsert, SQL text rendering, text gates, snapshots (``ingest``'s own step
timings), Feast apply, the point-in-time training sets (join + parquet), materialize. Each size
runs in a fresh process, so its peak memory is its own; memory per stage is the peak resident
memory sampled during that stage (every 20 ms) above the process's memory when the stage began.
Prints a table and each stage's growth exponent (the slope of log time over log events; 1 is
linear), and writes ``scaling.json``, ``scaling.md`` and the log-log plot ``scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

USERS_PER_M, ITEMS_PER_M = 6040, 3883
AGES = (1, 18, 25, 35, 45, 50, 56)
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
WORDS = ("Star", "Night", "Love", "Return", "City", "Dark", "Story", "King", "Blue", "Last", "Café", "Noël")


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Sampler:
    """Resident memory sampled in a thread: (time, MB) pairs."""

    def __init__(self, every: float = 0.02) -> None:
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), rss_mb()))
            time.sleep(self.every)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_above(self, start: float, end: float) -> float:
        """Peak MB in [start, end] above the first sample of the window."""
        window = [mb for t, mb in self.samples if start <= t <= end] or [rss_mb()]
        before = [mb for t, mb in self.samples if t <= start]
        base = before[-1] if before else window[0]
        return max(0.0, max(window) - base)


def generate(folder: Path, events: int, seed: int = 0) -> None:
    """ML-1M-shaped raw files in GroupLens's layout."""
    rng = np.random.default_rng(seed)
    n_users = max(50, round(events * USERS_PER_M / 1e6))
    n_items = max(30, round(events * ITEMS_PER_M / 1e6))
    folder.mkdir(parents=True, exist_ok=True)
    gender = rng.choice(["M", "F"], n_users)
    age = rng.choice(AGES, n_users)
    occupation = rng.integers(0, 21, n_users)
    zips = rng.integers(10000, 99999, n_users)
    (folder / "users.dat").write_text("\n".join(f"{u + 1}::{gender[u]}::{age[u]}::{occupation[u]}::{zips[u]}"
                                                for u in range(n_users)) + "\n", encoding="utf-8")
    years = rng.integers(1920, 2001, n_items)
    lines = []
    for i in range(n_items):
        title = " ".join(rng.choice(WORDS, rng.integers(1, 4)))
        genres = "|".join(sorted(rng.choice(GENRES, rng.integers(1, 4), replace=False)))
        lines.append(f"{i + 1}::{title} {i} ({years[i]})::{genres}")
    (folder / "movies.dat").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    # popularity like real ratings: a few users and items take many events
    users = (rng.pareto(1.2, events) * n_users / 20).astype(np.int64) % n_users + 1
    items = (rng.pareto(1.0, events) * n_items / 20).astype(np.int64) % n_items + 1
    ratings = rng.choice([1, 2, 3, 4, 5], events, p=[0.06, 0.11, 0.26, 0.35, 0.22])
    start, end = 956703932, 1046454590  # 2000-04-25 .. 2003-02-28, ML-1M's range
    ts = np.sort(rng.integers(start, end, events))
    with (folder / "ratings.dat").open("w", encoding="utf-8") as fh:
        for lo in range(0, events, 1_000_000):
            hi = min(events, lo + 1_000_000)
            fh.write("\n".join(f"{u}::{i}::{r}::{t}" for u, i, r, t in
                               zip(users[lo:hi].tolist(), items[lo:hi].tolist(), ratings[lo:hi].tolist(),
                                   ts[lo:hi].tolist())) + "\n")


def measure_one(events: int) -> dict:
    """Every stage at one size, in this process (run by ``--one``)."""
    from core.settings import Paths, apply_environment_defaults

    apply_environment_defaults()
    from core.spec import load_spec
    from feature_repo.online import materialize
    from feature_repo.store import apply
    from feature_repo.training_sets import build_training_sets
    from ingestion.warehouse import ingest
    from validation import gate

    spec = load_spec("movielens-1m")
    work = Path(tempfile.mkdtemp(prefix="cp-scaling-"))
    raw, home = work / "raw", Paths(work / "home")
    t = time.perf_counter()
    generate(raw, events)
    out: dict = {"events": events, "generate_s": round(time.perf_counter() - t, 2), "stages": {}}
    with Sampler() as mem:
        t0 = time.perf_counter()
        report = ingest(spec, raw, home.warehouse, home.snapshots, gate)
        cursor = t0
        for name, secs in report.steps.items():  # ingest's steps run one after the other
            out["stages"][name] = {"seconds": secs, "peak_mb": mem.peak_above(cursor, cursor + secs)}
            cursor += secs
        for name, fn in (("feast apply", lambda: apply(spec, home)),
                         ("training sets", lambda: build_training_sets(spec, home)),
                         ("materialize", lambda: materialize(spec, home))):
            start = time.perf_counter()
            fn()
            end = time.perf_counter()
            out["stages"][name] = {"seconds": round(end - start, 3), "peak_mb": mem.peak_above(start, end)}
    out["peak_rss_mb"] = max(mb for _, mb in mem.samples)
    out["rows_after"] = report.rows_after
    shutil.rmtree(work, ignore_errors=True)
    return out


def exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """Least-squares slope of log(seconds) over log(size)."""
    pts = [(math.log(n), math.log(s)) for n, s in zip(sizes, seconds) if s > 0]
    if len(pts) < 2:
        return None
    xs, ys = zip(*pts)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x in xs)


def table(results: list[dict]) -> str:
    sizes = [r["events"] for r in results]
    stages = list(results[0]["stages"])
    head = " | ".join(f"{n / 1e6:g}M events: s (MB)" for n in sizes)
    lines = [f"| stage | {head} | growth exponent |", "|---|" + "---|" * (len(sizes) + 1)]
    for st in stages:
        cells = " | ".join(f"{r['stages'][st]['seconds']:.2f} ({r['stages'][st]['peak_mb']:,.0f})" for r in results)
        k = exponent(sizes, [r["stages"][st]["seconds"] for r in results])
        lines.append(f"| {st} | {cells} | {'n/a' if k is None else f'{k:.2f}'} |")
    total = " | ".join(f"{sum(s['seconds'] for s in r['stages'].values()):.1f} (peak RSS {r['peak_rss_mb']:,.0f})"
                       for r in results)
    lines.append(f"| **total** | {total} | {exponent(sizes, [sum(s['seconds'] for s in r['stages'].values()) for r in results]) or 0:.2f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["events"] for r in results]
    fig, ax = plt.subplots(figsize=(8, 5))
    for st in results[0]["stages"]:
        secs = [max(r["stages"][st]["seconds"], 1e-3) for r in results]
        k = exponent(sizes, secs)
        ax.plot(sizes, secs, marker="o", label=f"{st} (x^{k:.2f})" if k is not None else st)
    ax.plot(sizes, [sizes[0] and (s / sizes[0]) * 0.1 for s in sizes], "k:", label="linear (slope 1)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events")
    ax.set_ylabel("seconds")
    ax.set_title("Data path cost by stage, MovieLens-1M-shaped data (log-log)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # one size, in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one)))
        return
    from core.io import write_json_atomic, write_text_atomic

    out = args.out or Path("artifacts/bench") / f"scaling-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in sorted(args.sizes):
        print(f"{n:,} events ...", flush=True)
        done = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"the {n:,}-event run failed")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"  {sum(s['seconds'] for s in r['stages'].values()):.1f} s, peak RSS {r['peak_rss_mb']:,.0f} MB", flush=True)
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores"
    text = f"Machine: {machine}\n\n" + table(results)
    write_json_atomic(out / "scaling.json", {"machine": machine, "results": results})
    write_text_atomic(out / "scaling.md", text + "\n\n![scaling](scaling.png)\n")
    plot(results, out / "scaling.png")
    print(text)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
