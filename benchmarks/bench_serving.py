"""Online serving latency and throughput: POST /predict on loopback, CTR-only vs the same path with the LM.

    .venv/bin/python benchmarks/bench_serving.py [--run artifacts/runs/demo] [--clients 4] \
        [--requests 200] [--max-seconds 60] [--json-out FILE]

Needs a training run with both finetuning stages, and the Feast online store:

    make demo            # fetch, ingest, validate, features apply / materialize / training-set,
                         # plm fetch bert-2l-128, clickprompt train --profile demo --run-id demo
    # or, quicker and smaller (any profile works; the run must contain both stages):
    clickprompt train --profile smoke --stages baseline,pretrain,finetune-with-lm,finetune-ctr-only --run-id smoke
    .venv/bin/python benchmarks/bench_serving.py --run artifacts/runs/smoke

What it does, once per model:
  1. registers the run's ``finetune-ctr-only`` stage (model ``ctr``: ID features from ``ctr_v1``,
     no language model) and its ``finetune-with-lm`` stage (model ``clickprompt-lm``: IDs + text
     from ``clickprompt_v1``, the PLM in the loop) in a TEMPORARY registry - the project's registry
     is not touched - and promotes both;
  2. starts ``serving.server.create_app`` for that model under uvicorn in a subprocess on
     127.0.0.1 (so the load generator does not share the server's interpreter);
  3. sends 20 warm-up requests, then ``--clients`` concurrent clients (threads, one keep-alive HTTP
     connection each) send up to ``--requests`` POST /predict each, stopping at ``--max-seconds``;
     (user, item) pairs are drawn from the test split, the same sequence for both models;
  4. reports p50 / p99 / mean latency per request (client side, end to end) and throughput
     (successful requests / wall time of the load phase), then the LM / CTR-only ratios.

Figures depend on the machine and on what else runs on it; there are no assertions. One run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.names import CLICKPROMPT_SERVICE
from core.settings import Paths  # noqa: E402

MODELS = {  # registered name -> training stage
    "ctr": "finetune-ctr-only",
    "clickprompt-lm": "finetune-with-lm",
}
WARMUP = 20


# --- server subprocess ----------------------------------------------------------------------------


def serve_main(args) -> None:
    """``--serve``: the app for one model of the temporary registry, under uvicorn."""
    import uvicorn

    from serving.registry import Registry
    from serving.server import create_app

    paths = Paths.default()
    root = Path(args.registry_dir)
    registry = Registry(paths, db_path=root / "registry.duckdb", artifacts_root=root / "artifacts")
    app = create_app(paths, args.name, registry=registry, poll_seconds=3600)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(name: str, registry_dir: Path, timeout: float = 300.0) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--name", name, "--registry-dir", str(registry_dir),
                             "--port", str(port)], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {name} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.terminate()
    raise RuntimeError(f"server for {name} did not become healthy in {timeout:.0f}s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- load ------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def load(url: str, pairs: list[tuple[int, int]], clients: int, requests: int, max_seconds: float) -> dict:
    import httpx

    with httpx.Client(base_url=url, timeout=60) as c:  # warm-up: first-call costs off the books
        for u, i in pairs[:WARMUP]:
            c.post("/predict", json={"user_id": u, "item_id": i}).raise_for_status()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    versions: set[int] = set()
    start_gate = threading.Barrier(clients + 1)
    deadline_box: list[float] = []

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            start_gate.wait()
            for n in range(requests):
                if time.perf_counter() > deadline_box[0]:
                    break
                u, i = pairs[(k * requests + n) % len(pairs)]
                t = time.perf_counter()
                r = c.post("/predict", json={"user_id": u, "item_id": i})
                elapsed = time.perf_counter() - t
                if r.status_code == 200:
                    latencies[k].append(elapsed)
                    versions.add(r.json()["model_version"])
                else:
                    errors[k] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    deadline_box.append(time.perf_counter() + max_seconds)
    t0 = time.perf_counter()
    start_gate.wait()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    flat = [x * 1000 for xs in latencies for x in xs]
    return {
        "requests_ok": len(flat),
        "errors": sum(errors),
        "wall_s": round(wall, 3),
        "p50_ms": round(percentile(flat, 0.50), 3),
        "p99_ms": round(percentile(flat, 0.99), 3),
        "mean_ms": round(statistics.mean(flat), 3) if flat else float("nan"),
        "throughput_rps": round(len(flat) / wall, 1) if wall else float("nan"),
        "stopped_by_time": len(flat) + sum(errors) < clients * requests,
        "model_versions": sorted(versions),
    }


def sample_pairs(paths: Paths, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """(user, item) pairs of the test split: ids the models know, features in the online store."""
    import pandas as pd

    frame = pd.read_parquet(paths.training_sets / CLICKPROMPT_SERVICE / "test.parquet", columns=["user_id", "item_id"])
    rows = frame.sample(n=min(n, len(frame)), random_state=seed)
    return [(int(u), int(i)) for u, i in zip(rows.user_id, rows.item_id, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="run folder with both finetuning stages (default artifacts/runs/demo)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    ap.add_argument("--requests", type=int, default=200, help="requests per client, at most (default 200)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="load phase time limit per model (default 60)")
    ap.add_argument("--json-out", type=Path, help="also write the results here")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    ap.add_argument("--registry-dir", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_main(args)
        return

    import logging

    logging.basicConfig(level=logging.WARNING)
    from serving.registry import Registry

    paths = Paths.default()
    run_dir = (args.run or paths.runs / "demo").resolve()
    missing = [s for s in MODELS.values() if not (run_dir / s / "model.safetensors").exists()]
    if missing:
        sys.exit(f"{run_dir} lacks stage(s) {missing}: see the commands in this file's docstring")
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    results: dict = {"run": str(run_dir), "clients": args.clients, "requests_per_client": args.requests,
                     "max_seconds": args.max_seconds, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                     "models": {}}
    try:
        registry = Registry(paths, db_path=tmp / "registry.duckdb", artifacts_root=tmp / "artifacts")
        for name, stage in MODELS.items():
            mv = registry.register(run_dir, stage=stage, name=name)
            registry.promote(mv.version, name=name, force=True)
        pairs = sample_pairs(paths, 1000)
        for name, stage in MODELS.items():
            t = time.perf_counter()
            proc, url = start_server(name, tmp)
            startup = time.perf_counter() - t
            try:
                figures = load(url, pairs, args.clients, args.requests, args.max_seconds)
            finally:
                stop_server(proc)
            production = registry.production(name)
            assert production is not None
            figures.update(stage=stage, feature_service=production.feature_service,
                           startup_s=round(startup, 1))
            results["models"][name] = figures
            print(f"{name:<15} ({stage}): {figures['requests_ok']} ok, {figures['errors']} errors in "
                  f"{figures['wall_s']:.1f}s; p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
                  f"{figures['throughput_rps']:.1f} req/s (server up in {figures['startup_s']:.1f}s)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ctr, lm = results["models"]["ctr"], results["models"]["clickprompt-lm"]
    results["ratios"] = {
        "p50_lm_over_ctr": round(lm["p50_ms"] / ctr["p50_ms"], 2),
        "p99_lm_over_ctr": round(lm["p99_ms"] / ctr["p99_ms"], 2),
        "throughput_ctr_over_lm": round(ctr["throughput_rps"] / lm["throughput_rps"], 2),
    }
    print()
    print(f"| model ({args.clients} clients, loopback) | p50 ms | p99 ms | req/s |")
    print("|---|---:|---:|---:|")
    for name, f in results["models"].items():
        print(f"| {name} ({f['feature_service']}) | {f['p50_ms']:.1f} | {f['p99_ms']:.1f} | {f['throughput_rps']:.1f} |")
    r = results["ratios"]
    print(f"\nwith the LM: p50 x{r['p50_lm_over_ctr']}, p99 x{r['p99_lm_over_ctr']}; "
          f"CTR-only serves x{r['throughput_ctr_over_lm']} the requests per second")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
