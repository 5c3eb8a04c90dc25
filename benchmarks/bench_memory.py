"""Memory and speed of CPU training: glibc's own heap against a bounded one (``$CLICKPROMPT_HEAP_MMAP_MB``,
``models.runtime.bound_cpu_heap``).

    .venv/bin/python benchmarks/bench_memory.py [--plm minilm-l6] [--rows 1500] [--fits 3] [--repeats 1]
        [--bounded-mb 4] [--thp] [--set key=value ...]

Each mode runs in fresh processes, alternating order per repeat: ``--fits`` PA-MLM fits one after
another in one process (``--rows`` training rows each, the ``demo`` profile), the way a benchmark
suite trains run after run. Prints, per mode, the resident memory after each fit, the process's peak
and the fits' samples/s, then the ratios. Reads the training set of the project home (``make data``
builds it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = ("glibc", "bounded")  # $CLICKPROMPT_HEAP_MMAP_MB: 0 (glibc's own threshold), then --bounded-mb


def _vm() -> dict[str, float]:
    """Resident memory now and the process's peak so far (``benchmarks.efficiency.peak_rss_mb``), MB."""
    from benchmarks.efficiency import peak_rss_mb

    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return {"VmRSS": int(line.split()[1]) / 1024, "VmHWM": peak_rss_mb()}


def child(plm: str, rows: int, fits: int, sets: list[str], out: Path) -> None:
    """Fit PA-MLM ``fits`` times in this process; one JSON line per fit."""
    from core.settings import Paths, apply_environment_defaults
    from core.training_data import load_training_data
    from feature_repo.training_sets import latest_training_set
    from models.runtime import bound_cpu_heap
    from models.train.config import load_config, parse_set
    from models.train.run import run_training
    from models.train.stages import stage

    apply_environment_defaults()
    paths = Paths.default()
    data = load_training_data(latest_training_set(paths))
    overrides = {"plm": plm, "pretrain.max_train_samples": rows, "pretrain.max_eval_samples": 300,
                 **({"pretrain.head_warmup_steps": 5} if plm == "minilm-l6" else {}), **parse_set(sets)}
    print(json.dumps({"start": _vm(), "threshold": bound_cpu_heap()}), flush=True)
    for i in range(fits):
        cfg = load_config("demo", {**overrides, "seed": i + 1})
        t = time.perf_counter()
        metrics = run_training(cfg, data, [stage("pretrain")], out / f"fit{i + 1}", paths.plm_source(plm))
        seconds = time.perf_counter() - t
        trained = metrics["stages"]["pretrain"]
        print(json.dumps({"fit": i + 1, "seconds": seconds, "samples_per_s": trained["fit"]["samples_per_s"],
                          **_vm()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plm", default="minilm-l6")
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--fits", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--bounded-mb", type=float, default=4.0, help="the bounded mode's mmap threshold, MiB")
    parser.add_argument("--thp", action="store_true",
                        help="both modes with THP_MEM_ALLOC_ENABLE=1 (torch's CPU allocator asks for transparent huge pages)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/memory"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.plm, args.rows, args.fits, args.set, args.out)
        return
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    for r in range(args.repeats):
        for mode in MODES if r % 2 == 0 else reversed(MODES):
            env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "THP_MEM_ALLOC_ENABLE")}
            env["CLICKPROMPT_HEAP_MMAP_MB"] = "0" if mode == "glibc" else str(args.bounded_mb)
            if args.thp:
                env["THP_MEM_ALLOC_ENABLE"] = "1"
            folder = args.out / f"{mode}-{r}"
            shutil.rmtree(folder, ignore_errors=True)  # a finished run there would be taken, not trained again
            cmd = [sys.executable, __file__, "--child", "--plm", args.plm, "--rows", str(args.rows),
                   "--fits", str(args.fits), "--out", str(folder), *sum((["--set", s] for s in args.set), [])]
            print(f"{mode} (repeat {r + 1}) ...", flush=True)
            # the child's log and any traceback go straight to the terminal; its figures come on stdout
            done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
            if done.returncode != 0:
                sys.exit(f"bench_memory: the {mode} process (repeat {r + 1}) failed with exit code "
                         f"{done.returncode}; its error is above")
            lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
            wanted = None if mode == "glibc" else int(args.bounded_mb * 2**20)
            if lines[0]["threshold"] != wanted:  # not glibc, or MALLOC_MMAP_THRESHOLD_ / an allocator preloaded
                sys.exit(f"bench_memory: the {mode} process ran with mmap threshold {lines[0]['threshold']}, "
                         f"not {wanted}: this machine's allocator cannot be compared this way")
            fits = [x for x in lines if "fit" in x]
            results[mode].append({"fits": fits, "peak_mb": max(f["VmHWM"] for f in fits)})
            print("   " + "  ".join(f"fit {f['fit']}: RSS {f['VmRSS']:.0f} MB, {f['samples_per_s']:.1f} samples/s"
                                    for f in fits) + f"; peak {results[mode][-1]['peak_mb']:.0f} MB", flush=True)
    print(f"\n{args.plm}, PA-MLM, {args.fits} fits of {args.rows} rows per process, {args.repeats} process(es) per mode, "
          f"bounded = {args.bounded_mb:g} MiB mmap threshold" + (", THP_MEM_ALLOC_ENABLE=1" if args.thp else ""))
    print("| heap | RSS after each fit (MB) | peak RSS (MB) | samples/s (median of fits) |\n|---|---|---|---|")
    summary = {}
    for mode, runs in results.items():
        rss = [statistics.mean(run["fits"][i]["VmRSS"] for run in runs) for i in range(args.fits)]
        peak = statistics.mean(run["peak_mb"] for run in runs)
        speed = statistics.median(f["samples_per_s"] for run in runs for f in run["fits"])
        summary[mode] = {"rss_after_fit_mb": rss, "peak_mb": peak, "samples_per_s": speed}
        print(f"| {mode} | {', '.join(f'{x:.0f}' for x in rss)} | {peak:.0f} | {speed:.1f} |")
    g, b = summary["glibc"], summary["bounded"]
    print(f"\nbounded / glibc: peak {b['peak_mb'] / g['peak_mb']:.2f}x, samples/s {b['samples_per_s'] / g['samples_per_s']:.2f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "runs": results,
                                                      "summary": summary}, indent=1, default=str))


if __name__ == "__main__":
    main()
