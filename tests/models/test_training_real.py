"""All four stages on real MovieLens-100K (through the Feast training sets) with the smoke profile."""

import json

import pytest
from safetensors.torch import load_file

from models.ctr import build_ctr_model
from models.train.config import load_config
from models.train.run import run_training

pytestmark = [pytest.mark.slow, pytest.mark.training]  # make test-training: ~2.5 min of training


@pytest.fixture(scope="module")
def smoke_run(real_ml100k_home, real_ml100k_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    stages = ["baseline", "pretrain", "finetune-with-lm", "finetune-ctr-only"]
    cfg = load_config("smoke")
    summary = run_training(cfg, real_ml100k_data, stages, run_dir, real_ml100k_home.plm_source(cfg.plm))
    return summary["stages"], run_dir


def test_dcnv2_baseline_beats_070_test_auc(smoke_run):
    baseline = smoke_run[0]["baseline"]
    assert baseline["test"]["auc"] > 0.70
    assert 0.4 < baseline["test"]["logloss"] < 0.69  # better than the constant predictor's ~0.685
    assert baseline["test"]["n"] == 10_000


def test_pa_mlm_loss_falls_and_prompts_help_recover_value_tokens(smoke_run):
    pre = smoke_run[0]["pretrain"]
    assert pre["fit"]["loss_last"] < 0.6 * pre["fit"]["loss_first"]
    valid = pre["valid"]
    assert valid["masked_value_tokens"] > 500
    assert valid["mlm_acc_values"] > valid["mlm_acc_values_zero_prompts"]
    assert valid["mlm_loss"] < valid["mlm_loss_zero_prompts"]


def test_finetunings_score_in_a_plausible_range(smoke_run):
    stages = smoke_run[0]
    ctr_only, with_lm = stages["finetune-ctr-only"], stages["finetune-with-lm"]
    assert ctr_only["initialised_from_pretrain"] is True
    assert 0.65 < ctr_only["test"]["auc"] < 0.9
    assert 0.5 < with_lm["test"]["auc"] < 0.9 and -5 < with_lm["a"] < 5


def test_ctr_only_model_has_the_untouched_backbones_parameters(smoke_run):
    stages, run_dir = smoke_run
    from models.encoding import FeatureEncoder

    fields = FeatureEncoder.load(run_dir / "encoder.json").fields
    baseline = build_ctr_model("dcnv2", fields, {}, preset="smoke")
    ctr_only = load_file(str(run_dir / "finetune-ctr-only" / "model.safetensors"))
    assert {k: tuple(v.shape) for k, v in ctr_only.items()} == {
        k: tuple(v.shape) for k, v in baseline.state_dict().items()}
    assert stages["finetune-ctr-only"]["params"] == stages["baseline"]["params"]


def test_run_folder_records_config_metrics_and_weights(smoke_run):
    _, run_dir = smoke_run
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["profile"] == "smoke" and len(summary["snapshot_hash"]) == 64
    assert json.loads((run_dir / "config.json").read_text())["backbone"] == "dcnv2"
    for stage in ("baseline", "pretrain", "finetune-with-lm", "finetune-ctr-only"):
        assert (run_dir / stage / "model.safetensors").stat().st_size > 1000
