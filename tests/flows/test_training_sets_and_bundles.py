"""Training owns its inputs: a retrain and a pipeline on one snapshot each train on their own
training set (and say so in their run folders and the registry), and a training bundle trains
with torch alone to the pipeline's figures."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from cli import main as cli_main
from cli import one_line_errors_on_the_terminal
from core.spec import load_spec
from core.training_data import TrainingSetRef
from feature_repo.store import apply
from flows.ingest_data import ingest_data
from flows.retrain_model import retrain_model
from flows.train_pipeline import train_pipeline
from serving.registry import Registry
from tests.flows.conftest import DATASET, SMOKE_OVERRIDES

REPO_ROOT = Path(__file__).resolve().parents[2]
BANNED = ("feast", "duckdb", "prefect", "great_expectations")


def _run_set(run_dir: Path) -> dict:
    return json.loads((run_dir / "training_set.json").read_text(encoding="utf-8"))


def test_a_retrain_then_a_pipeline_each_train_on_their_own_sets(flow_home, small_pipeline):
    ingest_data(DATASET, source=small_pipeline["source"])  # one snapshot for both
    apply(load_spec(DATASET), flow_home)
    retrain = retrain_model(dataset=DATASET, profile="smoke", stages=["baseline"], holdout_days=5,
                            overrides={**SMOKE_OVERRIDES, "baseline.epochs": 1})
    snapshot = (flow_home.snapshots / "manifest.json").read_bytes()
    pipeline = train_pipeline(**small_pipeline, stages=["baseline"], to_registry=False)
    assert (flow_home.snapshots / "manifest.json").read_bytes() == snapshot  # the same snapshot
    r_dir, p_dir = flow_home.runs / retrain["run_id"], flow_home.runs / pipeline["run_id"]
    assert r_dir != p_dir
    r_set, p_set = _run_set(r_dir), _run_set(p_dir)
    assert r_set["ref"] == retrain["window"]["ref"] and p_set["ref"] == pipeline["training_set_ref"]
    assert r_set["ref"]["folder"] != p_set["ref"]["folder"]  # two builds, both still there
    holdout = pd.Timestamp(retrain["window"]["holdout_start"])
    assert r_set["manifest"]["window"] == [None, holdout.isoformat()] and p_set["manifest"]["window"] == [None, None]
    # the retrain's rows all precede its holdout; the pipeline trained on every event (20)
    r_frames = [pd.read_parquet(Path(r_set["ref"]["folder"]) / f"{s}.parquet") for s in ("train", "valid", "test")]
    assert max(f.event_timestamp.max() for f in r_frames) < holdout
    assert sum(pipeline["training_set"].values()) == 20 > sum(len(f) for f in r_frames)
    # each stage's metrics name the build it trained on
    r_metrics = json.loads((r_dir / "baseline" / "metrics.json").read_text())
    p_metrics = json.loads((p_dir / "baseline" / "metrics.json").read_text())
    assert r_metrics["training_set_hash"] == r_set["ref"]["manifest_hash"]
    assert p_metrics["training_set_hash"] == p_set["ref"]["manifest_hash"] != r_metrics["training_set_hash"]
    # the registry reads the training window from the run, not from whatever was built last
    version = Registry(flow_home).get(retrain["challengers"][0])
    assert version.train_end == r_set["manifest"]["splits"]["train"]["end"]
    assert pd.Timestamp(version.train_end) < holdout


def test_a_bundle_trains_with_torch_alone_to_the_pipelines_metrics(flow_home, small_pipeline, tmp_path, capsys,
                                                                    monkeypatch):
    stages = ["baseline", "pretrain", "finetune-ctr-only"]
    summary = train_pipeline(**small_pipeline, stages=stages, to_registry=False)
    ref = TrainingSetRef.from_dict(summary["training_set_ref"])
    bundle = tmp_path / "bundle"
    args = ["features", "export-bundle", str(bundle), "--training-set", str(ref.folder), "--profile", "smoke",
            "--with-plm"] + [f"--set={k}={v}" for k, v in SMOKE_OVERRIDES.items()]
    assert cli_main(args) == 0
    assert "python -m models.train --bundle" in capsys.readouterr().out
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["training_set"]["manifest_hash"] == ref.manifest_hash and (bundle / "plm" / "config.json").is_file()
    # a bundle replaces its folder whole: an earlier bundle, an empty folder ("." too), never other files
    assert cli_main(args) == 0 and (bundle / "bundle.json").is_file()
    capsys.readouterr()
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    assert cli_main(["features", "export-bundle", str(mine), "--training-set", str(ref.folder)]) == 2
    assert capsys.readouterr().err == (f"error: {mine} exists and is not a training bundle (no bundle.json): a bundle "
                                       "replaces its folder whole, so give a new or empty folder\n")
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert cli_main(["features", "export-bundle", str(tmp_path / "empty"), "--training-set", str(ref.folder)]) == 0
    assert (tmp_path / "empty" / "bundle.json").is_file()
    monkeypatch.chdir(tmp_path / "empty")
    capsys.readouterr()
    assert cli_main(["features", "export-bundle", ".", "--training-set", str(ref.folder)]) == 2
    assert "is the working directory or holds it: a bundle replaces its folder whole" in capsys.readouterr().err

    out = tmp_path / "run"
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["python -m models.train", "--bundle", {str(bundle)!r}, "--out", {str(out)!r},
                    "--stages", *{stages!r}]
        try:
            runpy.run_module("models.train", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        print("IMPORTED", sorted({{m.split(".")[0] for m in sys.modules}} & set({BANNED!r})))
    """)
    env = {k: v for k, v in os.environ.items() if k != "CLICKPROMPT_HOME"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO_ROOT),
                          "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IMPORTED []" in proc.stdout  # no Feast, DuckDB, Prefect or GX on the way
    run = json.loads((out / "metrics.json").read_text())
    assert list(run["stages"]) == stages and run["training_set_hash"] == ref.manifest_hash
    pipeline_run = json.loads((flow_home.runs / summary["run_id"] / "metrics.json").read_text())
    for stage in ("baseline", "finetune-ctr-only"):  # the same figures from the same config, seed and set
        got, want = run["stages"][stage], pipeline_run["stages"][stage]
        assert got["test"]["logloss"] == pytest.approx(want["test"]["logloss"], abs=1e-6), stage
        assert got["test"]["auc"] == pytest.approx(want["test"]["auc"], abs=1e-6, nan_ok=True), stage
        assert got["fit"]["loss_last"] == pytest.approx(want["fit"]["loss_last"], abs=1e-6), stage
    got, want = run["stages"]["pretrain"]["valid"], pipeline_run["stages"]["pretrain"]["valid"]
    assert got["mlm_loss"] == pytest.approx(want["mlm_loss"], abs=1e-5) and got["masked_tokens"] > 0


def test_a_bundle_names_what_is_wrong(tmp_path, capsys):
    from models.train.__main__ import main

    assert main(["--bundle", str(tmp_path / "nothing")]) == 2
    assert "is not a training bundle (no bundle.json)" in capsys.readouterr().err


class _Records(logging.Handler):
    """Each record as formatted when it was handled (a traceback included), as Prefect's API handler does."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(self.format(record))


def test_two_pipelines_never_train_one_run_id_at_once(flow_home, small_pipeline, monkeypatch):
    """A real second process holds the run's lock: the pipeline on that run id fails with one line
    naming the holder, before training anything, and trains once the holder is gone."""
    from core.locks import Busy, holder
    from models.train.run import RUN_LOCK
    from tests.test_locks import hold

    monkeypatch.setenv("CLICKPROMPT_LOCK_WAIT", "0.5")
    run_id = "smoke-locked"
    lock = flow_home.runs / run_id / RUN_LOCK
    proc = hold(lock, f"run {run_id}", 120)
    run_log, terminal = _Records(), io.StringIO()  # where Prefect's API handler is / where its console is
    logging.getLogger("prefect.flow_runs").addHandler(run_log)
    logging.getLogger().addHandler(console := logging.StreamHandler(terminal))
    try:
        with pytest.raises(Busy) as caught, one_line_errors_on_the_terminal():  # as the CLI runs a command
            train_pipeline(**small_pipeline, stages=["baseline"], run_id=run_id, to_registry=False)
        assert str(caught.value) == f"run {run_id} is busy (pid {proc.pid} since {holder(lock)['since']})"
        # the terminal: Prefect's line naming the error, no traceback (the command prints the one line);
        # Prefect's run log keeps the traceback
        assert "is busy" in terminal.getvalue() and "Traceback" not in terminal.getvalue()
        assert any("is busy" in text and "Traceback" in text for text in run_log.seen)
        assert not (flow_home.runs / run_id / "baseline").exists()  # nothing trained under the other's lock
        assert [p.name for p in flow_home.runs.iterdir()] == [run_id]
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(run_log)
        logging.getLogger().removeHandler(console)
        proc.kill()
        proc.wait()
    summary = train_pipeline(**small_pipeline, stages=["baseline"], run_id=run_id, to_registry=False)
    assert summary["run_id"] == run_id and (flow_home.runs / run_id / "baseline" / "metrics.json").is_file()


def test_train_bundle_takes_the_bundles_config_unless_a_profile_is_asked_for(tmp_path, monkeypatch, capsys):
    """`--profile demo` with --bundle trained the bundle's config: demo was the flag's default, so it
    could not be told from no flag at all."""
    import models.train.__main__ as entry

    asked = []
    monkeypatch.setattr(entry, "train_bundle", lambda bundle, out, profile, stages, overrides:
                        asked.append(profile) or (tmp_path / "run", {"stages": {}}))
    for extra in ([], ["--profile", "demo"], ["--profile", "smoke"]):
        assert cli_main(["train", "--bundle", str(tmp_path), "--json", *extra]) == 0
    assert asked == [None, "demo", "smoke"]
