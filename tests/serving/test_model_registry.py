"""The model registry on a real MLflow store (SQLite): provenance, promotion rules, crash safety, immutable artifacts, CLI.

Run folders here are written by hand (the registry copies files and reads metrics; it never runs
the model), so these tests take about a second; tests/serving/ registers really trained runs.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow import MlflowClient

import cli
from core.settings import REPO_ROOT
from serving.registry import (
    ARCHIVED,
    CANDIDATE,
    PRODUCTION,
    ArtifactIntegrityError,
    Registry,
    RegistryError,
    code_version,
)

SNAPSHOT = "ab" * 32
TRAIN_START, TRAIN_END = "1997-09-20T03:05:10+00:00", "1998-03-07T02:20:47+00:00"


def write_run(folder: Path, auc: float | None, logloss: float, stage: str = "finetune-ctr-only",
              snapshot: str = SNAPSHOT, method: str = "clickprompt") -> Path:
    """A run folder as models/train writes it (only what the registry reads)."""
    (folder / stage).mkdir(parents=True)
    (folder / "training_set.json").write_text(json.dumps({  # the training set the run trained on
        "ref": {"folder": "sets/x", "manifest_hash": "cd" * 32},
        "manifest": {"dataset": "movielens-100k", "feature_service": "clickprompt_v1", "snapshot_hash": snapshot,
                     "splits": {"train": {"rows": 80, "label_rate": 0.5, "start": TRAIN_START, "end": TRAIN_END}}}}))
    (folder / "config.json").write_text(json.dumps({"method": method, "backbone": "dcnv2", "seed": 42}))
    (folder / "encoder.json").write_text(json.dumps({"spec_name": "movielens-100k", "vocabs": {}, "kinds": {}}))
    (folder / stage / "model.safetensors").write_bytes(f"weights of {folder.name}".encode() * 100)
    test = {"auc": float("nan") if auc is None else auc, "logloss": logloss, "n": 100}
    (folder / stage / "metrics.json").write_text(json.dumps(
        {"stage": stage, "method": method, "backbone": "dcnv2", "test": test, "config_hash": f"cfg-{folder.name}",
         "snapshot_hash": snapshot}))
    return folder


@pytest.fixture
def home(paths):
    """A project home; each run folder records its own training set (write_run)."""
    return paths


@pytest.fixture
def runs(home, tmp_path):
    """Three finished runs: weak (AUC 0.70), strong (0.75, lower LogLoss), mid (0.72)."""
    return {
        "weak": write_run(tmp_path / "runs" / "weak", 0.70, 0.62),
        "strong": write_run(tmp_path / "runs" / "strong", 0.75, 0.58),
        "mid": write_run(tmp_path / "runs" / "mid", 0.72, 0.57),
    }


def stages(registry: Registry, name: str = "ctr") -> dict[int, str]:
    return {v.version: v.stage for v in registry.list(name)}


def test_register_records_provenance_and_freezes_the_artifact(home, runs):
    registry = Registry(home)
    mv = registry.register(runs["weak"])
    assert (mv.name, mv.version, mv.stage) == ("ctr", 1, CANDIDATE)
    assert (mv.method, mv.backbone, mv.training_stage) == ("clickprompt", "dcnv2", "finetune-ctr-only")
    assert mv.metrics["auc"] == 0.70 and mv.metrics["logloss"] == 0.62
    assert mv.snapshot_hash == SNAPSHOT and mv.config_hash == "cfg-weak"
    assert mv.feature_service == "ctr_v1"
    assert (mv.train_start, mv.train_end) == (TRAIN_START, TRAIN_END)
    assert mv.code_version == code_version() and mv.code_version  # git HEAD short sha in a checkout
    assert mv.created_at.endswith("+00:00") and mv.source_run == str(runs["weak"])
    assert mv.path.parent == home.artifacts / "registry" / "ctr"
    # the record of MLflow's model registry: version 1 of registered model "ctr", its source the frozen folder
    mlc = MlflowClient(tracking_uri=f"sqlite:///{home.registry}")
    recorded = mlc.get_model_version("ctr", "1")
    assert recorded.source == mv.path.as_uri() and recorded.tags["clickprompt.snapshot_hash"] == SNAPSHOT
    assert json.loads(recorded.tags["clickprompt.files"]) == mv.files
    assert sorted(p.name for p in mv.path.iterdir()) == [
        "MANIFEST.json", "config.json", "encoder.json", "metrics.json", "model.safetensors"]
    assert (mv.path / "model.safetensors").read_bytes() == (runs["weak"] / "finetune-ctr-only" / "model.safetensors").read_bytes()
    for p in mv.path.iterdir():  # read-only for everyone
        assert stat.S_IMODE(p.stat().st_mode) & 0o222 == 0
    assert json.loads((mv.path / "MANIFEST.json").read_text())["files"] == mv.files
    mv.verify()
    assert registry.get(1) == mv and registry.list() == [mv]
    assert not [p for p in (home.artifacts / "registry" / "ctr").iterdir() if p.name.startswith(".tmp")]


def test_versions_count_per_name_and_the_window_is_the_runs_own(home, runs, tmp_path):
    registry = Registry(home)
    assert [registry.register(runs[r]).version for r in ("weak", "strong")] == [1, 2]
    other = registry.register(runs["mid"], name="ctr-autoint")
    assert (other.name, other.version) == ("ctr-autoint", 1)
    # the window is the one the run recorded, whatever training sets were built since
    other_snapshot = registry.register(write_run(tmp_path / "runs" / "other", 0.7, 0.6, snapshot="cd" * 32))
    assert (other_snapshot.train_start, other_snapshot.train_end) == (TRAIN_START, TRAIN_END)
    # a run that records no training set: no window is claimed
    bare = write_run(tmp_path / "runs" / "bare", 0.7, 0.6)
    (bare / "training_set.json").unlink()
    stale = registry.register(bare)
    assert stale.version == 4 and stale.train_start is None and stale.train_end is None
    assert {v.name for v in registry.list()} == {"ctr", "ctr-autoint"}
    assert [v.version for v in registry.list("ctr")] == [1, 2, 3, 4]


def test_promotion_rules_better_wins_worse_refused_force_overrides(home, runs):
    registry = Registry(home)
    weak, strong, mid = (registry.register(runs[r]).version for r in ("weak", "strong", "mid"))
    assert registry.production() is None

    first = registry.promote(weak)
    assert first.promoted and first.previous_version is None and "first production" in first.reason

    better = registry.promote(strong)
    assert better.promoted and better.previous_version == weak
    assert (better.candidate_value, better.production_value) == (0.75, 0.70)
    assert stages(registry) == {weak: ARCHIVED, strong: PRODUCTION, mid: CANDIDATE}

    worse = registry.promote(mid)  # AUC 0.72 < 0.75
    assert not worse.promoted and "does not beat production v2" in worse.reason and "--force" in worse.reason
    assert stages(registry) == {weak: ARCHIVED, strong: PRODUCTION, mid: CANDIDATE}
    before_again = len(registry.promotions())
    again = registry.promote(strong)  # already production: a no-op, not a logged refusal
    assert not again.promoted and again.already and len(registry.promotions()) == before_again

    forced = registry.promote(weak, force=True)  # a rollback to an archived version
    assert forced.promoted and forced.forced and forced.reason.startswith("forced")
    assert stages(registry) == {weak: PRODUCTION, strong: ARCHIVED, mid: CANDIDATE}
    assert registry.production().version == weak == registry.production_version()
    log = registry.promotions()
    assert [(e["version"], e["promoted"]) for e in log] == [(1, True), (2, True), (3, False), (1, True)]


def test_logloss_promotes_the_lower_value(home, runs):
    registry = Registry(home)
    strong, mid = registry.register(runs["strong"]).version, registry.register(runs["mid"]).version
    registry.promote(strong)
    assert not registry.promote(mid, metric="auc").promoted  # 0.72 < 0.75
    assert registry.promote(mid, metric="logloss").promoted  # 0.57 < 0.58
    assert registry.production().version == mid
    with pytest.raises(RegistryError, match="unknown metric"):
        registry.promote(strong, metric="accuracy")


def test_a_candidate_without_auc_is_never_promoted_unforced(home, tmp_path):
    registry = Registry(home)
    v = registry.register(write_run(tmp_path / "runs" / "one-class", None, 0.6)).version
    result = registry.promote(v)
    assert not result.promoted and "has no auc" in result.reason and registry.production() is None
    assert registry.promote(v, force=True).promoted


def test_a_first_version_worse_than_no_model_is_not_served_unforced(home, tmp_path):
    """The first version was promoted whatever it scored: AUC 0.485, LogLoss 3.46 on random labels.
    Once a version serves, a candidate need only beat it (both may be below the floor on a drifted
    window: the better one serves)."""
    registry = Registry(home)
    v = registry.register(write_run(tmp_path / "runs" / "random", 0.485, 3.46)).version
    result = registry.promote(v)
    assert not result.promoted and registry.production() is None
    assert result.reason.startswith("ctr v1 auc 0.4850 is no better than random ranking (0.5000): not served")
    by_logloss = registry.promote(v, metric="logloss")
    assert not by_logloss.promoted and "logloss 3.4600 is no better than a constant 0.5 (0.6931)" in by_logloss.reason
    assert registry.promote(v, force=True).promoted and registry.production_version() == v
    better = registry.register(write_run(tmp_path / "runs" / "better", 0.49, 1.2)).version  # still below it
    assert registry.promote(better).promoted and registry.production_version() == better
    worse = registry.register(write_run(tmp_path / "runs" / "worse", 0.48, 1.3)).version
    assert not registry.promote(worse).promoted


def test_crash_between_the_two_updates_keeps_the_previous_production(home, runs, monkeypatch):
    registry = Registry(home)
    weak, strong = registry.register(runs["weak"]).version, registry.register(runs["strong"]).version
    registry.promote(weak)

    def crash(client, name, version):
        # the decision is taken at this point, the alias not yet moved ...
        assert int(client.get_model_version_by_alias(name, "champion").version) == weak
        raise RuntimeError("power cut")

    monkeypatch.setattr(registry, "_between_updates", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        registry.promote(strong)
    # ... but nothing of it was committed: a fresh registry sees the old state, and the decision is not logged
    fresh = Registry(home)
    assert stages(fresh) == {weak: PRODUCTION, strong: CANDIDATE}
    assert [e["version"] for e in fresh.promotions()] == [weak]
    monkeypatch.undo()
    assert fresh.promote(strong).promoted  # and the registry still works


def test_process_killed_mid_promotion_keeps_the_previous_production(home, runs):
    registry = Registry(home)
    weak, strong = registry.register(runs["weak"]).version, registry.register(runs["strong"]).version
    registry.promote(weak)
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from serving.registry import Registry
        from core.settings import Paths
        registry = Registry(Paths(Path({str(home.home)!r})))
        registry._between_updates = lambda con, name, version: os._exit(17)  # the process dies mid-transaction
        registry.promote({strong})
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 17, done.stderr
    assert stages(Registry(home)) == {weak: PRODUCTION, strong: CANDIDATE}


def test_artifacts_are_immutable(home, runs):
    registry = Registry(home)
    v1 = registry.register(runs["weak"])
    weights = v1.path / "model.safetensors"
    before = weights.read_bytes()
    # retraining into the same run folder does not touch the registered copy
    (runs["weak"] / "finetune-ctr-only" / "model.safetensors").write_bytes(b"retrained")
    assert weights.read_bytes() == before
    v2 = registry.register(runs["weak"])
    assert v2.version == 2 and v2.files["model.safetensors"] != v1.files["model.safetensors"]
    assert weights.read_bytes() == before
    # a leftover folder without a version (a crash after the rename) is never reused or overwritten
    orphan = home.artifacts / "registry" / "ctr" / "left-by-a-crash"
    orphan.mkdir()
    (orphan / "note").write_text("left by a crash")
    v3 = registry.register(runs["strong"])
    assert v3.version == 3 and v3.path != orphan and (orphan / "note").read_text() == "left by a crash"
    # files cannot be written in place; a changed artifact is caught before it is served
    assert stat.S_IMODE(weights.stat().st_mode) & 0o222 == 0
    if os.geteuid() != 0:  # root ignores permission bits; the hash check below holds for everyone
        with pytest.raises(PermissionError):
            weights.open("ab")
    os.chmod(weights, 0o644)
    weights.write_bytes(before + b"tampered")
    with pytest.raises(ArtifactIntegrityError, match="changed since registration"):
        registry.get(1).verify()


def test_incomplete_runs_are_rejected_and_leave_nothing(home, runs, tmp_path):
    registry = Registry(home)
    with pytest.raises(RegistryError, match="missing"):
        registry.register(runs["weak"], stage="baseline")
    pretrain = tmp_path / "runs" / "pretrain-only"
    write_run(pretrain, 0.7, 0.6, stage="pretrain")
    with pytest.raises(RegistryError, match="cannot be served"):
        registry.register(pretrain, stage="pretrain")
    joint = write_run(tmp_path / "runs" / "alt-joint", 0.7, 0.6, stage="finetune-with-lm", method="alt")
    with pytest.raises(RegistryError, match="stage 'finetune-with-lm' of method 'alt'.*CTR-only stage"):
        registry.register(joint, stage="finetune-with-lm")  # the server could not rebuild it: refused now
    no_test = write_run(tmp_path / "runs" / "no-test", 0.7, 0.6)
    metrics = json.loads((no_test / "finetune-ctr-only" / "metrics.json").read_text())
    del metrics["test"]
    (no_test / "finetune-ctr-only" / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RegistryError, match="no test metrics"):
        registry.register(no_test)
    with pytest.raises(RegistryError, match="model name"):
        registry.register(runs["weak"], name="../escape")
    assert registry.list() == []
    root = home.artifacts / "registry"
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_register_takes_a_run_path_relative_to_the_project_home(home, tmp_path, monkeypatch, capsys):
    """`registry register --run artifacts/runs/<id>` as the README writes it, from any directory."""
    write_run(home.home / "artifacts" / "runs" / "r1", 0.74, 0.59)
    elsewhere = tmp_path / "elsewhere"  # the home is tmp_path itself
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run_cli(capsys, "registry", "register", "--run", "artifacts/runs/r1", "--json")
    assert code == 0, err
    assert json.loads(out)["source_run"] == str(home.home / "artifacts" / "runs" / "r1")


def test_registering_the_same_run_again_adds_no_version(home, runs, capsys):
    """A retrain with no new data lands in the same run folder with the same weights: registering it
    again returns its version (v5/v6 used to duplicate v3/v4); retrained weights make a new version."""
    registry = Registry(home)
    first = registry.register(runs["strong"])
    assert registry.register(runs["strong"]).version == first.version == 1
    code, out, _ = run_cli(capsys, "registry", "register", "--run", str(runs["strong"]))
    assert code == 0 and out.startswith("already registered as ctr v1 (candidate): ")
    (runs["strong"] / "finetune-ctr-only" / "model.safetensors").write_bytes(b"retrained weights")
    assert registry.register(runs["strong"]).version == 2 and len(registry.list()) == 2


def test_cli_register_list_show_promote(home, runs, capsys):
    code, out, _ = run_cli(capsys, "registry", "register", "--run", str(runs["strong"]), "--json")
    assert code == 0 and json.loads(out)["version"] == 1
    run_cli(capsys, "registry", "register", "--run", str(runs["weak"]))

    code, out, _ = run_cli(capsys, "registry", "list", "--json")
    listed = json.loads(out)
    assert code == 0 and [(v["version"], v["stage"]) for v in listed] == [(1, CANDIDATE), (2, CANDIDATE)]
    code, out, _ = run_cli(capsys, "registry", "show", "2", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["metrics"]["auc"] == 0.70 and shown["train_end"] == TRAIN_END
    assert shown["version"] == 2 and Path(shown["artifact_dir"]).parent.name == "ctr"

    code, out, _ = run_cli(capsys, "registry", "promote", "1", "--json")
    assert code == 0 and json.loads(out)["promoted"] is True
    code, out, err = run_cli(capsys, "registry", "promote", "2")  # AUC 0.70 < 0.75: refused, exit 1, says why
    assert code == 1 and "promotion refused" in err and "does not beat production v1" in err
    code, out, err = run_cli(capsys, "registry", "promote", "2", "--metric", "logloss", "--json")
    assert code == 1 and json.loads(out)["promoted"] is False  # 0.62 > 0.58
    code, out, _ = run_cli(capsys, "registry", "promote", "2", "--force")
    assert code == 0 and out.startswith("promoted: forced")
    decisions = len(Registry(home).promotions())
    code, out, err = run_cli(capsys, "registry", "promote", "2")  # again: a no-op, not a refusal
    assert (code, out, err) == (0, "ctr v2 is already production; nothing to do\n", "")
    assert len(Registry(home).promotions()) == decisions  # and no decision logged

    code, out, _ = run_cli(capsys, "registry", "list")
    lines = out.splitlines()
    assert code == 0 and "archived" in lines[0] and "production" in lines[1]
    code, _, err = run_cli(capsys, "registry", "show", "9")
    assert code == 2 and "no version 9" in err
    code, _, err = run_cli(capsys, "registry", "register", "--run", str(home.home / "nowhere"))
    assert code == 2 and f"{home.home / 'nowhere'}: no such run folder" in err

    # the promotion log: every decision above, refusals too, oldest first
    code, out, _ = run_cli(capsys, "registry", "promotions", "--json")
    decisions = json.loads(out)
    assert code == 0 and [(d["version"], d["metric"], d["promoted"], d["forced"]) for d in decisions] == [
        (1, "auc", True, False), (2, "auc", False, False), (2, "logloss", False, False), (2, "auc", True, True)]
    assert decisions[1]["candidate_value"] == 0.70 and decisions[1]["production_value"] == 0.75
    code, out, _ = run_cli(capsys, "registry", "promotions")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4 and " v2 refused: auc 0.7000 vs production v1 0.7500 " in lines[1]
    assert " v2 promoted (forced): " in lines[3]
    assert " v1 promoted: auc 0.7500 vs no production version [each version's own test split; margin 0.0] - " \
           "ctr v1 is the first production version" in lines[0]
    assert all(line.count("each version's own test split") == 1 for line in lines)  # the basis said once


def test_serve_warns_of_a_model_name_the_registry_does_not_hold(home, runs, monkeypatch, capsys):
    """`serve --name nope` (a typo) serves 503 until a version of it is promoted: said at start."""
    import serving.server

    started = []
    monkeypatch.setattr(serving.server, "serve", lambda paths, **kw: started.append(kw["name"]))
    Registry(home).register(runs["weak"])
    code, _, err = run_cli(capsys, "serve", "--name", "nope")
    assert code == 0 and started == ["nope"]
    assert err == ("warning: no model named 'nope' in the registry yet (registered: ctr); the server answers 503 "
                   "until a version of it is promoted\n")
    code, _, err = run_cli(capsys, "serve")
    assert code == 0 and started == ["nope", "ctr"] and "warning" not in err

    def unreadable(self, name=None):
        raise OSError("database is locked")

    monkeypatch.setattr(Registry, "list", unreadable)  # a store that fails now: the server starts and says it
    code, _, err = run_cli(capsys, "serve", "--name", "nope")
    assert code == 0 and started == ["nope", "ctr", "nope"] and err == ""


def test_a_copied_home_serves_its_own_copy_of_the_registered_files(home, runs, tmp_path):
    """MLflow records a version's source as an absolute path: a home copied elsewhere serves from its own
    artifacts/registry (the original there or gone), and the hash check still guards every file."""
    import shutil

    from core.settings import Paths

    v1 = Registry(home).register(runs["weak"])
    moved = Paths(tmp_path.parent / f"{tmp_path.name}-moved")  # beside the home (the fixture's home is tmp_path)
    shutil.copytree(home.home, moved.home, symlinks=True)
    assert Registry(moved).get(1).path == moved.artifacts / "registry" / "ctr" / v1.path.name  # the original still there
    assert Registry(home).get(1).path == v1.path  # ... and it keeps its own
    original = home.artifacts / "registry"
    original.rename(tmp_path / "original-registry-gone")
    copy = Registry(moved).get(1)
    assert copy.path == moved.artifacts / "registry" / "ctr" / v1.path.name and copy.files == v1.files
    copy.verify()
    assert Registry(moved).list()[0].path == copy.path
    weights = copy.path / "model.safetensors"
    os.chmod(weights, 0o644)
    weights.write_bytes(b"tampered")
    with pytest.raises(ArtifactIntegrityError, match="changed since registration"):
        Registry(moved).get(1).verify()
