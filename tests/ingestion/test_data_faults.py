"""A writer killed at each step of a batch (a real ``clickprompt data ingest`` process that dies with
``os._exit(137)`` at a named point, ``CLICKPROMPT_FAULT``), then the next command: the snapshots are
those of the warehouse's state again (same hash as a fresh export, the new user's text there), the
batch has its data-quality row, no temp file is left, and ``validate`` fails while they are stale.
Real DuckDB, real GX gates, the small landing area of ``tests/ingestion/batches.py``."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from cli import main
from core.settings import Paths
from core.snapshots import TABLES, read_snapshot_manifest, temp_files
from ingestion.increments import ingest_inbox
from ingestion.warehouse import connect, export_snapshots
from tests.ingestion.batches import SPEC, clickprompt, landing_area
from validation import gate

NEW_USER = 5  # arrives with the last batch

# the steps of a batch at which a writer is killed: after the commit, none / half / all but the
# manifest of the snapshot files rewritten (one with its temp file left behind)
KILL_POINTS = ["after:batch-commit", "during:snapshot-export:interactions", "after:snapshot-export:interactions",
               "before:snapshot-manifest"]


@pytest.fixture(scope="module")
def two_batches_in(tmp_path_factory) -> Paths:
    """A home with the initial load and batch 1 taken; batch 2 (user 5, item 4) waits in the landing area."""
    paths = Paths(tmp_path_factory.mktemp("faults"))
    landing_area(paths, paths.home / "raw")
    ingest_inbox(SPEC, paths.inbox(SPEC.name), paths.warehouse, paths.snapshots, gate, "setup", limit=2)
    return paths


def warehouse_state(paths: Paths) -> str:
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        return con.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()[0]


def assert_reconciled(paths: Paths, tmp: Path) -> None:
    """Snapshots == a fresh export of the warehouse, the new user's text in them, no temp file,
    batch 2 accepted with its data-quality row."""
    fresh = tmp / "fresh"
    with connect(paths.warehouse, read_only=True) as con:
        expected = export_snapshots(con, SPEC, fresh)
        logged = con.execute("SELECT batch_id, status, new_events FROM batch_log ORDER BY 1").fetchall()
        quality = con.execute("SELECT batch_id, status, events FROM data_quality ORDER BY 1").fetchall()
    manifest = read_snapshot_manifest(paths.snapshots)
    assert manifest["snapshot_hash"] == expected
    assert manifest["warehouse_state"] == warehouse_state(paths)
    for table in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(paths.snapshots / f"{table}.parquet"),
                                      pd.read_parquet(fresh / f"{table}.parquet"))
    texts = pd.read_parquet(paths.snapshots / "user_text.parquet")
    assert texts.loc[texts.user_id == NEW_USER, "user_text"].str.startswith(f"User ID is {NEW_USER}.").all()
    assert len(texts[texts.user_id == NEW_USER]) == 1
    assert temp_files(paths.snapshots) == []
    assert [row[1:] for row in logged] == [("accepted", 6), ("accepted", 6), ("accepted", 7)]
    assert ("0002-1997-10-13", "accepted", 7) in quality


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_writer_killed_at_each_step_is_reconciled_by_the_next_command(two_batches_in, point, tmp_path,
                                                                        monkeypatch, capsys):
    paths = Paths(tmp_path / "home")
    shutil.copytree(two_batches_in.home, paths.home)
    before = read_snapshot_manifest(paths.snapshots)

    killed = clickprompt(paths.home, "data", "ingest", "--dataset", SPEC.name, fault=point)
    assert killed.returncode == 137, killed.stderr[-2000:]
    if point.startswith("during:"):
        [left] = temp_files(paths.snapshots)  # the killed writer's half-renamed file
        assert left.name.startswith(".interactions.parquet.tmp-")
    assert read_snapshot_manifest(paths.snapshots)["snapshot_hash"] == before["snapshot_hash"]  # stale now
    monkeypatch.setenv("CLICKPROMPT_HOME", str(paths.home))
    if point == KILL_POINTS[0]:  # validate reports the mismatch as a failure, with the command to run
        assert main(["validate"]) == 1
        out = capsys.readouterr().out
        assert "FAIL snapshots (1 of 1 expectations failed)" in out
        assert "run `clickprompt data ingest` to rebuild them" in out

    assert main(["data", "ingest", "--dataset", SPEC.name]) == 0  # nothing new to take: it reconciles
    assert "no new batches" in capsys.readouterr().out
    assert_reconciled(paths, tmp_path)
    assert main(["validate"]) == 0
