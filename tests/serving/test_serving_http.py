"""The HTTP API on a real uvicorn server (loopback), real Feast online store, real registry."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest

import cli
from models.ctr import CTRModel
from tests.serving.conftest import PROFILE_CHANGE

PROFILE_START = "1997-09-01T00:00:00+00:00"  # MovieLens profiles are valid from the spec's time.min


def predict(server, user_id, item_id) -> dict:
    response = server.client.post("/predict", json={"user_id": user_id, "item_id": item_id})
    assert response.status_code == 200, response.text
    return response.json()


def test_health_names_the_production_version(server):
    response = server.client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["model_name"], body["model_version"]) == ("ok", "ctr", 1)
    assert body["training_stage"] == "finetune-ctr-only" and body["feature_service"] == "ctr_v1"


def test_the_api_docs_render_offline(server):
    """/docs and /redoc load Swagger UI / ReDoc from the server itself (FastAPI's default pages load
    them from a CDN, which an offline host cannot reach), and Swagger UI is one that reads OpenAPI 3.1."""
    spec = server.client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1") and "/predict" in spec["paths"]
    for page, assets in [("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]), ("/redoc", ["redoc.standalone.js"])]:
        html = server.client.get(page)
        assert html.status_code == 200 and "cdn." not in html.text and "/openapi.json" in html.text
        for asset in assets:
            url = f"/static-offline-docs/{asset}"
            assert url in html.text
            body = server.client.get(url)
            assert body.status_code == 200 and len(body.content) > 100_000
    bundle = server.client.get("/static-offline-docs/swagger-ui-bundle.js").text
    assert 'isOAS31' in bundle  # Swagger UI 5's OpenAPI 3.1 support (4.x cannot render FastAPI's spec)


def test_predict_returns_probability_version_and_feature_timestamps(server):
    body = predict(server, 1, 1)
    assert 0.0 < body["click_probability"] < 1.0
    assert body["model_version"] == 1 and body["model_name"] == "ctr"
    assert body["feature_timestamps"] == {"user_profile": PROFILE_START, "item_profile": PROFILE_START}
    assert body["unknown"] == {"user": False, "item": False}
    # user 2's profile was replaced: the online store serves the latest version, and says which
    assert predict(server, 2, 1)["feature_timestamps"]["user_profile"] == PROFILE_CHANGE.isoformat()


def test_batch_scores_like_single_requests(server):
    pairs = [(1, 1), (2, 3), (7, 12), (9999, 4), (41, 25)]
    response = server.client.post("/predict/batch", json={"requests": [{"user_id": u, "item_id": i} for u, i in pairs]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == 1 and len(body["predictions"]) == len(pairs)
    for (u, i), row in zip(pairs, body["predictions"]):
        single = predict(server, u, i)
        assert (row["user_id"], row["item_id"]) == (u, i)
        assert row["click_probability"] == pytest.approx(single["click_probability"], abs=1e-6)
        assert row["unknown"] == single["unknown"] and row["feature_timestamps"] == single["feature_timestamps"]
    assert len({round(r["click_probability"], 6) for r in body["predictions"]}) > 1  # not a constant


def test_unknown_users_and_items_are_flagged_and_still_scored(server):
    nowhere = predict(server, 9999, 1)  # no features, not in the vocabulary
    assert nowhere["unknown"] == {"user": True, "item": False}
    assert nowhere["feature_timestamps"] == {"user_profile": None, "item_profile": PROFILE_START}
    store_only = predict(server, 41, 25)  # profiles in the store, never seen in training
    assert store_only["unknown"] == {"user": True, "item": True}
    assert store_only["feature_timestamps"] == {"user_profile": PROFILE_START, "item_profile": PROFILE_START}
    both = predict(server, 9999, 9999)
    assert both["unknown"] == {"user": True, "item": True}
    for body in (nowhere, store_only, both):
        assert 0.0 < body["click_probability"] < 1.0 and math.isfinite(body["click_probability"])
        assert body["model_version"] == 1


@pytest.mark.parametrize(
    ("path", "payload", "loc", "kind"),
    [
        ("/predict", {"user_id": "abc", "item_id": 1}, ["body", "user_id"], "int_type"),
        ("/predict", {"user_id": 1}, ["body", "item_id"], "missing"),
        ("/predict", {"user_id": 1.5, "item_id": 1}, ["body", "user_id"], "int_type"),
        ("/predict", {"user_id": 1, "item_id": 2, "iten_id": 3}, ["body", "iten_id"], "extra_forbidden"),
        ("/predict/batch", {"requests": [{"user_id": 1, "item_id": 1}, {"user_id": 2, "item_id": "x"}]},
         ["body", "requests", 1, "item_id"], "int_type"),
        ("/predict/batch", {"requests": []}, ["body", "requests"], "too_short"),
        ("/predict/batch", {"user_id": 1, "item_id": 1}, ["body", "requests"], "missing"),
    ],
)
def test_malformed_requests_get_422_naming_the_field(server, path, payload, loc, kind):
    response = server.client.post(path, json=payload)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(e["loc"] == loc and e["type"] == kind for e in errors), errors


def test_a_body_that_is_not_json_gets_422(server):
    response = server.client.post("/predict", content=b"user_id=1", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"


def test_serving_holds_the_plain_backbone_and_no_language_model(server):
    loaded = server.app.state.predictor.model
    assert isinstance(loaded.model, CTRModel) and not loaded.uses_text
    assert not any("plm" in name for name, _ in loaded.model.named_parameters())
    assert loaded.feature_service == "ctr_v1"


def test_cli_predict_gives_the_http_answer(server, trained_home, monkeypatch, capsys):
    monkeypatch.setenv("CLICKPROMPT_HOME", str(trained_home.paths.home))
    assert cli.main(["predict", "--user-id", "2", "--item-id", "3", "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    remote = predict(server, 2, 3)
    assert local["click_probability"] == pytest.approx(remote["click_probability"], abs=1e-9)
    assert {k: v for k, v in local.items() if k != "click_probability"} == {
        k: v for k, v in remote.items() if k != "click_probability"}
    assert cli.main(["predict", "--user-id", "9999", "--item-id", "3"]) == 0
    assert "unknown: user" in capsys.readouterr().out


def test_predict_and_score_without_a_production_version_say_how_to_get_one(trained_home, monkeypatch, capsys,
                                                                           tmp_path):
    monkeypatch.setenv("CLICKPROMPT_HOME", str(trained_home.paths.home))
    hint = ("no production version of model 'unpromoted' in sqlite:///{}: `clickprompt registry register --run RUN_DIR` "
            "then `clickprompt registry promote VERSION`").format(trained_home.paths.home / "mlruns.db")
    assert cli.main(["predict", "--user-id", "2", "--item-id", "3", "--name", "unpromoted"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {hint}"
    assert cli.main(["score", "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out.parquet"),
                     "--name", "unpromoted"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {hint}"
    assert not (tmp_path / "out.parquet").exists()


def test_a_promotion_is_picked_up_without_restart(server, trained_home):
    registry = trained_home.registry
    before = predict(server, 1, 1)
    assert before["model_version"] == 1
    assert registry.promote(2, force=True).promoted  # v2: the baseline stage of the same run
    after = predict(server, 1, 1)
    assert after["model_version"] == 2 and server.client.get("/health").json()["training_stage"] == "baseline"
    assert after["click_probability"] != before["click_probability"]
    assert registry.promote(1, force=True).promoted  # roll back
    assert predict(server, 1, 1) == before


def test_a_broken_new_version_leaves_the_old_one_serving(server, trained_home):
    registry = trained_home.registry
    copy = trained_home.run_dir.parent / f"{trained_home.run_dir.name}-copy"  # the same run again would be v1
    shutil.copytree(trained_home.run_dir, copy, dirs_exist_ok=True)
    broken = registry.register(copy)  # the CTR-only model again, then damaged on disk
    assert broken.version > 1
    weights = broken.path / "model.safetensors"
    os.chmod(weights, 0o644)
    weights.write_bytes(weights.read_bytes()[:-16])
    try:
        assert registry.promote(broken.version, force=True).promoted
        body = predict(server, 1, 1)
        assert body["model_version"] == 1  # still served, not a 500
        health = server.client.get("/health").json()
        assert health["model_version"] == 1 and "changed since registration" in health["last_error"]
    finally:
        registry.promote(1, force=True)
    assert server.client.get("/health").json()["last_error"] is None
