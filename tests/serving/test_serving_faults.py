"""The server under faults and load, on a real uvicorn server (loopback) over the real stores.

Each fault is made on the files the server reads (the SQLite online store, the registry's DuckDB
file, Feast's registry), checked while it lasts (the last good model answers where it can, 503
with a reason where it cannot, ``/health`` says which) and mended again: the server recovers
without a restart. Each test gets its own server so a fault cannot leak into other tests.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from serving.bodies import MAX_BODY_BYTES
from serving.online_features import OnlineFeatures
from serving.requests import MAX_BATCH
from serving.scoring import load_model, score_frame
from serving.server import create_app
from serving.timing import parse_server_timing
from tests.serving.conftest import running

STAGES = ["parse", "registry", "online", "encode", "forward", "response", "serialize", "total"]


@pytest.fixture
def own_server(trained_home):
    with running(create_app(trained_home.paths, poll_seconds=300)) as srv:
        yield srv


def wait_for(check, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def post(srv, user=1, item=1) -> httpx.Response:
    return srv.client.post("/predict", json={"user_id": user, "item_id": item})


def healthy(srv) -> bool:
    r = srv.client.get("/health")
    return r.status_code == 200 and r.json()["status"] == "ok"


def test_responses_carry_the_latency_budget_per_stage(own_server):
    r = post(own_server)
    laps = parse_server_timing(r.headers["server-timing"])
    assert list(laps) == STAGES
    assert all(v >= 0 for v in laps.values())
    assert sum(v for k, v in laps.items() if k != "total") == pytest.approx(laps["total"], rel=0.05, abs=0.05)


def test_a_name_without_a_production_version_starts_saying_why(trained_home, caplog):
    """`clickprompt serve --name typo` starts (a later promotion is picked up) but says so in its log."""
    with caplog.at_level("WARNING", logger="clickprompt.serving"):
        with running(create_app(trained_home.paths, name="typo", poll_seconds=300)) as srv:
            health = srv.client.get("/health")
            assert health.status_code == 503 and health.json()["model_version"] is None
    assert any("no model to serve yet" in r.message and "no production version of model 'typo'" in r.message
               for r in caplog.records), caplog.text


def test_the_online_store_missing_gives_503_and_recovers(own_server, trained_home):
    store = trained_home.paths.online_store
    aside = store.with_name("online_store.db.aside")
    good = post(own_server).json()
    store.rename(aside)
    try:
        r = post(own_server)
        assert r.status_code == 503 and r.json()["reason"] == "online_store"
        assert "the file is missing" in r.json()["detail"] and str(store) in r.json()["detail"]
        health = own_server.client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert "the file is missing" in health.json()["online_store"]
        assert health.json()["model_version"] == 1  # the model is still loaded
        assert not store.exists()  # no empty file was created in its place
    finally:
        aside.rename(store)
    assert wait_for(lambda: healthy(own_server))
    assert post(own_server).json() == good


def test_a_corrupt_online_store_gives_503_naming_it_and_recovers(own_server, trained_home):
    store = trained_home.paths.online_store
    backup = store.with_name("online_store.db.good")
    shutil.copy2(store, backup)
    good = post(own_server).json()
    try:
        with open(store, "r+b") as fh:  # in place: the server's open connection sees it
            fh.write(b"this is not a SQLite file" * 8)
        r = wait_for(lambda: (lambda x: x if x.status_code == 503 else None)(post(own_server)))
        assert r is not None and r.json()["reason"] == "online_store"
        assert str(store) in r.json()["detail"] and "DatabaseError" in r.json()["detail"]
        assert "not a database" in own_server.client.get("/health").json()["online_store"]
    finally:
        shutil.copy2(backup, store)
        backup.unlink()
    assert wait_for(lambda: healthy(own_server))
    assert post(own_server).json() == good


def test_a_locked_online_store_answers_503_within_the_busy_timeout(own_server, trained_home):
    good = post(own_server).json()
    lock = sqlite3.connect(trained_home.paths.online_store, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # a writer holding the file, as a long materialization would
    try:
        t = time.perf_counter()
        r = post(own_server)
        waited = time.perf_counter() - t
        assert r.status_code == 503 and "database is locked" in r.json()["detail"]
        assert waited < 3.0  # not sqlite3's default 5 s wait per request
        time.sleep(1.2)  # the retry after a failure opens a new connection: it waits no longer
        t = time.perf_counter()
        again = post(own_server)
        assert again.status_code == 503 and time.perf_counter() - t < 3.0
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert wait_for(lambda: healthy(own_server))
    assert post(own_server).json() == good


def test_a_locked_registry_keeps_the_last_good_model_serving(own_server, trained_home):
    registry = trained_home.registry
    good = post(own_server).json()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time; con = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "con.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(30)"), str(registry.db_path)],
        stdout=subprocess.PIPE, text=True)  # another process holds the MLflow store's SQLite file
    try:
        assert holder.stdout.readline().strip() == "locked"
        registry._generation_path.touch()  # the change marker moves: the server looks at the registry
        time.sleep(0.01)
        r = post(own_server)
        assert r.status_code == 200 and r.json() == good  # the last good model answers
        # the refresh waits on SQLite's busy timeout before it reports the locked store
        assert wait_for(lambda: own_server.client.get("/health").json()["status"] == "degraded", seconds=20)
        health = own_server.client.get("/health").json()
        assert health["model_version"] == 1 and "database is locked" in health["last_error"]
        assert post(own_server).json() == good
    finally:
        holder.kill()
        holder.wait()
    registry._generation_path.touch()
    assert wait_for(lambda: healthy(own_server))


def test_an_unreadable_feast_registry_at_start_gives_503_until_mended(trained_home):
    feast_registry = trained_home.paths.feast_registry
    backup = feast_registry.with_name("registry.db.good")
    shutil.copy2(feast_registry, backup)
    feast_registry.write_bytes(b"\x00garbage, not a Feast registry")
    try:
        with running(create_app(trained_home.paths, poll_seconds=300)) as srv:
            health = srv.client.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "unavailable"
            assert health.json()["model_version"] is None and "Feast" in health.json()["last_error"]
            r = post(srv)
            assert r.status_code == 503 and "Feast" in r.json()["detail"]
            shutil.copy2(backup, feast_registry)  # mended while the server runs
            assert wait_for(lambda: healthy(srv))
            assert post(srv).json()["model_version"] == 1
    finally:
        shutil.copy2(backup, feast_registry)
        backup.unlink()


def test_request_limits_name_the_limit(own_server):
    big = own_server.client.post("/predict/batch", content=b'{"requests": [' + b" " * MAX_BODY_BYTES + b"]}",
                                 headers={"content-type": "application/json"})
    assert big.status_code == 413
    assert big.json()["detail"] == (f"request body of {MAX_BODY_BYTES + 16} bytes exceeds the limit of "
                                    f"{MAX_BODY_BYTES} bytes")

    def chunks():
        yield b'{"requests": ['
        for _ in range(MAX_BODY_BYTES // 1000 + 1):
            yield b" " * 1000
        yield b"]}"

    chunked = own_server.client.post("/predict/batch", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and f"limit of {MAX_BODY_BYTES} bytes" in chunked.json()["detail"]
    many = own_server.client.post("/predict/batch", json={"requests": [{"user_id": 1, "item_id": 1}] * (MAX_BATCH + 1)})
    assert many.status_code == 422
    error = many.json()["detail"][0]
    assert error["loc"] == ["body", "requests"] and f"at most {MAX_BATCH} items" in error["msg"]


def test_a_promotion_under_load_gives_no_error_and_no_mixed_version(own_server, trained_home):
    """8 clients for ~4 s; v2 is promoted after ~1.5 s. Every response names one version and
    carries that version's score for its pair; after the promotion the switch is bounded."""
    paths, registry = trained_home.paths, trained_home.registry
    pairs = [(u, i) for u in (1, 2, 5, 9, 17, 33) for i in (1, 4, 11, 20)]
    features = OnlineFeatures(paths)
    expected = {}
    for version in (1, 2):
        lm = load_model(registry.get(version), paths)
        frame, _ = features.rows(lm.feature_service, pairs, lm.keys)
        expected[version] = dict(zip(pairs, score_frame(lm, frame).probability.tolist(), strict=True))
    assert expected[1] != expected[2]
    log: list[tuple[float, int, int | None, tuple[int, int], float | None]] = []
    stop = time.perf_counter() + 4.0

    def client(k: int) -> None:
        with httpx.Client(base_url=own_server.base_url, timeout=30) as c:
            n = k
            while time.perf_counter() < stop:
                pair = pairs[n % len(pairs)]
                n += 1
                started = time.perf_counter()
                r = c.post("/predict", json={"user_id": pair[0], "item_id": pair[1]})
                body = r.json() if r.status_code == 200 else {}
                log.append((started, r.status_code, body.get("model_version"), pair, body.get("click_probability")))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    time.sleep(1.5)
    try:
        assert registry.promote(2, force=True).promoted
        promoted_at = time.perf_counter()
        for th in threads:
            th.join()
    finally:
        registry.promote(1, force=True)
    assert len(log) > 50
    assert [entry for entry in log if entry[1] != 200] == []
    for started, _, version, pair, prob in log:
        assert version in (1, 2)
        assert prob == pytest.approx(expected[version][pair], abs=1e-6), (version, pair)
    assert {v for _, _, v, _, _ in log} == {1, 2}
    last_old = max((s for s, _, v, _, _ in log if v == 1), default=promoted_at)
    assert last_old - promoted_at < 1.0  # no v1 answer to a request sent over a second after the switch
    assert all(v == 2 for s, _, v, _, _ in log if s > promoted_at + 1.0)
