"""The authors' finetuning choices as options, each off by default: the MLP click head, PA-MLM on the
train + validation rows (never test), no weight decay on biases / norms / embeddings."""

import pandas as pd
import pytest
import torch
from torch import nn

from models.ctr import build_ctr_model
from models.encoding import FieldInfo
from models.prompt import PromptConfig
from models.text_ctr import TextCTR
from models.train.config import StageConfig, load_config
from models.train.host import optimizer_groups
from models.train.trainer import Trainer
from tests.small_training import save_tiny_bert, small_training_data
from tests.tiny_plm import tiny_bert

FIELDS = [FieldInfo("user_id", "id", 40), FieldInfo("item_id", "id", 30)]


def test_mlp_click_head_is_linear_tanh_linear_and_linear_stays_the_default():
    from models.clickprompt import ClickPrompt

    plm, _ = tiny_bert()
    hidden = plm.config.hidden_size
    mlp = TextCTR(plm, head="mlp").head
    assert [type(m) for m in mlp] == [nn.Linear, nn.Tanh, nn.Linear]
    assert (mlp[0].in_features, mlp[0].out_features, mlp[2].in_features, mlp[2].out_features) == (hidden, hidden,
                                                                                                  hidden, 1)
    ids, mask = torch.randint(5, 100, (3, 7)), torch.ones(3, 7, dtype=torch.long)
    assert TextCTR(plm, head="mlp")(ids, mask).shape == (3,)
    backbone = build_ctr_model("dnn", FIELDS, {"hidden_units": [16]}, preset="smoke")
    cp = ClickPrompt(backbone, plm, PromptConfig(n_prompts=2, hidden=8), head="mlp")
    assert {k for k in cp.state_dict() if k.startswith("plm_head.")} == {
        "plm_head.0.weight", "plm_head.0.bias", "plm_head.2.weight", "plm_head.2.bias"}
    assert isinstance(TextCTR(plm).head, nn.Linear) and load_config("smoke").head == "linear"
    with pytest.raises(ValueError, match="head"):
        load_config("smoke", {"head": "deep"})


def test_no_decay_puts_biases_norms_and_embeddings_in_a_group_without_weight_decay(tmp_path):
    plm, _ = tiny_bert()
    model = TextCTR(plm)
    groups = {g["name"]: g for g in optimizer_groups(model, model.parameter_groups(), 1e-4, 1e-3, no_decay=True)}
    assert set(groups) == {"plm", "plm/no_decay", "head", "head/no_decay"}
    names = {id(p): n for n, p in model.named_parameters()}
    kept = {names[id(p)] for p in groups["plm"]["params"] + groups["head"]["params"]}
    free = {names[id(p)] for p in groups["plm/no_decay"]["params"] + groups["head/no_decay"]["params"]}
    assert not kept & free and kept | free == set(names.values())
    assert all(n.endswith(("bias", "LayerNorm.weight", "embeddings.weight")) for n in free)
    assert {"plm.bert.embeddings.word_embeddings.weight", "head.bias",
            "plm.bert.encoder.layer.0.output.LayerNorm.weight"} <= free
    assert all(n.endswith(".weight") and "LayerNorm" not in n and "embeddings" not in n for n in kept)
    assert groups["plm/no_decay"]["lr"] == 1e-4 and groups["head/no_decay"]["lr"] == 1e-3
    trainer = Trainer(model, StageConfig(no_decay=True, weight_decay=0.05), model.parameter_groups(), tmp_path,
                      torch.device("cpu"))
    assert {g["name"]: g["weight_decay"] for g in trainer.optimizer.param_groups} == {
        "plm": 0.05, "plm/no_decay": 0.0, "head": 0.05, "head/no_decay": 0.0}
    default = optimizer_groups(model, model.parameter_groups(), 1e-4, 1e-3, no_decay=False)
    assert [g["name"] for g in default] == ["plm", "head"] and "weight_decay" not in default[0]


def _row_keys(split) -> set:
    return set(map(tuple, split.meta.astype(str).to_numpy().tolist()))


def test_pretraining_on_train_and_valid_rows_holds_out_a_slice_and_never_sees_test(tmp_path):
    from models.train.prepare import prepare
    from models.train.setups import pretrain_rows

    data, _ = small_training_data(tmp_path)
    plm = save_tiny_bert(tmp_path / "tiny")
    cfg = load_config("smoke", {"max_len": 48, "pretrain.max_eval_samples": 40})
    ctx = prepare(cfg, data, tmp_path / "run", ["pretrain"], plm)
    train, valid, test = (ctx.splits[k] for k in ("train", "valid", "test"))
    rows, held = pretrain_rows(ctx)
    assert rows is None and _row_keys(held) == _row_keys(valid.head(40, cfg.seed))
    ctx.cfg = load_config("smoke", {"max_len": 48, "pretrain.max_eval_samples": 40, "pretrain.rows": "train+valid"})
    rows, held = pretrain_rows(ctx)
    assert len(held) == 40 and len(rows) == len(train) + len(valid) - 40
    assert not _row_keys(rows) & _row_keys(held)
    assert _row_keys(rows) | _row_keys(held) == _row_keys(train) | _row_keys(valid)
    assert not (_row_keys(rows) | _row_keys(held)) & _row_keys(test)
    assert rows.input_ids.shape[1] == train.input_ids.shape[1] and isinstance(rows.meta, pd.DataFrame)
    again, _ = pretrain_rows(ctx)
    assert torch.equal(again.label, rows.label)  # a fixed slice: a resumed run trains on the same rows
