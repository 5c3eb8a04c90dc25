"""Registry artifacts on disk: read-only folders of a frozen training stage, and the code version
recorded with them."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from core.settings import REPO_ROOT


def code_version() -> str:
    """The git HEAD short sha of the checkout, else the installed package version."""
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True)
        sha = out.stdout.strip()
        if sha:
            return sha
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"clickprompt-{version('clickprompt')}"
    except PackageNotFoundError:
        return "unknown"


def make_read_only(folder: Path) -> None:
    for path in folder.iterdir():
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def remove_tree(folder: Path) -> None:
    """Remove a folder whose files were made read-only."""
    def onerror(func, path, _exc_info):
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        func(path)

    shutil.rmtree(folder, onerror=onerror)
