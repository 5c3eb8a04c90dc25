"""Serving the with-LM model: the ClickPrompt finetuning that keeps the language model at inference.

The registry serves the CTR-only model by default (no language model at serving); the map's one
replicated gain is the with-LM model's (docs/bench/replication.md), so a user who accepts its cost
registers that stage instead. Here the session's run registers its ``finetune-with-lm`` stage
under a model name of its own (``ctr-lm``, so the ``ctr`` versions the other tests read stay as
they are) and it is served, scored as of a time and checked against the run's own evaluation.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import cli
from feature_repo.training_sets import latest_training_set, load_training_sets
from models.evaluate import evaluate
from serving.scoring import load_production, score_entities, score_frame
from tests.serving.conftest import running
from tests.serving.test_batch_scoring import AFTER_ALL_VERSIONS

NAME = "ctr-lm"
# known pairs, a user with a profile and no ratings (41), an item likewise (25), and ids the store
# lacks (9999): the last pair has no entity text at all
PAIRS = [(1, 1), (2, 3), (15, 20), (41, 25), (9999, 4), (3, 9999), (9999, 9999)]


@pytest.fixture(scope="module")
def lm_version(trained_home):
    registry = trained_home.registry
    mv = registry.register(trained_home.run_dir, stage="finetune-with-lm", name=NAME)
    assert registry.promote(mv.version, name=NAME).promoted  # the first version of its name
    return mv


@pytest.fixture(scope="module")
def lm_server(trained_home, lm_version):
    from serving.server import create_app

    with running(create_app(trained_home.paths, name=NAME, poll_seconds=300)) as srv:
        yield srv


def test_a_with_lm_version_needs_the_text_service_and_loads_its_language_model(trained_home, lm_version):
    assert (lm_version.training_stage, lm_version.feature_service) == ("finetune-with-lm", "clickprompt_v1")
    lm = load_production(trained_home.paths, NAME)
    assert lm.uses_text and hasattr(lm.model, "plm")
    assert {"user_text", "item_text"} <= set(lm.input_columns)


def test_scoring_with_the_lm_reproduces_the_training_evaluation(trained_home, lm_version):
    lm = load_production(trained_home.paths, NAME)
    test = load_training_sets(latest_training_set(trained_home.paths))[0]["test"]
    got = evaluate(test["label"].to_numpy(), score_frame(lm, test).probability)
    recorded = trained_home.summary["finetune-with-lm"]["test"]
    assert recorded["n"] == len(test)
    assert got["auc"] == pytest.approx(recorded["auc"], abs=1e-9)
    assert got["logloss"] == pytest.approx(recorded["logloss"], abs=1e-6)


def test_online_with_lm_equals_as_of_batch_score_and_unknown_ids_get_a_prediction(
        lm_server, lm_version, trained_home, tmp_path, capsys, monkeypatch):
    health = lm_server.client.get("/health").json()
    assert (health["status"], health["model_name"], health["training_stage"]) == ("ok", NAME, "finetune-with-lm")

    r = lm_server.client.post("/predict", json={"user_id": 9999, "item_id": 9999})  # no text at all: was a 500
    assert r.status_code == 200, r.text
    assert r.json()["unknown"] == {"user": True, "item": True} and 0 < r.json()["click_probability"] < 1

    online = lm_server.client.post("/predict/batch", json={"requests": [{"user_id": u, "item_id": i} for u, i in PAIRS]})
    assert online.status_code == 200, online.text
    online = online.json()["predictions"]
    assert [p["unknown"]["user"] for p in online] == [False, False, False, True, True, False, True]
    single = lm_server.client.post("/predict", json={"user_id": 2, "item_id": 3}).json()
    assert single["click_probability"] == pytest.approx(online[1]["click_probability"], abs=1e-6)  # batch or alone

    src, dst = tmp_path / "entities.parquet", tmp_path / "scores.parquet"
    pd.DataFrame({"user_id": [u for u, _ in PAIRS], "item_id": [i for _, i in PAIRS],
                  "event_timestamp": [AFTER_ALL_VERSIONS] * len(PAIRS)}).to_parquet(src)
    monkeypatch.setenv("CLICKPROMPT_HOME", str(trained_home.paths.home))
    code = cli.main(["score", "--input", str(src), "--output", str(dst), "--name", NAME, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["model_version"], summary["feature_service"]) == (lm_version.version, "clickprompt_v1")
    assert (summary["unknown_users"], summary["unknown_items"]) == (3, 3)
    offline = pd.read_parquet(dst)["click_probability"].to_numpy()
    np.testing.assert_allclose(offline, [p["click_probability"] for p in online], rtol=0, atol=1e-6)
    # the LM is in the loop: the same rows score otherwise under the run's CTR-only model (``ctr`` v1)
    ctr_only = score_entities(trained_home.paths, pd.read_parquet(src), load_production(trained_home.paths))
    assert (ctr_only["model_version"] == 1).all()
    assert np.abs(ctr_only["click_probability"].to_numpy() - offline).max() > 1e-3
