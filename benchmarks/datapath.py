"""Time per data-path stage (ingest, validate, render text, Feast apply, materialize, training sets).

The stages run on a fresh temporary project home from the raw files the given home already holds,
so the project's own warehouse, Feast registry and training sets are never touched.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from core.settings import Paths
from core.spec import load_spec

log = logging.getLogger("clickprompt.bench")


def timed(times: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``, record its wall time under ``name`` (seconds, 2 decimals), return its result."""
    t = time.perf_counter()
    out = fn()
    times[name] = round(time.perf_counter() - t, 2)
    log.info("data path: %-14s %7.2f s", name, times[name])
    return out


def stage_times(dataset: str, raw: Path, times: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds per stage from the raw files in ``raw`` to training sets, in a throw-away home.

    ``times`` may already hold earlier stages (the fetch timings of benchmarks/bench_data.py);
    ``total`` sums every stage but a cached fetch.
    """
    from feature_repo.online import materialize
    from feature_repo.store import apply
    from feature_repo.training_sets import build_training_sets
    from ingestion.warehouse import ingest, rerender_text, validation_frames
    from validation import gate
    from validation.runner import run_suites

    if not raw.is_dir():
        raise FileNotFoundError(f"no raw files for {dataset} in {raw}: run `clickprompt data fetch {dataset}` first")
    spec = load_spec(dataset)
    times = dict(times or {})
    home = Paths(Path(tempfile.mkdtemp(prefix="cp-bench-data-")))
    try:
        timed(times, "ingest", lambda: ingest(spec, raw, home.warehouse, home.snapshots, gate))
        timed(times, "validate", lambda: run_suites(spec, validation_frames(spec, home.warehouse, home.snapshots)))
        timed(times, "render text", lambda: rerender_text(spec, home.warehouse, home.snapshots, gate))
        timed(times, "apply", lambda: apply(spec, home))
        timed(times, "materialize", lambda: materialize(spec, home))
        timed(times, "training sets", lambda: build_training_sets(spec, home))
    finally:
        shutil.rmtree(home.home, ignore_errors=True)
    times["total"] = round(sum(v for k, v in times.items() if k not in ("total", "fetch (cached)")), 2)
    return times
