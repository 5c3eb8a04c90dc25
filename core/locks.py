"""One exclusive lock per resource (the warehouse, a training run): a lock file beside it, held
with ``fcntl.flock`` and holding the holder's pid and start time.

    with exclusive(lock_path(paths.warehouse), "warehouse"):
        ...                                   # the only writer of the warehouse

A second holder waits (bounded: ``wait_s``, default ``$CLICKPROMPT_LOCK_WAIT`` or 60 s, logging
who holds it once), then raises ``Busy``: ``warehouse is busy (pid N since T)``; the CLI turns it
into that one line and exit code 3. The kernel drops the lock when its process ends, ``kill -9``
included, so a dead holder never leaves a stale lock (the file stays; it only says who held it
last). Reentrant within a process: a writer that calls another writer does not wait for itself.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

log = logging.getLogger("clickprompt.locks")

LOCK_WAIT_ENV = "CLICKPROMPT_LOCK_WAIT"
DEFAULT_WAIT_S = 60.0
POLL_S = 0.2
ANNOUNCE_AFTER_S = 1.0  # a wait shorter than this is not worth a line (and may be `data status`'s probe)

_held: dict[str, int] = {}  # lock file -> depth, for this process


class Busy(RuntimeError):
    """Another process holds the lock: ``<what> is busy (pid N since T)``."""

    def __init__(self, what: str, holder: dict) -> None:
        self.what, self.pid, self.since = what, holder.get("pid", "?"), holder.get("since", "?")
        super().__init__(f"{what} is busy (pid {self.pid} since {self.since})")


def lock_path(resource: Path) -> Path:
    """The lock file of a resource (a file or a folder): ``<resource>.lock`` beside it."""
    resource = Path(resource)
    return resource.with_name(resource.name + ".lock")


def holder(lock: Path) -> dict:
    """Who holds (or last held) ``lock``: ``{"pid", "since", "command"}``, or {} when unknown."""
    try:
        return json.loads(Path(lock).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def held_now(lock: Path) -> dict | None:
    """Who holds ``lock`` now (``holder``'s record), or None: free, or never taken. The file keeps the
    last holder's record after it ends, so a status that only read it would show a finished command."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return holder(lock) or {"pid": None}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def wait_seconds(wait_s: float | None = None) -> float:
    if wait_s is not None:
        return float(wait_s)
    value = os.environ.get(LOCK_WAIT_ENV, "")
    try:
        return float(value) if value else DEFAULT_WAIT_S
    except ValueError:
        raise ValueError(f"{LOCK_WAIT_ENV}={value!r}: give the seconds a writer waits for a busy lock, e.g. 60") from None


def _acquire(fd: int, lock: Path, what: str, wait_s: float) -> None:
    """Take ``lock``, waiting up to ``wait_s``. The wait is announced only once the lock has stayed
    busy for ``ANNOUNCE_AFTER_S``: ``held_now`` (``data status``) takes it shared for an instant, and
    a writer that met that probe would otherwise name the lock file's last holder, long finished."""
    start = time.monotonic()
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            waited = time.monotonic() - start
            if waited >= wait_s:
                raise Busy(what, holder(lock)) from None
            if not announced and waited >= ANNOUNCE_AFTER_S:
                log.warning("%s: waiting up to %.0f s for it", Busy(what, holder(lock)), wait_s)
                announced = True
            time.sleep(POLL_S)


@contextmanager
def exclusive(lock: Path, what: str, wait_s: float | None = None) -> Iterator[None]:
    """Hold ``lock`` exclusively for the block (see the module doc); ``Busy`` after ``wait_s``."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    key = str(lock.resolve())
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, lock, what, wait_seconds(wait_s))
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": since, "command": " ".join(sys.argv)[:300]}).encode(), 0)
        _held[key] = 1
        try:
            yield
        finally:
            _held.pop(key, None)
    finally:
        os.close(fd)  # releases the flock
