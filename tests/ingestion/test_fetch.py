"""Fetching raw data and PLMs: pinned hashes, atomic installs, idempotence, local archives and URLs."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from core.settings import Paths
from core.spec import load_spec
from ingestion import wheels as wheels_mod
from ingestion.fetch import (
    DATASETS,
    PLMS,
    ChecksumError,
    FetchError,
    NoRawFiles,
    default_wheel_cache,
    fetch_dataset,
    fetch_plm,
    fetch_wheel_members,
    manifest_path,
)
from ingestion.loaders import load_raw

RECBOLE = DATASETS["movielens-100k"].default


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def home(tmp_path: Path, ml100k_fetched) -> Paths:
    """A fresh project home whose wheel cache already holds the session's recbole wheel (no download)."""
    paths = Paths(tmp_path / "home")
    cache = default_wheel_cache(paths)
    cache.mkdir(parents=True)
    for wheel in ml100k_fetched.wheel_cache.glob("*.whl"):
        shutil.copy2(wheel, cache / wheel.name)
    return paths


@pytest.fixture
def no_pip(monkeypatch):
    """Fail the test if anything tries to run pip."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected subprocess call: {args}")

    monkeypatch.setattr(wheels_mod.subprocess, "run", refuse)


# --- the offline default: MovieLens-100K from the recbole wheel ---------------------------------


def test_real_ml100k_lands_flat_untouched_with_a_manifest(ml100k_fetched):
    raw = ml100k_fetched.raw
    assert raw == ml100k_fetched.paths.raw("movielens-100k")
    assert sorted(p.name for p in raw.iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    for member, digest in RECBOLE.members.items():
        assert sha((raw / member.rsplit("/", 1)[-1]).read_bytes()) == digest
    manifest = json.loads(manifest_path("movielens-100k", ml100k_fetched.paths).read_text())
    assert manifest_path("movielens-100k", ml100k_fetched.paths).parent == raw.parent  # next to, not inside
    assert manifest["source"].startswith("pypi:recbole==1.2.1")
    assert {f["name"]: (f["size"], f["sha256"]) for f in manifest["files"]} == {
        p.name: (p.stat().st_size, sha(p.read_bytes())) for p in raw.iterdir()
    }
    assert list(ml100k_fetched.wheel_cache.glob("recbole-1.2.1-*.whl"))


def test_second_fetch_is_a_noop(home, no_pip, caplog):
    caplog.set_level(logging.INFO, logger="clickprompt.fetch")
    dest = fetch_dataset("movielens-100k", home)
    stamps = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    manifest = manifest_path("movielens-100k", home).read_text()
    caplog.clear()
    assert fetch_dataset("movielens-100k", home) == dest
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == stamps
    assert manifest_path("movielens-100k", home).read_text() == manifest
    assert any("nothing to do" in r.getMessage() for r in caplog.records)


def test_progress_is_logged_one_line_per_step(home, no_pip, caplog):
    caplog.set_level(logging.INFO, logger="clickprompt.fetch")
    fetch_dataset("movielens-100k", home)
    steps = [r.getMessage().split()[0] for r in caplog.records if r.name == "clickprompt.fetch"]
    assert steps == ["using", "verifying", "extracting"]


def test_checksum_mismatch_raises_and_leaves_dest_untouched(home, no_pip, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("previous contents")
    members = dict(RECBOLE.members)
    bad_member = next(m for m in members if m.endswith(".user"))
    members[bad_member] = "0" * 64
    with pytest.raises(ChecksumError) as err:
        fetch_wheel_members("recbole", "1.2.1", members, dest, cache_dir=default_wheel_cache(home))
    e = err.value
    assert (e.member, e.expected, e.actual) == (bad_member, "0" * 64, RECBOLE.members[bad_member])
    assert bad_member in str(e) and "0" * 64 in str(e) and RECBOLE.members[bad_member] in str(e)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"] and (dest / "keep.txt").read_text() == "previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "home"]  # no temporary folder left behind


def test_checksum_mismatch_on_first_fetch_creates_nothing(home, no_pip, tmp_path):
    members = {m: ("f" * 64 if m.endswith(".item") else h) for m, h in RECBOLE.members.items()}
    with pytest.raises(ChecksumError, match="ml-100k.item"):
        fetch_wheel_members("recbole", "1.2.1", members, tmp_path / "new", cache_dir=default_wheel_cache(home))
    assert not (tmp_path / "new").exists()


def test_rename_and_refetch_replaces_a_changed_dest(home, no_pip, tmp_path):
    member = next(m for m in RECBOLE.members if m.endswith(".user"))
    dest = tmp_path / "renamed"
    cache = default_wheel_cache(home)
    result = fetch_wheel_members("recbole", "1.2.1", {member: RECBOLE.members[member]}, dest, {member: "users.tsv"},
                                 cache_dir=cache)  # fmt: skip
    assert result.changed and [p.name for p in dest.iterdir()] == ["users.tsv"]
    (dest / "users.tsv").write_text("tampered")
    again = fetch_wheel_members("recbole", "1.2.1", {member: RECBOLE.members[member]}, dest, {member: "users.tsv"},
                                cache_dir=cache)  # fmt: skip
    assert again.changed and sha((dest / "users.tsv").read_bytes()) == RECBOLE.members[member]
    assert not fetch_wheel_members("recbole", "1.2.1", {member: RECBOLE.members[member]}, dest, {member: "users.tsv"},
                                   cache_dir=cache).changed  # fmt: skip


def test_missing_member_is_an_error(home, no_pip, tmp_path):
    with pytest.raises(FetchError, match="no member"):
        fetch_wheel_members("recbole", "1.2.1", {"recbole/nope.txt": "0" * 64}, tmp_path / "x",
                            cache_dir=default_wheel_cache(home))  # fmt: skip


# --- user-given sources: GroupLens archives, folders, URLs ------------------------------------------


def grouplens_zip(path: Path, files: dict[str, bytes], folder: str = "ml-100k", extra: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{folder}/", b"")
        for name, data in {**files, **(extra or {})}.items():
            zf.writestr(f"{folder}/{name}", data)
    return path


ML100K_EXTRAS = {
    "u.genre": b"unknown|0\nAction|1\n",
    "u.occupation": b"administrator\nartist\n",
    "u.info": b"943 users\n1682 items\n100000 ratings\n",
    "README": b"SUMMARY & USAGE LICENSE\n",
}
NOT_EXTRACTED = {"u1.base": b"1\t1\t5\t874965758\n", "allbut.pl": b"#!/usr/bin/perl\n", "mku.sh": b"#!/bin/sh\n"}


def test_source_zip_in_grouplens_layout_extracts_files_untouched(raw_files, tmp_path):
    paths = Paths(tmp_path / "home")
    files = {**raw_files["grouplens-100k"], **ML100K_EXTRAS}
    archive = grouplens_zip(tmp_path / "ml-100k.zip", files, extra=NOT_EXTRACTED)
    dest = fetch_dataset("movielens-100k", paths, source=archive)
    assert dest == paths.raw("movielens-100k")
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == files  # bytes equal, nothing else
    manifest = json.loads(manifest_path("movielens-100k", paths).read_text())
    assert manifest["source"] == str(archive) and manifest["layout"] == "GroupLens ml-100k"
    assert {f["name"]: (f["size"], f["sha256"]) for f in manifest["files"]} == {
        n: (len(d), sha(d)) for n, d in files.items()
    }
    tables = load_raw(load_spec("movielens-100k"), dest)
    assert tables.items.loc[tables.items.item_id == 543, "title"].item() == "Misérables, Les"
    # again: a no-op
    stamps = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    fetch_dataset("movielens-100k", paths, source=archive)
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == stamps


def test_source_ml1m_zip_and_missing_default(raw_files, tmp_path):
    paths = Paths(tmp_path / "home")
    with pytest.raises(FetchError, match=r"movielens-1m has no offline source: download ml-1m\.zip .* --from"):
        fetch_dataset("movielens-1m", paths)
    files = {**raw_files["grouplens-1m"], "README": b"MovieLens 1M\n"}
    archive = grouplens_zip(tmp_path / "ml-1m.zip", files, folder="ml-1m")
    dest = fetch_dataset("movielens-1m", paths, source=str(archive))
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == files
    assert len(load_raw(load_spec("movielens-1m"), dest).users) == 4
    # what `train --dataset movielens-1m` does next: a plain fetch keeps the archive's files
    stamps = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    assert fetch_dataset("movielens-1m", paths) == dest
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == stamps
    (dest / "ratings.dat").write_bytes(b"1::1::5::978300760\n")  # no longer the fetched file: not kept
    with pytest.raises(FetchError, match="movielens-1m has no offline source"):
        fetch_dataset("movielens-1m", paths)


def test_source_folder_is_copied(raw_files, write_raw, tmp_path):
    paths = Paths(tmp_path / "home")
    folder = write_raw({**raw_files["grouplens-1m"], "notes.txt": b"not a data file"}, name="unzipped")
    dest = fetch_dataset("movielens-1m", paths, source=folder)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == raw_files["grouplens-1m"]


def test_source_of_the_wrong_data_set_fails_and_keeps_the_previous_fetch(raw_files, tmp_path):
    paths = Paths(tmp_path / "home")
    good = grouplens_zip(tmp_path / "ml-100k.zip", raw_files["grouplens-100k"])
    dest = fetch_dataset("movielens-100k", paths, source=good)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    wrong = grouplens_zip(tmp_path / "ml-1m.zip", raw_files["grouplens-1m"], folder="ml-1m")
    with pytest.raises(FetchError, match=r"holds no complete movielens-100k data: expected u\.data"):
        fetch_dataset("movielens-100k", paths, source=wrong)
    incomplete = grouplens_zip(tmp_path / "part.zip", {"u.data": raw_files["grouplens-100k"]["u.data"]})
    with pytest.raises(FetchError, match="found u.data"):
        fetch_dataset("movielens-100k", paths, source=incomplete)
    with pytest.raises(FetchError, match="does not exist"):
        fetch_dataset("movielens-100k", paths, source=tmp_path / "nowhere.zip")
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]


def test_plain_fetch_keeps_files_fetched_from_a_user_source(raw_files, tmp_path, no_pip):
    paths = Paths(tmp_path / "home")
    archive = grouplens_zip(tmp_path / "ml-100k.zip", raw_files["grouplens-100k"])
    dest = fetch_dataset("movielens-100k", paths, source=archive)
    assert fetch_dataset("movielens-100k", paths) == dest  # no pip: the user's files stay
    assert sorted(p.name for p in dest.iterdir()) == ["u.data", "u.item", "u.user"]


@pytest.fixture
def http_folder(tmp_path):
    """Serve tmp_path/www over http://127.0.0.1:<port>/ for the test."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_source_url(raw_files, tmp_path, http_folder):
    root, base = http_folder
    paths = Paths(tmp_path / "home")
    grouplens_zip(root / "ml-100k.zip", raw_files["grouplens-100k"])
    dest = fetch_dataset("movielens-100k", paths, source=f"{base}/ml-100k.zip")
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == raw_files["grouplens-100k"]
    assert json.loads(manifest_path("movielens-100k", paths).read_text())["source"] == f"{base}/ml-100k.zip"
    with pytest.raises(FetchError, match="could not download"):
        fetch_dataset("movielens-100k", paths, source=f"{base}/missing.zip")
    assert not list((paths.data / "cache" / "downloads").iterdir())  # the download is not kept


# --- registries and PLMs ------------------------------------------------------------------------


def test_registries():
    assert set(DATASETS) == {"movielens-100k", "movielens-1m"} and DATASETS["movielens-1m"].default is None
    assert set(PLMS) == {"bert-2l-128", "minilm-l6"}
    for asset in [*PLMS.values(), RECBOLE]:
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in asset.members.values())
    assert not any(m.endswith(".pt") for m in PLMS["bert-2l-128"].members)  # no pickles
    with pytest.raises(KeyError, match="known: bert-2l-128, minilm-l6"):
        fetch_plm("gpt-17", Paths(Path("/nonexistent")))
    with pytest.raises(NoRawFiles, match=r"netflix: no raw files in .*raw/netflix; put the files your spec.*"
                                         r"an offline source exists for movielens-100k\); there is no spec named "
                                         r"'netflix' either \(known: .*movielens-100k"):
        fetch_dataset("netflix", Paths(Path("/nonexistent")))


@pytest.mark.slow
def test_fetch_bert_2l_128(ml100k_fetched, tmp_path_factory):
    """The small PLM (a 17 MB wheel): pinned files land flat in data/plms/bert-2l-128."""
    paths = ml100k_fetched.paths
    dest = fetch_plm("bert-2l-128", paths)
    assert dest == paths.plms / "bert-2l-128"
    assert sorted(p.name for p in dest.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]  # fmt: skip
    assert json.loads((dest / "config.json").read_text())["model_type"] == "bert"
    assert fetch_plm("bert-2l-128", paths) == dest
