"""Report rendering on a small hand-written results file: the plots exist and are valid PNGs."""

import json

from benchmarks.report import PLOTS, render

RESULTS = {
    "machine": "test", "profile": "smoke", "dataset": "movielens-100k", "seeds": [1, 2, 3],
    "created_at": "2026-11-23T00:00:00Z", "command": "make bench",
    "models": {
        "DCNv2": {"backbone": "dcnv2", "method": "baseline", "reference": None,
                  "per_seed": {s: {"auc": 0.71, "logloss": 0.62} for s in "123"}, "auc_mean": 0.71, "auc_std": 0.004,
                  "logloss_mean": 0.62, "logloss_std": 0.002, "paired_auc_diff": None, "paired_auc_diff_mean": None},
        "ClickPrompt CTR-only": {"backbone": "dcnv2", "method": "clickprompt", "reference": "DCNv2",
                                 "per_seed": {s: {"auc": 0.715, "logloss": 0.61} for s in "123"}, "auc_mean": 0.715,
                                 "auc_std": 0.003, "logloss_mean": 0.61, "logloss_std": 0.001,
                                 "paired_auc_diff": [0.005, 0.004, 0.006], "paired_auc_diff_mean": 0.005,
                                 "trained_on": {"rows": 79999, "epochs": 4.33}},
        "ClickPrompt with LM": {"backbone": "dcnv2", "method": "clickprompt", "reference": "DCNv2",
                                "per_seed": {s: {"auc": 0.708, "logloss": 0.618} for s in "123"}, "auc_mean": 0.708,
                                "auc_std": 0.001, "logloss_mean": 0.618, "logloss_std": 0.001,
                                "paired_auc_diff": [-0.002, -0.002, -0.002], "paired_auc_diff_mean": -0.002,
                                "trained_on": {"rows": 79999, "epochs": 1},
                                "branches": {"fused": 0.708, "ctr_branch": 0.7071, "lm_branch": 0.7065, "a": 0.241}},
    },
    "long_tail_definition": {"quantile": 0.1, "users": {"threshold": 3.0, "tail_ids": 95, "train_ids": 900},
                             "items": {"threshold": 1.0, "tail_ids": 180, "train_ids": 1500}},
    "long_tail": {
        "DCNv2": {"all": 0.71, "all_std": 0.004, "tail_users": 0.6, "tail_users_std": 0.01, "tail_items": 0.55,
                  "tail_items_std": 0.02, "tail_both": None, "tail_both_std": None,
                  "n_tail_users": 120, "n_tail_items": 80, "n_tail_both": 3},
        "ClickPrompt CTR-only": {"all": 0.715, "tail_users": 0.62, "tail_items": 0.57, "tail_both": None,
                                 "n_tail_users": 120, "n_tail_items": 80, "n_tail_both": 3},
    },
    "alignment": {"cp-dcnv2": {"mlm_acc_values": 0.31, "mlm_acc_values_zero_prompts": 0.27, "mlm_acc": 0.75,
                               "mlm_acc_zero_prompts": 0.73},
                  "alt": {"mtm_acc": 0.36, "mtm_acc_text_zeroed": 0.24, "mtm_chance": 0.115, "retrieval_acc": 0.25,
                          "retrieval_chance": 0.001}},
    "efficiency": {"samples": 5000, "device": "cpu", "ctr_only_ms_per_1000": 2.5, "with_lm_ms_per_1000": 250.0, "with_lm_over_ctr_only": 100.0,
                   "ctr_only_samples_per_s": 400000, "with_lm_samples_per_s": 4000,
                   "pamlm_prompted_samples_per_s": 180, "pamlm_plain_samples_per_s": 220,
                   "pamlm_prompted_over_plain": 0.82, "stage_seconds": {"cp-dcnv2": {"pretrain": 120.0, "finetune-ctr-only": 8.25}},
                   "data_path_seconds": {"ingest": 1.04, "total": 4.41}, "peak_rss_mb": 2100,
                   "total_seconds": 3000.0, "training_seconds": 2700.0, "reused_runs": ["cp-dcnv2-seed1"],
                   "training_cost": {"gemm_fp32_gflop_s": 101.3, "threads": 2, "rows": [
                       {"stage": "pretrain", "mflop_per_sample": 158.2, "samples_per_s": 240.0,
                        "achieved_gflop_s": 37.97, "utilisation": 0.375}]}},
}


def test_render_writes_report_and_valid_pngs(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS))
    report = render(path).read_text()
    for name in PLOTS:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        assert f"]({name})" in report
    assert "| ClickPrompt CTR-only | dcnv2 | 79,999 x 4.33 | 0.7150 ± 0.0030 |" in report
    assert "| DCNv2 | dcnv2 | — | 0.7100 ± 0.0040 |" in report  # a row without a record says so
    assert "| ClickPrompt with LM | 0.7080 | 0.7071 | 0.7065 | 0.241 |" in report  # the fused model and its parts
    assert "| pretrain | 158.2 | 240 | 38.0 | 0.38 |" in report and "101.3 GFLOP/s, 2 threads" in report
    assert "+0.0050 (+0.0050, +0.0040, +0.0060)" in report
    assert "**100x**" in report and "n/a (n=3)" in report
    assert "| cp-dcnv2 | 0.310 / 0.270 | 0.750 / 0.730 | — | — |" in report
    assert "| alt | — | — | 0.360 / 0.240 (0.115) | 0.250 (0.001) |" in report
    assert "| cp-dcnv2 | finetune-ctr-only | 8.2 |" in report  # time per training stage
    assert "| ingest | 1.04 |" in report and "| total | 4.41 |" in report  # time per data-path stage
    assert "peak resident memory of the benchmark process (training included): 2,100 MB" in report
    assert "the efficiency measurements included): 50.0 min (1 runs taken from an earlier attempt); training time of all runs, as recorded when they ran: 45.0 min" in report
    assert ("Tail: users with at most 3 training events (95 of 900 training users, 11%; every id at the threshold "
            "counts) and users unseen in training; items with at most 1 training events (180 of 1,500") in report
    assert "| DCNv2 | 0.7100 ± 0.0040 | 0.6000 ± 0.0100 (n=120) | 0.5500 ± 0.0200 (n=80) | n/a (n=3) |" in report


def test_report_without_the_clickprompt_run_says_why_there_are_no_scoring_figures(tmp_path):
    results = {**RESULTS, "efficiency": {"stage_seconds": {"base-dcnv2": {"baseline": 5.0}}, "peak_rss_mb": 900}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    report = render(path).read_text()
    assert "ClickPrompt (DCNv2) run was not part of this benchmark" in report
    assert "| base-dcnv2 | baseline | 5.0 |" in report
    assert not (tmp_path / "latency.png").exists() and (tmp_path / "auc_by_model.png").exists()


def test_recorded_command_is_the_cli_with_paths_relative_to_the_working_directory(tmp_path):
    # a published report names no machine path: `python -m cli` reads `clickprompt`, a folder inside
    # the working directory is relative, one outside stays as typed
    from benchmarks.results import invocation

    argv = [str(tmp_path / "cli" / "__main__.py"), "bench", "--out", str(tmp_path / "artifacts" / "bench" / "x"),
            "--training-set", "/elsewhere/build", "--set", "plm=bert-2l-128"]
    assert invocation(argv, cwd=tmp_path) == ("clickprompt bench --out artifacts/bench/x --training-set /elsewhere/build "
                                              "--set plm=bert-2l-128")
    assert invocation([".venv/bin/clickprompt", "bench", "--profile", "cpu"], cwd=tmp_path) == "clickprompt bench --profile cpu"
