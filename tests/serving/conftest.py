"""One trained model for every serving and scoring test, and a real uvicorn server on loopback.

The data set is small but learnable (40 users x 24 items, 560 ratings in GroupLens's ML-100K
layout): it goes through the real path - ingest, Feast apply, point-in-time training sets, the
SQLite online store - and the smoke profile trains baseline, PA-MLM (the offline 2-layer BERT),
the with-LM and the CTR-only finetunings once per session, in well under a minute on 2 cores. User 2's
profile gets a second version (occupation changes on 1998-01-15), so online and as-of scoring
have a feature version to disagree about. User 41 and item 25 have profiles but no ratings
(in the store, unknown to the model); user 9999 and item 9999 exist nowhere.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from core.settings import Paths
from serving.registry import Registry
from tests.conftest import DAY0, GENRES, item_line
from validation import gate

OCCUPATIONS = ["administrator", "artist", "doctor", "educator", "engineer", "other", "programmer", "student",
               "technician", "writer"]
N_USERS, N_ITEMS, PER_USER = 40, 24, 14
PROFILE_CHANGE = datetime(1998, 1, 15, tzinfo=timezone.utc)  # user 2: other -> writer
SMOKE_OVERRIDES = {  # the smoke profile, sized to 450 training rows
    "baseline.batch_size": 64,
    "finetune_ctr.batch_size": 64,
    "pretrain.batch_size": 32,
    "pretrain.epochs": 1,
    "pretrain.max_train_samples": 192,
    "pretrain.max_eval_samples": 64,
    "baseline.lr_ctr": 1e-2,
    "finetune_ctr.lr_ctr": 1e-2,
}


def write_synthetic_raw(folder: Path) -> Path:
    """Users with a taste for some genres, items with genres, ratings that follow the taste (+ noise)."""
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    users = []
    for u in range(1, N_USERS + 2):  # user 41: a profile, no ratings
        occupation = "other" if u == 2 else rng.choice(OCCUPATIONS)
        users.append(f"{u}|{rng.randint(18, 65)}|{rng.choice('MF')}|{occupation}|{10000 + u}")
    genres = GENRES[1:]
    items = [(str(i), f"Movie {i} ({1980 + i % 17})", f"01-Jan-{1980 + i % 17}", rng.sample(genres, rng.randint(1, 3)))
             for i in range(1, N_ITEMS + 2)]  # item 25: a profile, no ratings
    taste = {u: set(rng.sample(genres, 5)) for u in range(1, N_USERS + 1)}
    events = []
    for u in range(1, N_USERS + 1):
        for i in rng.sample(range(1, N_ITEMS + 1), PER_USER):
            liked = len(taste[u] & set(items[i - 1][3]))
            score = 1.8 + 1.5 * liked + (i % 4) * 0.6 + rng.gauss(0, 0.6)
            events.append((u, i, min(5, max(1, round(score)))))
    rng.shuffle(events)  # users interleaved in time, so the time split keeps them in train too
    ratings = [f"{u}\t{i}\t{r}\t{DAY0 + t * 9 * 3600}" for t, (u, i, r) in enumerate(events)]  # 1997-10 .. 1998-04
    (folder / "u.data").write_text("\n".join(ratings) + "\n", encoding="utf-8")
    (folder / "u.user").write_text("\n".join(users) + "\n", encoding="utf-8")
    (folder / "u.item").write_bytes(("\n".join(item_line(*it) for it in items) + "\n").encode("latin-1"))
    return folder


def add_profile_version(paths: Paths, spec, user_id: int, occupation: str, valid_from: datetime) -> None:
    """A later version of one user's profile, as a changed upstream profile would arrive."""
    from ingestion.text_sql import text_sql
    from ingestion.warehouse import connect, export_snapshots

    with connect(paths.warehouse) as con:
        con.execute("INSERT INTO users SELECT user_id, gender, age, ?, zip_code, ? FROM users WHERE user_id = ?",
                    [occupation, valid_from, user_id])
        con.execute(f"CREATE OR REPLACE TABLE user_text AS {text_sql(spec, 'user')}")
        export_snapshots(con, spec, paths.snapshots)


@dataclass(frozen=True)
class TrainedHome:
    paths: Paths
    run_dir: Path
    summary: dict  # run_training's {stage: metrics}

    @property
    def registry(self) -> Registry:
        return Registry(self.paths)


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory) -> TrainedHome:
    """Data -> Feast (offline + online) -> smoke training; the registry holds ctr v1 (the CTR-only
    model, production) and v2 (the baseline, candidate). The run's with-LM model is left unregistered
    (tests/serving/test_with_lm_serving.py registers it under a name of its own)."""
    from core.spec import load_spec
    from core.training_data import load_training_data
    from feature_repo.online import materialize
    from feature_repo.store import apply
    from feature_repo.training_sets import build_training_sets
    from ingestion.fetch import fetch_plm
    from ingestion.warehouse import ingest
    from models.train.config import load_config
    from models.train.run import run_training

    root = tmp_path_factory.mktemp("serving")
    paths = Paths(root / "home")
    spec = load_spec("movielens-100k")
    ingest(spec, write_synthetic_raw(root / "raw"), paths.warehouse, paths.snapshots, gate)
    add_profile_version(paths, spec, 2, "writer", PROFILE_CHANGE)
    apply(spec, paths)
    ref = build_training_sets(spec, paths)
    materialize(spec, paths)
    fetch_plm("bert-2l-128", paths)
    run_dir = paths.runs / "smoke"
    cfg = load_config("smoke", SMOKE_OVERRIDES)
    stages = ["baseline", "pretrain", "finetune-with-lm", "finetune-ctr-only"]
    summary = run_training(cfg, load_training_data(ref), stages, run_dir, paths.plm_source(cfg.plm))
    registry = Registry(paths)
    registry.register(run_dir, stage="finetune-ctr-only")
    registry.register(run_dir, stage="baseline")
    assert registry.promote(1).promoted
    return TrainedHome(paths, run_dir, summary["stages"])


@dataclass
class RunningServer:
    base_url: str
    client: httpx.Client
    app: object


@contextmanager
def running(app):
    """``app`` under a real uvicorn server on 127.0.0.1 (a free port) while in the block."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port; uvicorn serves on this very socket
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    base_url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield RunningServer(base_url, client, app)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def server(trained_home: TrainedHome):
    """The serving app of the trained home under uvicorn on loopback, for the whole session.

    ``poll_seconds`` is long on purpose: a promotion must be seen through the registry's change
    marker, on the next request, not by waiting for a poll.
    """
    from serving.server import create_app

    with running(create_app(trained_home.paths, poll_seconds=300)) as srv:
        yield srv


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)
