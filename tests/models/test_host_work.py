"""The trainer's host work per step: losses read back every ``log_every`` steps (not per step), the
training split gathered and trimmed from host lengths, torch.compile of the LM encoders as an option."""

import torch
import torch.nn.functional as F

from models.ctr import build_ctr_model
from models.data import EncodedSplit, batch_at
from models.encoding import FieldInfo
from models.text_ctr import TextCTR
from models.train.config import StageConfig
from models.train.host import compile_lm_encoders
from models.train.trainer import Trainer
from tests.tiny_plm import tiny_bert

FIELDS = [FieldInfo("user_id", "id", 40), FieldInfo("item_id", "id", 30)]


def _split(n: int = 640) -> EncodedSplit:
    g = torch.Generator().manual_seed(0)
    users, items = torch.randint(3, 40, (n,), generator=g), torch.randint(3, 30, (n,), generator=g)
    return EncodedSplit(x={"user_id": users, "item_id": items}, label=((users % 2 == 0) | (items % 5 == 0)).float())


def _fit(tmp_path, name, monkeypatch=None, **cfg):
    torch.manual_seed(0)
    model = build_ctr_model("dnn", FIELDS, {"hidden_units": [16], "dropout": 0.1}, preset="smoke")
    stage = StageConfig(epochs=2, batch_size=32, checkpoint_every=1000, **cfg)
    trainer = Trainer(model, stage, {"ctr": list(model.parameters())}, tmp_path / name, torch.device("cpu"), seed=7)
    reads = []
    if monkeypatch is not None:  # count every read of a tensor's value back to the host during the fit
        item = torch.Tensor.item
        monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(1) or item(t))
        tolist = torch.Tensor.tolist
        monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append(1) or tolist(t))
    step = lambda m, b: F.binary_cross_entropy_with_logits(m(b["x"]).logit, b["label"])  # noqa: E731
    result = trainer.fit(_split(), step)
    return model, result, len(reads)


def test_losses_are_read_back_every_log_every_steps_with_the_same_record(tmp_path, monkeypatch):
    model_1, every_step, _ = _fit(tmp_path, "a", log_every=1)
    model_n, batched, reads = _fit(tmp_path, "b", monkeypatch, log_every=15)
    assert batched.steps == every_step.steps == 40
    assert reads == 3  # 40 steps: after steps 15 and 30, and the last 10 at the end (was 3 reads per step)
    assert (batched.loss_first, batched.loss_last) == (every_step.loss_first, every_step.loss_last)
    for a, b in zip(model_1.state_dict().values(), model_n.state_dict().values()):
        assert torch.equal(a, b)


def test_batches_are_trimmed_from_host_lengths_as_from_the_mask():
    ids = torch.zeros(6, 10, dtype=torch.long)
    mask = torch.zeros(6, 10, dtype=torch.long)
    for row, n in enumerate([3, 7, 5, 2, 9, 4]):
        ids[row, :n], mask[row, :n] = row + 1, 1
    split = EncodedSplit({"u": torch.arange(6)}, torch.ones(6), ids, mask, torch.zeros(6, 10, dtype=torch.int8))
    assert split.to(torch.device("cpu")) is split  # already there: nothing copied
    index = torch.tensor([0, 2, 5])
    from_mask = batch_at(split, index, torch.device("cpu"))
    from_host = batch_at(split, index, torch.device("cpu"), split.lengths())
    assert from_host["input_ids"].shape == (3, 5) and torch.equal(from_host["input_ids"], from_mask["input_ids"])
    assert torch.equal(from_host["attention_mask"], from_mask["attention_mask"])


def test_compile_option_compiles_the_lm_encoder_in_place_keeping_weight_names(tmp_path):
    plm, _ = tiny_bert()
    model = TextCTR(plm)
    names = list(model.state_dict())
    assert compile_lm_encoders(model) == 1
    assert model.plm.base_model.encoder._compiled_call_impl is not None and list(model.state_dict()) == names
    plain = TextCTR(tiny_bert()[0])
    Trainer(plain, StageConfig(compile=False), plain.parameter_groups(), tmp_path / "p", torch.device("cpu"))
    assert plain.plm.base_model.encoder._compiled_call_impl is None


def test_a_run_is_prepared_with_the_tokenizer_alone(tmp_path, monkeypatch):
    """A run's preparation tokenizes with the PLM's tokenizer; the LM's weights are loaded by the
    stages that train it (a CTR-only stage after PA-MLM loads none: no 'Loading weights' for it)."""
    import transformers

    from models.train.config import load_config
    from models.train.prepare import prepare
    from tests.small_training import save_tiny_bert, small_training_data

    data, _ = small_training_data(tmp_path)
    plm = save_tiny_bert(tmp_path / "tiny")

    def no_weights(*args, **kwargs):
        raise AssertionError("the LM's weights were loaded to prepare a run")

    monkeypatch.setattr(transformers.AutoModelForMaskedLM, "from_pretrained", no_weights)
    cfg = load_config("smoke", {"max_len": 48})
    ctx = prepare(cfg, data, tmp_path / "run", ["pretrain", "finetune-ctr-only"], plm)
    assert ctx.tokenizer.mask_token_id is not None and ctx.splits["train"].input_ids.shape[1] <= 48
    assert int((ctx.splits["train"].input_ids == ctx.tokenizer.mask_token_id).sum()) == 0
