"""Online serving: the latency budget per stage, batch requests, load at 1/8/32 clients, a promotion
under load, and the CTR-only model next to the same path with the LM.

    .venv/bin/python benchmarks/bench_serving.py [--run artifacts/runs/demo] [--requests 300] \
        [--clients 1 8 32] [--load-seconds 8] [--workers 1 2] [--json-out FILE]

Needs a training run with the finetuning stages and the baseline, and the Feast online store:

    make demo                       # or, quicker:
    make data && clickprompt train --profile smoke --run-id smoke \
        --stages baseline,pretrain,finetune-with-lm,finetune-ctr-only
    .venv/bin/python benchmarks/bench_serving.py --run artifacts/runs/smoke

Everything runs on loopback with a fixed request count and a time limit, and stops by itself:

1. A TEMPORARY registry (the project's is not touched) gets model ``ctr`` v1 (the run's
   ``finetune-ctr-only`` stage: ID features from ``ctr_v1``, no language model, production), v2
   (its ``baseline`` stage: the plain backbone, the same inference graph; promoted under load in
   step 5), and model ``clickprompt-lm`` (``finetune-with-lm``: the PLM in the loop).
2. ``clickprompt serve`` (uvicorn) in a subprocess per server configuration; clients are threads
   with one keep-alive ``http.client`` connection each (the lightest client the standard library
   has, so the client's own cost stays small on the shared 2 cores): ``benchmarks/http_load.py``.
3. **Sequential** ``POST /predict``: client-side p50 / p99, and the server's ``Server-Timing``
   laps per stage (parse, registry, online lookup, encode, forward, response, serialize) - where
   the time goes. Then ``POST /predict/batch`` with 100 pairs.
4. **Load** at each ``--clients`` count, per ``--workers`` setting: throughput, p50 / p99, errors.
5. **Promotion under load** (8 clients): ``ctr`` v2 is promoted mid-run; every response must name
   one version and carry that version's score for its pair (computed in this process beforehand
   from the same online features), with 0 errors; the switch time is the time from the
   promotion's commit to the last response from v1.
6. The with-LM model, sequential, for the CTR-only / with-LM ratio.

Figures depend on the machine and on what else runs on it; there are no assertions (the tests
check behaviour). One run; the client shares the cores with the server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.http_load import STAGES, Server, load, sequential  # noqa: E402
from core.names import CLICKPROMPT_SERVICE  # noqa: E402
from core.settings import Paths  # noqa: E402
from models.train.stages import Stage  # noqa: E402

CTR, LM = "ctr", "clickprompt-lm"


def expected_scores(paths: Paths, registry, name: str, versions: list[int],
                    pairs: list[tuple[int, int]]) -> dict[int, dict[tuple[int, int], float]]:
    """Each version's score of each pair, in this process, from the same online features."""
    from serving.online_features import OnlineFeatures
    from serving.scoring import load_model, score_frame

    features = OnlineFeatures(paths)
    out = {}
    for v in versions:
        lm = load_model(registry.get(v, name), paths)
        rows, _ = features.rows(lm.feature_service, pairs, lm.keys)
        out[v] = dict(zip(pairs, score_frame(lm, rows).probability.tolist(), strict=True))
    return out


def promotion_under_load(paths: Paths, registry, port: int, pairs: list[tuple[int, int]], seconds: float) -> dict:
    expected = expected_scores(paths, registry, CTR, [1, 2], pairs)
    box: dict = {}

    def promote() -> None:
        time.sleep(seconds / 3)
        registry.promote(2, name=CTR, force=True)
        box["promoted_at"] = time.perf_counter()

    run = load(port, pairs, 8, 10**9, seconds, during=promote)
    promoted_at = box["promoted_at"]
    log = run.pop("log")
    ok = [e for e in log if e[2] == 200]
    mixed = [e for e in ok if e[3] not in expected or abs(expected[e[3]][e[4]] - e[5]) > 1e-6]
    last_v1 = max((end for _, end, _, v, _, _ in ok if v == 1), default=promoted_at)
    first_v2 = min((end for _, end, _, v, _, _ in ok if v == 2), default=float("nan"))
    registry.promote(1, name=CTR, force=True)
    return {"requests": len(log), "errors": run["errors"], "mixed_or_wrong_score": len(mixed),
            "versions": sorted({e[3] for e in ok}), "throughput_rps": run["throughput_rps"],
            "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"],
            "first_v2_after_promotion_ms": round((first_v2 - promoted_at) * 1000, 1),
            "last_v1_after_promotion_ms": round(max(0.0, last_v1 - promoted_at) * 1000, 1)}


def sample_pairs(paths: Paths, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """(user, item) pairs of the test split: ids the models know, features in the online store."""
    import pandas as pd

    from feature_repo.training_sets import latest_training_set

    test = latest_training_set(paths, CLICKPROMPT_SERVICE).folder / "test.parquet"
    frame = pd.read_parquet(test, columns=["user_id", "item_id"])
    rows = frame.sample(n=min(n, len(frame)), random_state=seed)
    return [(int(u), int(i)) for u, i in zip(rows.user_id, rows.item_id, strict=True)]


# --- report ------------------------------------------------------------------------------------------


def print_report(results: dict) -> None:
    seq = results["sequential"]
    print(f"\nsequential POST /predict ({seq['n']} requests, 1 client, loopback): "
          f"p50 {seq['p50_ms']:.2f} ms, p99 {seq['p99_ms']:.2f} ms")
    laps = seq["server_laps_p50_ms"]
    print("  server-side budget, p50 per stage (ms): " + ", ".join(f"{s} {laps[s]:.3f}" for s in STAGES if s in laps))
    print(f"  client + HTTP outside the server's laps: {seq['p50_ms'] - laps.get('total', 0):.2f} ms at p50")
    b = results["batch"]
    print(f"POST /predict/batch of {b['batch']} pairs ({b['n']} requests): p50 {b['p50_ms']:.2f} ms, "
          f"p99 {b['p99_ms']:.2f} ms; server laps p50: "
          + ", ".join(f"{s} {b['server_laps_p50_ms'][s]:.2f}" for s in STAGES if s in b["server_laps_p50_ms"]))
    print("\n| workers | clients | requests | errors | req/s | p50 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["load"]:
        print(f"| {row['workers']} | {row['clients']} | {row['n']} | {row['errors']} | {row['throughput_rps']:.0f} | "
              f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
    p = results["promotion_under_load"]
    print(f"\npromotion under load (8 clients, {p['requests']} requests): {p['errors']} errors, "
          f"{p['mixed_or_wrong_score']} responses with a mixed version or another version's score; versions "
          f"served {p['versions']}; first v2 answer {p['first_v2_after_promotion_ms']} ms after the promotion "
          f"committed, last v1 answer {p['last_v1_after_promotion_ms']} ms after")
    if "with_lm" in results:
        lm, r = results["with_lm"], results["ratios"]
        print(f"with the LM ({LM}, {lm['n']} sequential requests): p50 {lm['p50_ms']:.1f} ms, p99 {lm['p99_ms']:.1f} ms "
              f"- x{r['p50_lm_over_ctr']} the CTR-only p50")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="run folder with baseline and both finetuning stages "
                                             "(default artifacts/runs/demo)")
    ap.add_argument("--requests", type=int, default=300, help="sequential requests (default 300)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="load levels (default 1 8 32)")
    ap.add_argument("--load-seconds", type=float, default=8.0, help="time limit per load level (default 8)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="uvicorn workers to compare (default 1 2)")
    ap.add_argument("--lm-requests", type=int, default=50, help="sequential requests to the with-LM model (0: skip)")
    ap.add_argument("--json-out", type=Path, help="also write the results here")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from core.settings import apply_environment_defaults

    apply_environment_defaults()
    from serving.registry import Registry

    paths = Paths.default()
    run_dir = (args.run or paths.runs / "demo").resolve()
    stages = {Stage.FINETUNE_CTR_ONLY: CTR, Stage.BASELINE: CTR, Stage.FINETUNE_WITH_LM: LM}
    missing = [s for s in stages if not (run_dir / s / "model.safetensors").exists()]
    if missing:
        sys.exit(f"{run_dir} lacks stage(s) {missing}: see the commands in this file's docstring")
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    results: dict = {"run": str(run_dir), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                                                     f"{os.cpu_count()} CPUs, Python {platform.python_version()}"}
    try:
        registry = Registry(paths, db_path=tmp / "mlruns.db", artifacts_root=tmp / "artifacts")
        for stage, name in stages.items():
            registry.register(run_dir, stage=stage, name=name)
        registry.promote(1, name=CTR, force=True)
        registry.promote(1, name=LM, force=True)
        pairs = sample_pairs(paths, 1000)
        with Server(CTR, tmp) as srv:
            results["startup_s"] = srv.startup_s
            results["sequential"] = sequential(srv.port, pairs, args.requests)
            results["batch"] = sequential(srv.port, pairs, max(20, args.requests // 6), batch=100)
        results["load"] = []
        for workers in args.workers:
            with Server(CTR, tmp, workers=workers) as srv:
                for clients in args.clients:
                    row = load(srv.port, pairs, clients, 10**9, args.load_seconds)
                    row.pop("log")
                    results["load"].append({"workers": workers, **row})
                    print(f"workers {workers}, {clients} clients: {row['throughput_rps']:.0f} req/s, "
                          f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, {row['errors']} errors", flush=True)
                if workers == min(args.workers):
                    results["promotion_under_load"] = promotion_under_load(paths, registry, srv.port, pairs,
                                                                           args.load_seconds)
        if args.lm_requests:
            with Server(LM, tmp) as srv:
                results["with_lm"] = sequential(srv.port, pairs, args.lm_requests)
            results["ratios"] = {"p50_lm_over_ctr": round(results["with_lm"]["p50_ms"]
                                                          / results["sequential"]["p50_ms"], 1)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_report(results)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
