"""The inbox's digest cache: a batch's bytes are read again only when a file is new, changed in size
or time, or was modified within the racy window of being hashed; a broken cache is rebuilt."""

from __future__ import annotations

import os

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


def _age(path, seconds: int = 60) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 1_000_000_000))


def test_unchanged_files_are_not_read_again_and_changes_are_seen(tmp_path, monkeypatch):
    read = _counting(monkeypatch)
    batch = tmp_path / "inbox" / "0001"
    batch.mkdir(parents=True)
    for name, text in (("a.inter", "1\t2\t4\n"), ("b.user", "1\tF\n")):
        (batch / name).write_text(text)
        _age(batch / name)
    warehouse = tmp_path / "data" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    uncached = batch_digest(batch)
    cache = DigestCache.beside(warehouse)
    assert batch_digest(batch, cache) == uncached
    cache.save()
    assert warehouse.with_name("warehouse.duckdb.inbox-digests.json").is_file()
    read.clear()
    assert batch_digest(batch, DigestCache.beside(warehouse)) == uncached and read == []  # from the cache

    (batch / "a.inter").write_text("1\t2\t5\n")  # same size, new bytes, new mtime
    _age(batch / "a.inter", 30)
    fresh = DigestCache.beside(warehouse)
    changed = batch_digest(batch, fresh)
    assert read == ["a.inter"] and changed != uncached and changed == batch_digest(batch)
    fresh.save()

    read.clear()
    (batch / "b.user").write_text("1\tM\n")  # just written: inside the racy window, never trusted
    racy = DigestCache.beside(warehouse)
    batch_digest(racy_batch := batch, racy)
    racy.save()
    batch_digest(racy_batch, DigestCache.beside(warehouse))
    assert read.count("b.user") == 2 and "a.inter" not in read


def test_a_broken_or_unwritable_cache_only_costs_time(tmp_path, monkeypatch):
    batch = tmp_path / "inbox" / "0001"
    batch.mkdir(parents=True)
    (batch / "a.inter").write_text("1\t2\t4\n")
    _age(batch / "a.inter")
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.with_name("warehouse.duckdb.inbox-digests.json").write_text("{not json")
    cache = DigestCache.beside(warehouse)
    assert batch_digest(batch, cache) == batch_digest(batch)
    cache.save()  # replaces the broken file
    assert DigestCache.beside(warehouse).entries
    for odd in ("[1, 2]", '{"%s": [1, 2]}' % (batch / "a.inter").resolve()):  # JSON, but not the cache's shape
        warehouse.with_name("warehouse.duckdb.inbox-digests.json").write_text(odd)
        assert batch_digest(batch, DigestCache.beside(warehouse)) == batch_digest(batch)
    blocked = DigestCache(tmp_path / "no-such-dir" / "file.json")
    batch_digest(batch, blocked)
    blocked.save()  # its folder is missing: nothing written, no error
    assert not (tmp_path / "no-such-dir").exists()
