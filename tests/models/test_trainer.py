"""The trainer: resumable checkpoints give the same result as an uninterrupted run; early stopping."""

import time

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


def test_a_resumed_run_shows_the_rate_of_its_own_samples(tmp_path, monkeypatch):
    """The bar's samples/s after a resume: this process's samples over this process's time (it showed
    them over the whole run's seconds, earlier processes included: 1 sample/s for 18)."""
    import models.train.trainer as trainer_module

    train = _split()
    _, first = _trainer(tmp_path, "run")

    def slow_then_crash(step):
        if step == 5:
            time.sleep(2.0)  # the first process's seconds, saved with the step-8 checkpoint
        if step == 10:
            raise Interrupt

    with pytest.raises(Interrupt):
        first.fit(train, _step, on_step=slow_then_crash)
    shown = []

    class Recording(trainer_module.LossLog):
        def flush(self, samples=0, elapsed=0.0):
            if self.pending:
                shown.append((samples, elapsed))
            super().flush(samples, elapsed)

    monkeypatch.setattr(trainer_module, "LossLog", Recording)
    _, again = _trainer(tmp_path, "run")
    t = time.perf_counter()
    assert again.fit(train, _step).steps == 30
    wall = time.perf_counter() - t
    assert shown and all(elapsed <= wall for _, elapsed in shown), (shown, wall)
    assert shown[-1][0] == len(train) * 3 - 8 * 64  # the samples of steps 9-30 (checkpoint at 8)


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


def test_precision_choice_per_device(monkeypatch, caplog):
    from models.runtime import amp_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype(cpu, True) is None and amp_dtype(cpu, False) is None  # the CPU's default is float32
    assert amp_dtype(cpu, "bf16") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(cuda, True) is torch.float16 and amp_dtype(cuda, False) is None
    with pytest.raises(ValueError, match="this GPU has no bf16; use amp=true"):
        amp_dtype(cuda, "bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(cuda, True) is torch.bfloat16
    with pytest.raises(ValueError, match="amp='fp8': expected true, false or bf16"):
        amp_dtype(cpu, "fp8")
    monkeypatch.setattr("models.runtime.cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="clickprompt.trainer"):
        assert amp_dtype(cpu, "bf16") is torch.bfloat16
    assert "without native bf16" in caplog.text


def test_bf16_on_the_cpu_trains_close_to_float32(tmp_path):
    """amp=bf16 autocasts the trainer's step on the CPU: the same run learns the same pattern."""
    train, valid = _split(1200, seed=0), _split(400, seed=1)
    aucs = {}
    for amp in (False, "bf16"):
        torch.manual_seed(0)
        model = build_ctr_model("dnn", FIELDS, {"hidden_units": [16], "dropout": 0.1}, preset="smoke")
        trainer = Trainer(model, StageConfig(epochs=8, batch_size=64, lr_ctr=5e-3), {"ctr": list(model.parameters())},
                          tmp_path / str(amp), torch.device("cpu"), amp, seed=7, fingerprint="cfg-a")
        assert trainer.amp_dtype == (torch.bfloat16 if amp else None)
        result = trainer.fit(train, _step)
        assert result.loss_last < result.loss_first
        prob = predict(model, valid, lambda m, b: m(b["x"]).logit, 256, torch.device("cpu"), amp)
        assert prob.dtype == "float32" and ((prob > 0) & (prob < 1)).all()
        aucs[amp] = evaluate(valid.label.numpy(), prob)["auc"]
    assert aucs[False] > 0.9 and aucs["bf16"] > 0.9
    assert abs(aucs["bf16"] - aucs[False]) < 0.02
