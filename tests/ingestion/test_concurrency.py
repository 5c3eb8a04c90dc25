"""Two writers on one warehouse, as real processes: the second waits (bounded, saying for whom) and
then either proceeds or fails with one line, ``error: warehouse is busy (pid N since T)``, exit
code 3, no traceback; a reader (validate) meeting a writer says the same."""

from __future__ import annotations

from core.locks import holder, lock_path
from core.settings import Paths
from ingestion.increments import ingest_inbox
from tests.ingestion.batches import SPEC, clickprompt, landing_area
from tests.test_locks import hold
from validation import gate


def _home(paths: Paths) -> Paths:
    landing_area(paths, paths.home / "raw")
    ingest_inbox(SPEC, paths.inbox(SPEC.name), paths.warehouse, paths.snapshots, gate, "setup", limit=1)
    return paths


def test_a_second_writer_fails_with_one_line_and_exit_3(paths: Paths):
    _home(paths)
    lock = lock_path(paths.warehouse)
    proc = hold(lock, "warehouse", 120, duckdb_file=paths.warehouse)  # a writer in its transaction
    try:
        since = holder(lock)["since"]
        for args in (["data", "ingest", "--dataset", SPEC.name], ["validate"]):
            out = clickprompt(paths.home, *args, CLICKPROMPT_LOCK_WAIT="1")
            assert out.returncode == 3, out.stderr[-3000:]
            assert "Traceback" not in out.stderr and "IOException" not in out.stderr
            assert out.stderr.strip().splitlines()[-1] == f"error: warehouse is busy (pid {proc.pid} since {since})"
    finally:
        proc.kill()
        proc.wait()


def test_a_second_writer_waits_for_the_first_and_then_takes_its_batches(paths: Paths):
    _home(paths)
    proc = hold(lock_path(paths.warehouse), "warehouse", 12, duckdb_file=paths.warehouse)
    out = clickprompt(paths.home, "data", "ingest", "--dataset", SPEC.name, CLICKPROMPT_LOCK_WAIT="120")
    proc.wait()
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"warehouse is busy (pid {proc.pid} since" in out.stderr and "waiting up to 120 s" in out.stderr
    assert "batch 0001-1997-10-06: 6 events" in out.stdout and "batch 0002-1997-10-13: 7 events" in out.stdout
