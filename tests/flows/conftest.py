"""Real flow runs against one temporary Prefect server per session, on the small fixture data."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Paths

DATASET = "movielens-100k"
TINY_PLM = "tiny-bert"
# The smoke profile with a tiny random BERT (saved under data/plms/) instead of the fetched one.
SMOKE_OVERRIDES = {"plm": TINY_PLM, "max_len": 48}


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """A temporary Prefect server (SQLite) for the whole session; Prefect's own files in a temp dir."""
    from prefect.settings import (
        PREFECT_HOME,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect_home")
    updates = {PREFECT_HOME: str(home), PREFECT_LOCAL_STORAGE_PATH: str(home / "storage"),
               PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}  # tasks run alone in unit tests
    with temporary_settings(updates=updates):
        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture
def flow_home(paths: Paths, prefect_harness) -> Paths:
    """A fresh project home (CLICKPROMPT_HOME) with a tiny language model in data/plms/."""
    from tests.tiny_plm import tiny_bert

    model, tokenizer = tiny_bert()
    model.save_pretrained(paths.plms / TINY_PLM)
    tokenizer.save_pretrained(paths.plms / TINY_PLM)
    return paths


@pytest.fixture
def small_pipeline(small_raw: Path) -> dict:
    """train_pipeline parameters for the small data set and the smoke profile."""
    return {"dataset": DATASET, "profile": "smoke", "source": str(small_raw), "overrides": SMOKE_OVERRIDES}
