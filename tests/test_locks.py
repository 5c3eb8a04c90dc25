"""``core.locks``: one holder at a time across real processes, a bounded wait with a message, a one-line
``Busy`` naming the holder's pid and start time, no stale lock after ``kill -9``. The same lock is
what a training run takes on its run folder (``exclusive(lock_path(run_dir), f"run {run_id}")``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.locks import ANNOUNCE_AFTER_S, Busy, exclusive, holder, lock_path
from core.settings import REPO_ROOT

HOLD = """
import sys, time
from pathlib import Path
from core.locks import exclusive
with exclusive(Path(sys.argv[1]), sys.argv[2], wait_s=0):
    if len(sys.argv) > 4:  # also keep a DuckDB file open for writing, as a writer does
        import duckdb
        con = duckdb.connect(sys.argv[4])
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def hold(lock: Path, what: str, seconds: float, duckdb_file: Path | None = None) -> subprocess.Popen:
    """A process of its own that holds ``lock`` for ``seconds`` (returns once it holds it)."""
    args = [sys.executable, "-c", HOLD, str(lock), what, str(seconds)] + ([str(duckdb_file)] if duckdb_file else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_fails_with_the_holders_pid_and_start_time(tmp_path):
    run_dir = tmp_path / "runs" / "ctr-abc123"
    lock = lock_path(run_dir)
    assert lock == tmp_path / "runs" / "ctr-abc123.lock"
    proc = hold(lock, "run ctr-abc123", 30)
    try:
        who = holder(lock)
        assert who["pid"] == proc.pid
        with pytest.raises(Busy) as caught:
            with exclusive(lock, "run ctr-abc123", wait_s=0.5):
                pytest.fail("two holders of one run lock")
        assert str(caught.value) == f"run ctr-abc123 is busy (pid {proc.pid} since {who['since']})"
    finally:
        proc.kill()
        proc.wait()


def test_a_waiter_says_so_and_gets_the_lock_when_the_holder_ends(tmp_path, caplog):
    lock = tmp_path / "warehouse.duckdb.lock"
    proc = hold(lock, "warehouse", 3)  # past ANNOUNCE_AFTER_S: the wait is worth a line
    started = time.monotonic()
    with exclusive(lock, "warehouse", wait_s=30):
        waited = time.monotonic() - started
        assert holder(lock)["pid"] == os.getpid()
    proc.wait()
    assert 2 < waited < 20
    assert f"warehouse is busy (pid {proc.pid} since" in caplog.text and "waiting up to 30 s" in caplog.text


PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_SH)  # as core.locks.held_now takes it for `data status`
print("probing", flush=True)
sys.stdin.read()  # held until the test lets go (closes our stdin)
"""


def test_a_status_probe_in_passing_is_not_announced_as_the_last_holder(tmp_path, caplog):
    """``data status`` takes the lock shared for an instant; a writer meeting it gets the lock on its next
    poll and says nothing, rather than "busy (pid <a finished command>)", the file's last record."""
    lock = tmp_path / "warehouse.duckdb.lock"
    hold(lock, "warehouse", 0).wait()  # a finished writer: its record stays in the file
    finished = holder(lock)["pid"]
    probe = subprocess.Popen([sys.executable, "-c", PROBE, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert probe.stdout.readline().strip() == "probing"
    threading.Timer(0.4, probe.stdin.close).start()  # the probe lets go while the writer polls, before 1 s
    started = time.monotonic()
    with exclusive(lock, "warehouse", wait_s=30):
        waited = time.monotonic() - started
        assert holder(lock)["pid"] == os.getpid()
    probe.wait()
    assert 0.35 < waited < ANNOUNCE_AFTER_S  # the writer did meet the probe, and got the lock on a later poll
    assert f"pid {finished}" not in caplog.text and "busy" not in caplog.text, caplog.text


def test_a_killed_holder_leaves_no_stale_lock_and_one_process_may_nest(tmp_path):
    lock = tmp_path / "x.lock"
    proc = hold(lock, "warehouse", 60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with exclusive(lock, "warehouse", wait_s=0):  # the kernel released it with the process
        with exclusive(lock, "warehouse", wait_s=0):  # reentrant within a process
            assert holder(lock)["pid"] == os.getpid()
