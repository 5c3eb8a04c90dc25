"""File writes that never leave half a file, and file hashes: the one implementation every layer uses.

``atomic_write`` gives the writer a temporary path beside the target and renames it over the
target only when the writer returned: a reader (a resumed run, the server, Feast) sees the old
file or the new one, never a torn one, and a failed write leaves the previous file in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

CHUNK = 1 << 20


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename ``tmp`` over ``path`` (same folder, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path, obj: Any, indent: int | None = 2) -> None:
    """JSON (floats for numpy scalars, str for paths and times) written atomically."""
    text = json.dumps(obj, indent=indent, default=lambda v: float(v) if hasattr(v, "__float__") else str(v))
    write_text_atomic(path, text)


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written folder ``tmp`` in place of ``final`` (the old one removed after the swap)."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old.exists():
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (paths and other objects by their str())."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]
