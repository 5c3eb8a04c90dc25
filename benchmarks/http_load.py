"""The HTTP side of the serving benchmark (``bench_serving.py``): ``clickprompt serve`` in a
subprocess on a free loopback port, one keep-alive ``http.client`` connection per client thread
(the lightest client the standard library has), sequential and concurrent request runs with
client latency percentiles and the server's ``Server-Timing`` laps."""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from serving.timing import parse_server_timing

REPO = Path(__file__).resolve().parents[1]
STAGES = ("parse", "registry", "online", "encode", "forward", "response", "serialize", "total")
WARMUP = 30


# --- server subprocess ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``clickprompt serve`` on a free loopback port, for one model of the temporary registry."""

    def __init__(self, name: str, registry_dir: Path, workers: int = 1, timeout: float = 300.0) -> None:
        self.port = free_port()
        code = ("import sys; from pathlib import Path; from core.settings import Paths, apply_environment_defaults; "
                "apply_environment_defaults(); from serving.server import serve; "
                f"serve(Paths.default(), port={self.port}, name={name!r}, poll_seconds=3600, workers={workers}, "
                f"registry_dir=Path({str(registry_dir)!r}), log_level='warning')")
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server for {name} exited with {self.proc.returncode}")
            try:
                status, _, _ = request(self.port, "GET", "/health")
                if status == 200:
                    self.startup_s = round(time.perf_counter() - started, 1)
                    return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server for {name} did not become healthy in {timeout:.0f}s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def request(port: int, method: str, path: str, body: dict | None = None,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one request (on ``conn`` if given: keep-alive)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"content-type": "application/json"} if data else {})
        r = conn.getresponse()
        payload = r.read()
        return r.status, json.loads(payload) if payload else {}, dict(r.getheaders())
    finally:
        if own:
            conn.close()


# --- measurements ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(ms: list[float]) -> dict:
    return {"n": len(ms), "p50_ms": round(percentile(ms, 0.5), 3), "p99_ms": round(percentile(ms, 0.99), 3),
            "mean_ms": round(statistics.mean(ms), 3) if ms else float("nan")}


def sequential(port: int, pairs: list[tuple[int, int]], n: int, batch: int = 1) -> dict:
    """``n`` requests one after the other on one connection: client latency and server laps."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    path = "/predict" if batch == 1 else "/predict/batch"

    def body(k: int) -> dict:
        if batch == 1:
            u, i = pairs[k % len(pairs)]
            return {"user_id": u, "item_id": i}
        return {"requests": [{"user_id": u, "item_id": i} for u, i in
                             (pairs[(k * batch + j) % len(pairs)] for j in range(batch))]}

    for k in range(WARMUP):
        request(port, "POST", path, body(k), conn)
    latencies, laps, errors = [], {s: [] for s in STAGES}, 0
    for k in range(n):
        t = time.perf_counter()
        status, _, headers = request(port, "POST", path, body(k), conn)
        elapsed = (time.perf_counter() - t) * 1000
        if status != 200:
            errors += 1
            continue
        latencies.append(elapsed)
        for stage, ms in parse_server_timing(headers.get("server-timing", "")).items():
            laps.setdefault(stage, []).append(ms)
    conn.close()
    return {**summary(latencies), "errors": errors, "batch": batch,
            "server_laps_p50_ms": {s: round(statistics.median(v), 3) for s, v in laps.items() if v}}


def load(port: int, pairs: list[tuple[int, int]], clients: int, requests_per_client: int, seconds: float,
         during=None) -> dict:
    """``clients`` threads, each up to ``requests_per_client`` requests or ``seconds``; ``during``
    (optional) runs in this thread once the clients are going. Returns figures and the log."""
    log: list[list[tuple]] = [[] for _ in range(clients)]
    gate = threading.Barrier(clients + 1)
    stop_at: list[float] = []

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        gate.wait()
        for n in range(requests_per_client):
            if time.perf_counter() > stop_at[0]:
                break
            u, i = pairs[(k * 7919 + n) % len(pairs)]
            t = time.perf_counter()
            try:
                status, body, _ = request(port, "POST", "/predict", {"user_id": u, "item_id": i}, conn)
            except OSError as exc:  # a dropped connection counts as an error, and a new one is opened
                status, body = f"{type(exc).__name__}", {}
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            log[k].append((t, time.perf_counter(), status, body.get("model_version"), (u, i),
                           body.get("click_probability")))
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    stop_at.append(time.perf_counter() + seconds)
    t0 = time.perf_counter()
    gate.wait()
    extra = during() if during else None
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    flat = [e for entries in log for e in entries]
    ok = [(end - start) * 1000 for start, end, status, *_ in flat if status == 200]
    return {"clients": clients, **summary(ok), "errors": len(flat) - len(ok), "wall_s": round(wall, 2),
            "throughput_rps": round(len(ok) / wall, 1), "during": extra, "log": flat}
