"""The benchmark flow (flows/run_benchmark.py): real Prefect runs of the suite.

The small-data test checks the wiring in well under a minute (part of ``make test``); the smoke-profile run on
real MovieLens-100K with every model and 3 seeds takes minutes and is marked ``benchmark``:
CI runs it as its own step (``make test-bench``) to keep the suite working end to end.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from benchmarks.suite import CHOICE_RUNS, suite
from core.settings import Paths
from core.spec import load_spec
from flows.run_benchmark import BENCH_EXPERIMENT, run_benchmark
from serving.tracking import tracking_uri
from tests.conftest import DAY, DAY0, write_small_raw
from tests.flows.conftest import DATASET, SMOKE_OVERRIDES
from validation import gate

PNG = b"\x89PNG\r\n\x1a\n"


def _ratings_both_labels_in_test() -> list[str]:
    """100 ratings over 25 days (4 users x 4 items); the last days' ratings are liked and disliked."""
    return [f"{u}\t{k % 4 + 1}\t{(u + k) % 5 + 1}\t{DAY0 + k * DAY + u * 60}" for u in range(1, 5) for k in range(25)]


def _home_with_training_sets(paths: Paths, raw: Path) -> Paths:
    """``paths`` holding ``raw`` as its raw files, ingested, applied, with training sets built."""
    from feature_repo.store import apply
    from feature_repo.training_sets import build_training_sets
    from ingestion.warehouse import ingest

    spec = load_spec(DATASET)
    shutil.copytree(raw, paths.raw(DATASET))
    ingest(spec, paths.raw(DATASET), paths.warehouse, paths.snapshots, gate)
    apply(spec, paths)
    build_training_sets(spec, paths)
    return paths


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_benchmark_flow_compares_clickprompt_with_its_backbone_per_seed_and_resumes(flow_home, tmp_path):
    _home_with_training_sets(flow_home, write_small_raw(tmp_path / "raw", _ratings_both_labels_in_test()))
    out = tmp_path / "bench"
    params = dict(profile="smoke", seeds=[1, 2], only=["base-dcnv2", "cp-dcnv2"], overrides=SMOKE_OVERRIDES,
                  out=str(out))
    results = json.loads(Path(run_benchmark(**params)).read_text())

    models = results["models"]
    assert list(models) == ["DCNv2", "ClickPrompt CTR-only (DCNv2)", "ClickPrompt with LM"]
    base, cp = models["DCNv2"], models["ClickPrompt CTR-only (DCNv2)"]
    assert set(base["per_seed"]) == {"1", "2"} and base["reference"] is None
    assert cp["reference"] == "DCNv2"
    for i, seed in enumerate(("1", "2")):  # paired: the same seed's backbone, not the mean
        for label in ("ClickPrompt CTR-only (DCNv2)", "ClickPrompt with LM"):
            m = models[label]
            assert m["paired_auc_diff"][i] == pytest.approx(m["per_seed"][seed]["auc"] - base["per_seed"][seed]["auc"])
    for run_dir in ("base-dcnv2-seed1", "cp-dcnv2-seed2"):  # what the figures were computed from
        assert (out / "runs" / run_dir / "metrics.json").exists()

    assert set(results["alignment"]) == {"cp-dcnv2"}  # the only run with PA-MLM pretraining
    assert 0 <= results["alignment"]["cp-dcnv2"]["mlm_acc_values_zero_prompts"] <= 1

    tail = results["long_tail"]
    assert set(tail) == {"DCNv2", "ClickPrompt CTR-only (DCNv2)"}  # the backbone and its CTR-only model
    for label, t in tail.items():  # from the saved test predictions: the same AUC the test metrics report
        assert t["all"] == pytest.approx(models[label]["auc_mean"]), label
        assert t["n_tail_users"] >= t["n_tail_both"] and t["n_tail_items"] >= t["n_tail_both"], label
    for entity in ("users", "items"):
        d = results["long_tail_definition"][entity]
        assert 1 <= d["tail_ids"] <= d["train_ids"] == 4 and d["threshold"] >= 1, entity  # 4 users, 4 items

    eff = results["efficiency"]
    # scoring times are measured, not asserted (a handful of test rows on a busy machine can time
    # either way); the figures must be there and be real numbers
    for key in ("ctr_only_ms_per_1000", "with_lm_ms_per_1000", "with_lm_over_ctr_only"):
        assert _finite(eff[key]) and eff[key] > 0, key
    for key in ("pamlm_prompted_samples_per_s", "pamlm_plain_samples_per_s", "pamlm_prompted_over_plain"):
        assert _finite(eff[key]) and eff[key] > 0, key
    assert 1 <= eff["pamlm_batch_size"] <= 64
    assert set(eff["stage_seconds"]) == {"base-dcnv2", "cp-dcnv2"}
    assert set(eff["stage_seconds"]["cp-dcnv2"]) == {"pretrain", "finetune-with-lm", "finetune-ctr-only"}
    assert list(eff["data_path_seconds"])[:2] == ["ingest", "validate"] and eff["data_path_seconds"]["total"] > 0
    assert eff["peak_rss_mb"] > 100 and eff["reused_runs"] == []
    report = (out / "report.md").read_text()
    assert "| ClickPrompt CTR-only (DCNv2) | dcnv2 |" in report and "| cp-dcnv2 | pretrain |" in report
    assert (out / "latency.png").read_bytes()[:8] == PNG
    # MLflow: one run per (run, seed) with its tags, one run holding the report and its plots
    mlc = MlflowClient(tracking_uri=tracking_uri(flow_home))
    logged = mlc.search_runs([mlc.get_experiment_by_name(BENCH_EXPERIMENT).experiment_id])
    assert sorted((r.data.tags["benchmark_run"], r.data.tags["seed"]) for r in logged if "seed" in r.data.tags) == [
        ("base-dcnv2", "1"), ("base-dcnv2", "2"), ("cp-dcnv2", "1"), ("cp-dcnv2", "2")]
    reports = [r for r in logged if "clickprompt.report_dir" in r.data.tags]
    assert len(reports) == 1 and reports[0].data.tags["benchmark"] == out.name
    assert {"report.md", "results.json", "latency.png"} <= {a.path for a in mlc.list_artifacts(reports[0].info.run_id)}

    # the same folder again: every finished run is taken from its folder, the figures are the same
    # (the data path, timed above, is not timed again: time_data=False leaves its figures out)
    called = time.perf_counter()
    again = json.loads(Path(run_benchmark(**params, time_data=False)).read_text())
    wall = time.perf_counter() - called
    assert "data_path_seconds" not in again["efficiency"]
    # its wall time counts the efficiency measurements, most of a benchmark that trains nothing
    assert 0.1 * wall < again["efficiency"]["total_seconds"] <= wall  # 0.59 x here; 0.02 x before it counted them
    assert again["efficiency"]["reused_runs"] == ["base-dcnv2-seed1", "base-dcnv2-seed2", "cp-dcnv2-seed1",
                                                  "cp-dcnv2-seed2"]
    assert again["models"]["ClickPrompt with LM"]["per_seed"] == models["ClickPrompt with LM"]["per_seed"]
    kept = json.loads((out / "runs" / "cp-dcnv2-seed1" / "bench_memory.json").read_text())  # training peak, kept
    assert kept["peak_rss_mb_after"] > 100

    # ClickPrompt alone (reused): its rows stay, without a backbone to pair with
    alone = json.loads(Path(run_benchmark(**{**params, "only": ["cp-dcnv2"]}, time_data=False)).read_text())
    assert list(alone["models"]) == ["ClickPrompt CTR-only (DCNv2)", "ClickPrompt with LM"]
    assert alone["models"]["ClickPrompt with LM"]["paired_auc_diff"] is None
    assert alone["efficiency"]["reused_runs"] == ["cp-dcnv2-seed1", "cp-dcnv2-seed2"]
    # another config in the same folder is trained again, not taken from the old run
    changed = json.loads(Path(run_benchmark(**{**params, "only": ["base-dcnv2"],
                                                "overrides": {**SMOKE_OVERRIDES, "baseline.epochs": 1}})).read_text())
    assert changed["efficiency"]["reused_runs"] == []
    assert json.loads((out / "runs" / "base-dcnv2-seed1" / "metrics.json").read_text())["stages"]["baseline"][
        "fit"]["epochs_run"] == 1


def test_an_authors_choice_is_compared_with_clickprompt_as_configured_seed_by_seed(flow_home, tmp_path):
    _home_with_training_sets(flow_home, write_small_raw(tmp_path / "raw", _ratings_both_labels_in_test()))
    out = tmp_path / "bench"
    results = json.loads(Path(run_benchmark(profile="smoke", seeds=[1, 2], only=["cp-dcnv2", "cp-mlp-head"],
                                            overrides=SMOKE_OVERRIDES, out=str(out), time_data=False)).read_text())
    models = results["models"]
    assert list(models) == ["ClickPrompt CTR-only (DCNv2)", "ClickPrompt with LM", "choice: MLP click head, with LM"]
    assert models["ClickPrompt with LM"]["reference"] is None  # DCNv2 left out: no paired figure against it
    choice, ref = models["choice: MLP click head, with LM"], models["ClickPrompt with LM"]
    assert choice["reference"] == "ClickPrompt with LM"
    for i, seed in enumerate(("1", "2")):
        assert choice["paired_auc_diff"][i] == pytest.approx(choice["per_seed"][seed]["auc"] - ref["per_seed"][seed]["auc"])
    assert json.loads((out / "runs" / "cp-mlp-head-seed1" / "config.json").read_text())["head"] == "mlp"
    assert json.loads((out / "runs" / "cp-dcnv2-seed1" / "config.json").read_text())["head"] == "linear"
    assert "| choice: MLP click head, with LM | dcnv2 |" in (out / "report.md").read_text()
    assert " vs ClickPrompt with LM |" in (out / "report.md").read_text()


def test_benchmark_flow_rejects_bad_names_before_training(flow_home, tmp_path):
    with pytest.raises(ValueError, match=r"unknown run\(s\) \['cp-bert'\]"):
        run_benchmark.fn(profile="smoke", only=["cp-bert"], out=str(tmp_path / "b"))
    with pytest.raises(Exception, match="unknown run 'cp-bert'"):  # a deployment's parameters, checked by Prefect
        run_benchmark.validate_parameters({"profile": "smoke", "only": ["cp-bert"]})
    with pytest.raises(Exception, match="unknown benchmark profile 'fast'"):
        run_benchmark.validate_parameters({"profile": "fast"})
    with pytest.raises(ValueError, match="seeds must be distinct"):
        run_benchmark.fn(profile="smoke", seeds=[1, 1], out=str(tmp_path / "b"))
    with pytest.raises(ValueError, match="pretrain.epoch"):  # a typo in an override, not hours later
        run_benchmark.fn(profile="smoke", overrides={"pretrain.epoch": 1}, out=str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()


@pytest.mark.benchmark
def test_smoke_benchmark_runs_every_model_on_real_movielens(real_ml100k_raw, paths, prefect_harness, tmp_path):
    """The whole suite, smoke profile, 3 seeds: every model has finite metrics; the report and plots exist."""
    from ingestion.fetch import fetch_plm

    _home_with_training_sets(paths, real_ml100k_raw)
    fetch_plm("bert-2l-128", paths)
    out = tmp_path / "bench"
    results = json.loads(Path(run_benchmark(profile="smoke", seeds=[1, 2, 3], out=str(out))).read_text())

    runs, variants = suite()
    runs = [r for r in runs if r.name not in CHOICE_RUNS]  # the authors' choices train only where named
    assert list(results["models"]) == [v.label for v in variants if v.run not in CHOICE_RUNS]
    for label, m in results["models"].items():
        assert set(m["per_seed"]) == {"1", "2", "3"}, label
        for s in m["per_seed"].values():
            assert 0.3 < s["auc"] < 0.9 and 0 < s["logloss"] < 2, (label, s)
        assert _finite(m["auc_std"]) and m["auc_std"] > 0, label  # seeds differ
        if m["reference"]:
            assert len(m["paired_auc_diff"]) == 3 and all(map(_finite, m["paired_auc_diff"])), label
    for label in ("DCNv2", "DNN", "AutoInt", "DeepFM"):  # real data, trained: clearly better than chance
        assert results["models"][label]["auc_mean"] > 0.65, label

    pretrained = {r.name for r in runs if "pretrain" in r.stages}
    assert set(results["alignment"]) == pretrained
    for name in pretrained - {"ctrl"}:  # masked-content recovery is measured with and without the other side
        a = results["alignment"][name]
        assert {"mlm_acc", "mlm_acc_zero_prompts"} <= set(a) and 0 < a["mlm_acc"] < 1, name
    assert results["alignment"]["alt"]["mtm_acc"] > results["alignment"]["alt"]["mtm_chance"]

    tail = results["long_tail"]
    assert len(tail) == 8  # four backbones and their ClickPrompt CTR-only models
    for label, t in tail.items():
        assert 0.5 < t["all"] < 0.9 and t["n_tail_users"] > t["n_tail_both"] > 0, label

    eff = results["efficiency"]
    for key in ("ctr_only_ms_per_1000", "with_lm_ms_per_1000", "pamlm_prompted_samples_per_s",
                "pamlm_plain_samples_per_s", "peak_rss_mb", "total_seconds"):
        assert _finite(eff[key]) and eff[key] > 0, key
    assert eff["with_lm_over_ctr_only"] > 10
    assert set(eff["stage_seconds"]) == {r.name for r in runs}
    for name in ("auc_by_model.png", "long_tail.png", "latency.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    assert (out / "report.md").read_text().count("\n| ") > 40
