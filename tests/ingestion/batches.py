"""A tiny landing area for the fault and dependency tests: an initial load and two weekly batches of a
GroupLens-layout data set (5 users, 4 items), cut by ``ingestion.replay``. User 4 arrives with
batch 1 and rates again in batch 2; user 5 and item 4 arrive with batch 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.settings import REPO_ROOT, Paths
from core.spec import load_spec
from ingestion.replay import parse_period, replay
from tests.conftest import DAY, DAY0, GENRES, SMALL_ITEMS, SMALL_USERS, item_line

SPEC = load_spec("movielens-100k")
USERS = [*SMALL_USERS, "5|31|F|artist|10001"]
EVENTS = [  # (user, item, rating, day)
    (1, 1, 5, 0), (1, 2, 3, 1), (2, 1, 4, 1), (2, 3, 2, 2), (3, 2, 5, 3), (3, 3, 1, 4),  # initial load
    (1, 3, 4, 6), (2, 2, 5, 7), (4, 1, 4, 8), (4, 2, 2, 9), (3, 1, 3, 10), (4, 3, 5, 11),  # batch 1: user 4
    (5, 1, 4, 13), (5, 4, 5, 14), (4, 4, 3, 15), (1, 4, 2, 16), (5, 2, 1, 17), (2, 4, 4, 18), (3, 4, 5, 19),
]
assert len(GENRES) == 19


def write_raw(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{DAY0 + d * DAY + u * 60 + i}\n" for u, i, r, d in EVENTS))
    (folder / "u.user").write_text("\n".join(USERS) + "\n")
    (folder / "u.item").write_bytes(("\n".join(item_line(*it) for it in SMALL_ITEMS) + "\n").encode("latin-1"))
    return folder


def landing_area(paths: Paths, raw_folder: Path) -> list:
    """The replay (initial load + 2 weekly batches) in ``paths``'s landing area; returns its batches."""
    return replay(SPEC, write_raw(raw_folder), paths.inbox(SPEC.name), parse_period("7d"), 2)


def clickprompt(home: Path, *args: str, fault: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """The CLI as a process of its own on ``home`` (this worktree's code first on the path)."""
    environ = {**os.environ, "CLICKPROMPT_HOME": str(home), "PYTHONPATH": str(REPO_ROOT), **env}
    environ.pop("CLICKPROMPT_FAULT", None)
    if fault:
        environ["CLICKPROMPT_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "cli", *args], env=environ, capture_output=True, text=True,
                          timeout=300)
