"""The resume rule across stages: a finetuning that starts from the run's pretraining is finished
only for the pretraining it started from (a CTR-only stage trained before PA-MLM was taken, after
it, as if it had started from it, and reported ``initialised_from_pretrain: true``)."""

import json

from models.train.config import load_config
from models.train.run import finished_stage, run_training
from tests.small_training import save_tiny_bert, small_training_data


def test_a_finetuning_trained_before_its_pretraining_is_trained_again_after_it(tmp_path):
    data, _ = small_training_data(tmp_path)
    plm = save_tiny_bert(tmp_path / "tiny")
    cfg = load_config("smoke", {"max_len": 48, "pretrain.max_eval_samples": 40})
    run = tmp_path / "run"
    alone = run_training(cfg, data, ["finetune-ctr-only"], run, plm)["stages"]["finetune-ctr-only"]
    assert alone["initialised_from_pretrain"] is False
    assert finished_stage(run, "finetune-ctr-only", cfg, data.data_id) is not None
    run_training(cfg, data, ["pretrain"], run, plm)
    assert finished_stage(run, "finetune-ctr-only", cfg, data.data_id) is None  # another start now
    after = run_training(cfg, data, ["finetune-ctr-only"], run, plm)["stages"]["finetune-ctr-only"]
    assert after["initialised_from_pretrain"] is True
    assert after["test"]["auc"] != alone["test"]["auc"]  # other weights: not the from-scratch ones kept
    assert finished_stage(run, "finetune-ctr-only", cfg, data.data_id) is not None
    assert finished_stage(run, "pretrain", cfg, data.data_id) is not None  # pretraining's own rule is unchanged
    # the finished pretraining run again (a bench or bundle run calls every stage): scored and written
    # again, the same weights - the finetuning stays finished
    before = (run / "pretrain" / "metrics.json").read_bytes()
    run_training(cfg, data, ["pretrain"], run, plm)
    assert (run / "pretrain" / "metrics.json").read_bytes() != before
    trained, scored = json.loads(before), json.loads((run / "pretrain" / "metrics.json").read_bytes())
    # its time is still the time it took to train (the checkpoint's clock), plus this call's scoring
    assert scored["fit"]["seconds"] >= trained["fit"]["seconds"]
    assert scored["seconds"] >= scored["fit"]["seconds"] > 0 and scored["seconds"] >= trained["fit"]["seconds"]
    assert scored["fit"]["resumed_seconds"] == trained["fit"]["seconds"] and trained["fit"]["resumed_seconds"] == 0
    assert finished_stage(run, "finetune-ctr-only", cfg, data.data_id) is not None
