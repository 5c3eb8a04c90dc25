"""Feast's Redis online store (a real redis-server on loopback) against the SQLite default: the same
materialization gives the same online values, and the HTTP server answers from Redis unchanged."""

from __future__ import annotations

import pytest

from core.backends import Backends
from core.spec import load_spec
from feature_repo.online import materialize, online_features, online_store_ready
from feature_repo.store import apply, open_store
from serving.server import create_app
from tests.engines.conftest import plain
from tests.serving.conftest import running

pytestmark = pytest.mark.engines
SPEC = load_spec("movielens-100k")


def _on_redis(home, redis_server, monkeypatch) -> Backends:
    monkeypatch.setenv("CLICKPROMPT_ONLINE_STORE", "redis")
    monkeypatch.setenv("CLICKPROMPT_REDIS", redis_server.url)
    backends = Backends.from_env()
    apply(SPEC, home, backends=backends)  # the same registry; the online side now points at Redis
    return backends


def test_redis_online_values_equal_the_sqlite_stores(trained_home, redis_server, monkeypatch):
    home = trained_home.paths
    backends = _on_redis(home, redis_server, monkeypatch)
    redis_store = open_store(home, backends)
    assert not online_store_ready(home, backends, redis_store)  # nothing materialized into this Redis yet
    materialize(SPEC, home, store=redis_store)
    assert online_store_ready(home, backends, redis_store)
    rows = [{"user_id": u, "item_id": i} for u in (1, 2, 7, 41, 9999) for i in (1, 3, 25, 8888)]
    for service in ("ctr_v1", "clickprompt_v1"):
        sqlite = plain(online_features(home, rows, service, store=open_store(home, Backends())))
        redis = plain(online_features(home, rows, service, store=redis_store))
        assert redis == sqlite, service
    got = plain(online_features(home, rows[:1], "clickprompt_v1", store=redis_store))
    assert got["occupation"] and got["occupation"][0] is not None and got["user_text"][0].startswith("User ID is 1.")


def test_the_server_answers_from_redis_and_names_it_when_it_is_down(trained_home, redis_server, monkeypatch):
    home = trained_home.paths
    with running(create_app(home, poll_seconds=300)) as srv:  # the SQLite default
        want = [srv.client.post("/predict", json={"user_id": u, "item_id": i}).json() for u, i in ((1, 1), (2, 3))]
    backends = _on_redis(home, redis_server, monkeypatch)
    materialize(SPEC, home, store=open_store(home, backends))
    with running(create_app(home, poll_seconds=300)) as srv:  # the same app, configured for Redis
        assert srv.app.state.predictor.features.label == f"redis://{redis_server.url}"
        for (u, i), expected in zip(((1, 1), (2, 3)), want):
            body = srv.client.post("/predict", json={"user_id": u, "item_id": i}).json()
            assert body["click_probability"] == pytest.approx(expected["click_probability"], abs=1e-7)
            assert body["feature_timestamps"] == expected["feature_timestamps"]
        assert srv.client.get("/health").json()["status"] == "ok"

        redis_server.stop()
        down = srv.client.post("/predict", json={"user_id": 1, "item_id": 1})
        assert down.status_code == 503 and down.json()["reason"] == "online_store"
        assert f"redis://{redis_server.url}" in down.json()["detail"]
        assert srv.client.get("/health").status_code == 503

        redis_server.start()  # an empty Redis: materialize again, and the server mends without a restart
        materialize(SPEC, home, store=open_store(home, backends))
        import time
        time.sleep(1.1)  # the retry interval after a failed lookup
        back = srv.client.post("/predict", json={"user_id": 1, "item_id": 1})
        assert back.status_code == 200
        assert back.json()["click_probability"] == pytest.approx(want[0]["click_probability"], abs=1e-7)
