"""The online-engine adapters answer one contract: the "features loaded" marker, the health probe,
a fault naming the store within the timeout, and mending. SQLite runs in every test run; Redis runs
on a real redis-server under the ``engines`` mark (``make test-engines``, where a missing
redis-server fails instead of skipping)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time

import pytest

from core.backends import ONLINE_STORES, Backends
from core.spec import load_spec
from feature_repo.online import materialize, online_features, online_store_ready
from feature_repo.online_engines import ENGINES, OnlineStoreFault, RedisEngine, SQLiteEngine, online_engine
from feature_repo.store import apply, open_store, raw_config
from ingestion.warehouse import ingest
from validation import gate

SPEC = load_spec("movielens-100k")
TIMEOUT_MS = 250
ROWS = [{"user_id": 3, "item_id": 2}, {"user_id": 999, "item_id": 1}]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.engines)])
def engine_home(request, paths, small_raw, monkeypatch):
    """(paths, backends, make the store go away, bring it back) for each engine, data ingested."""
    ingest(SPEC, small_raw, paths.warehouse, paths.snapshots, gate)
    if request.param == "sqlite":
        aside = paths.online_store.with_name("online_store.db.aside")
        yield paths, Backends(), lambda: paths.online_store.rename(aside), lambda: aside.rename(paths.online_store)
        return
    from tests.engines.conftest import RedisServer, free_port, require_module, require_program

    require_module("redis", "redis")
    server = RedisServer(require_program("redis-server", "redis-server"), free_port()).start()
    monkeypatch.setenv("CLICKPROMPT_ONLINE_STORE", "redis")
    monkeypatch.setenv("CLICKPROMPT_REDIS", server.url)
    try:
        yield paths, Backends.from_env(), server.stop, server.start
    finally:
        server.stop()


def test_each_engine_answers_the_same_probe_and_fault_contract(engine_home):
    paths, backends, gone, back = engine_home
    apply(SPEC, paths, backends=backends)
    engine = online_engine(paths, backends, timeout_ms=TIMEOUT_MS)
    assert engine.name == backends.online_store
    store = open_store(paths, engine.backends)
    engine.probe(store)  # the store answers ...
    assert not engine.holds_features(store)  # ... but `feast apply` loaded nothing into it
    assert not online_store_ready(paths, backends, store)

    materialize(SPEC, paths, store=store)
    assert engine.holds_features(store) and online_store_ready(paths, backends, store)
    assert engine.check() is False  # the same store as before
    engine.probe(store)
    want = online_features(paths, ROWS, store=store)
    assert want["occupation"] == ["writer", None]

    gone()
    started = time.perf_counter()
    with pytest.raises(OnlineStoreFault) as fault:
        engine.check()
        engine.probe(store)
    assert time.perf_counter() - started < 3.0
    assert str(fault.value).startswith(f"online store {engine.label}: ")
    assert not engine.holds_features(store)
    assert not online_store_ready(paths, backends)

    back()
    engine.close(store)
    store = open_store(paths, engine.backends)
    engine.probe(store)
    # the SQLite file came back with its marker; the restarted Redis (no persistence) is empty
    assert engine.holds_features(store) == (backends.online_store == "sqlite")
    materialize(SPEC, paths, store=store)
    assert engine.holds_features(store)
    assert online_features(paths, ROWS, store=store) == want


@pytest.fixture
def sqlite_home(paths, small_raw):
    ingest(SPEC, small_raw, paths.warehouse, paths.snapshots, gate)
    apply(SPEC, paths)
    materialize(SPEC, paths)
    return paths


def test_sqlite_faults_name_the_file_and_wait_no_longer_than_the_timeout(sqlite_home):
    file = sqlite_home.online_store
    engine = online_engine(sqlite_home, Backends(), timeout_ms=TIMEOUT_MS)
    store = open_store(sqlite_home, engine.backends)
    engine.probe(store)

    lock = sqlite3.connect(file, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # a writer holding the file, as a long materialization would
    try:
        started = time.perf_counter()
        with pytest.raises(OnlineStoreFault, match=f"^online store {file}: OperationalError: database is locked"):
            engine.probe(store)
        assert 0.2 <= time.perf_counter() - started < 3.0  # the 250 ms busy timeout, not sqlite3's 5 s
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    engine.probe(store)

    copy = file.with_name("online_store.db.copy")
    shutil.copy2(file, copy)
    os.replace(copy, file)  # replaced by another file: a held connection must be dropped, once
    assert engine.check() is True and engine.check() is False

    engine.close(store)
    with open(file, "r+b") as fh:
        fh.write(b"this is not a SQLite file" * 8)
    with pytest.raises(OnlineStoreFault, match=f"^online store {file}: DatabaseError: file is not a database"):
        engine.probe(open_store(sqlite_home, engine.backends))
    assert not engine.holds_features()  # a broken file: the flows materialize again

    file.unlink()
    with pytest.raises(OnlineStoreFault, match=f"^online store {file}: the file is missing$"):
        engine.check()
    with pytest.raises(OnlineStoreFault, match="the file is missing"):
        engine.probe(store)
    assert not file.exists()  # probing never creates an empty file in its place


def test_one_factory_picks_the_engine_and_keeps_passwords_out_of_what_people_read(paths):
    assert set(ENGINES) == set(ONLINE_STORES)
    sqlite = online_engine(paths, Backends())
    assert type(sqlite) is SQLiteEngine and sqlite.label == str(paths.online_store)
    assert sqlite.store_config() == sqlite.public_config() == {"type": "sqlite", "path": str(paths.online_store)}
    assert raw_config(paths, Backends())["online_store"] == sqlite.store_config()

    backends = Backends(online_store="redis", redis="10.0.0.5:6380,password=s3cret")
    redis = online_engine(paths, backends)
    assert type(redis) is RedisEngine and redis.label == "redis://10.0.0.5:6380"
    assert raw_config(paths, backends)["online_store"] == redis.store_config() == {
        "type": "redis", "connection_string": "10.0.0.5:6380,password=s3cret"}
    assert redis.public_config() == {"type": "redis", "connection_string": "10.0.0.5:6380"}
    timed = online_engine(paths, backends, timeout_ms=TIMEOUT_MS)
    assert timed.store_config()["connection_string"] == (
        "10.0.0.5:6380,password=s3cret,socket_timeout=0.25,socket_connect_timeout=0.25")
    own = Backends(online_store="redis", redis="10.0.0.5:6380,socket_timeout=2")
    assert online_engine(paths, own, timeout_ms=TIMEOUT_MS).store_config()["connection_string"] == own.redis
