"""The trainer: resumable checkpoints give the same result as an uninterrupted run; early stopping."""

import pytest
import torch
import torch.nn.functional as F

from models.ctr import build_ctr_model
from models.data import EncodedSplit
from models.encoding import FieldInfo
from models.evaluate import evaluate
from models.runtime import predict
from models.train.config import StageConfig
from models.train.trainer import Trainer

FIELDS = [FieldInfo("user_id", "id", 40), FieldInfo("item_id", "id", 30)]


def _split(n: int = 600, seed: int = 0) -> EncodedSplit:
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(3, 40, (n,), generator=g)
    items = torch.randint(3, 30, (n,), generator=g)
    label = ((users % 2 == 0) | (items % 5 == 0)).float()  # a per-user and per-item effect: learnable
    return EncodedSplit(x={"user_id": users, "item_id": items}, label=label)


def _step(model, batch):
    return F.binary_cross_entropy_with_logits(model(batch["x"]).logit, batch["label"])


def _trainer(tmp_path, name, **cfg):
    torch.manual_seed(0)
    model = build_ctr_model("dnn", FIELDS, {"hidden_units": [16], "dropout": 0.1}, preset="smoke")
    stage = StageConfig(epochs=3, batch_size=64, checkpoint_every=4, lr_ctr=5e-3, **cfg)
    return model, Trainer(model, stage, {"ctr": list(model.parameters())}, tmp_path / name, torch.device("cpu"),
                          seed=7, fingerprint="cfg-a")


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    train = _split()
    model_a, trainer_a = _trainer(tmp_path, "full")
    trainer_a.fit(train, _step)

    model_b, trainer_b = _trainer(tmp_path, "resumed")

    def crash(step):
        if step == 14:  # between checkpoints (every 4 steps): steps 13-14 are lost and redone
            raise Interrupt

    with pytest.raises(Interrupt):
        trainer_b.fit(train, _step, on_step=crash)
    model_c, trainer_c = _trainer(tmp_path, "resumed")
    result = trainer_c.fit(train, _step)
    assert result.steps == 30  # 3 epochs x 10 batches, not 30 + 12
    for (name, a), (_, c) in zip(model_a.state_dict().items(), model_c.state_dict().items()):
        assert torch.equal(a, c), name


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    train = _split()
    _, trainer = _trainer(tmp_path, "run")
    trainer.fit(train, _step)
    model, other = _trainer(tmp_path, "run")
    other.fingerprint = "cfg-b"
    assert other.fit(train, _step).steps == 30  # trained again from step 0


def test_early_stopping_keeps_the_best_weights_and_learns(tmp_path):
    train, valid = _split(1200, seed=0), _split(400, seed=1)
    model, trainer = _trainer(tmp_path, "es", patience=1)
    trainer.cfg.epochs = 30

    def score():
        return evaluate(valid.label.numpy(), predict(model, valid, lambda m, b: m(b["x"]).logit, 256, torch.device("cpu")))

    result = trainer.fit(train, _step, score)
    assert result.stopped_early and result.epochs_run < 30
    best = max(h["auc"] for h in result.history)
    assert result.best_metric == best > 0.9  # the id pattern is learnable
    assert score()["auc"] == pytest.approx(best)  # best weights restored, not the last
    assert result.loss_last < result.loss_first
