"""The inbox's digest cache: a batch's bytes are read again only when a file is new, or its size,
mtime, inode or ctime differ, or it changed within the racy window of being hashed; a broken cache is
rebuilt."""

from __future__ import annotations

import os
import shutil

import ingestion.batch_log as batch_log
from ingestion.batch_log import DigestCache, batch_digest


def _counting(monkeypatch) -> list[str]:
    read: list[str] = []
    real = batch_log.sha256_file

    def sha(path):
        read.append(path.name)
        return real(path)

    monkeypatch.setattr(batch_log, "sha256_file", sha)
    return read


def _batch(tmp_path):
    batch = tmp_path / "inbox" / "0001"
    batch.mkdir(parents=True)
    for name, text in (("a.inter", "1\t2\t4\n"), ("b.user", "1\tF\n")):
        (batch / name).write_text(text)
    warehouse = tmp_path / "data" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    return batch, warehouse


def test_unchanged_files_are_not_read_again_and_changes_are_seen(tmp_path, monkeypatch):
    read = _counting(monkeypatch)
    monkeypatch.setattr(DigestCache, "RACY_NS", -10**12)  # these files were all just written: trust them here
    batch, warehouse = _batch(tmp_path)
    uncached = batch_digest(batch)
    cache = DigestCache.beside(warehouse)
    assert batch_digest(batch, cache) == uncached
    cache.save()
    assert warehouse.with_name("warehouse.duckdb.inbox-digests.json").is_file()
    read.clear()
    assert batch_digest(batch, DigestCache.beside(warehouse)) == uncached and read == []  # from the cache

    before = (batch / "a.inter").stat()
    fixed = tmp_path / "a.inter"
    fixed.write_text("1\t2\t5\n")  # the same size, other bytes ...
    os.utime(fixed, ns=(before.st_atime_ns, before.st_mtime_ns))  # ... and the old mtime (cp -p, rsync -a)
    shutil.copy2(fixed, batch / "a.inter")
    assert (batch / "a.inter").stat().st_mtime_ns == before.st_mtime_ns
    fresh = DigestCache.beside(warehouse)
    changed = batch_digest(batch, fresh)
    assert read == ["a.inter"] and changed != uncached and changed == batch_digest(batch)  # ctime told
    fresh.save()


def test_a_file_changed_just_before_it_was_hashed_is_hashed_again(tmp_path, monkeypatch):
    read = _counting(monkeypatch)
    batch, warehouse = _batch(tmp_path)  # written now: inside the racy window, never trusted
    for _ in range(2):
        cache = DigestCache.beside(warehouse)
        batch_digest(batch, cache)
        cache.save()
    assert sorted(read) == ["a.inter", "a.inter", "b.user", "b.user"]


def test_a_broken_or_unwritable_cache_only_costs_time(tmp_path):
    batch, warehouse = _batch(tmp_path)
    cache_file = warehouse.with_name("warehouse.duckdb.inbox-digests.json")
    cache_file.write_text("{not json")
    cache = DigestCache.beside(warehouse)
    assert batch_digest(batch, cache) == batch_digest(batch)
    cache.save()  # replaces the broken file
    assert DigestCache.beside(warehouse).entries
    for odd in ("[1, 2]", '{"%s": [1, 2]}' % (batch / "a.inter").resolve()):  # JSON, but not the cache's shape
        cache_file.write_text(odd)
        assert batch_digest(batch, DigestCache.beside(warehouse)) == batch_digest(batch)
    blocked = DigestCache(tmp_path / "no-such-dir" / "file.json")
    batch_digest(batch, blocked)
    blocked.save()  # its folder is missing: nothing written, no error
    assert not (tmp_path / "no-such-dir").exists()
