"""Data-parallel training (torch DDP, gloo on CPU): two ranks follow one process.

The same global batch split over 2 ranks gives one process's loss trajectory (float rounding
apart), the same early stopping and weights; rank 0 alone writes the run folder; an interrupted
run resumes on 2 ranks (a one-process checkpoint too). ``clickprompt train`` under a real torchrun
trains the pipeline's stages on both ranks, as one process would (one run: about 40 s here, most of it
the pipeline's own start, so resuming is left to the trainer-level test).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from core.settings import REPO_ROOT, Paths
from models.ctr import build_ctr_model
from models.data import EncodedSplit
from models.encoding import FieldInfo
from models.evaluate import evaluate
from models.runtime import predict
from models.train import distributed
from models.train.config import StageConfig
from models.train.distributed import Dist
from models.train.trainer import Trainer

FIELDS = [FieldInfo("user_id", "id", 40), FieldInfo("item_id", "id", 30)]


def _split(n: int, seed: int) -> EncodedSplit:
    """Users and items with a learnable per-user and per-item effect (as in test_trainer)."""
    g = torch.Generator().manual_seed(seed)
    users, items = torch.randint(3, 40, (n,), generator=g), torch.randint(3, 30, (n,), generator=g)
    return EncodedSplit(x={"user_id": users, "item_id": items}, label=((users % 2 == 0) | (items % 5 == 0)).float())


TRAIN, VALID = _split(601, seed=0), _split(200, seed=1)  # 601 rows: the last batch of 25 splits 13 / 12
CRASH_AT = 14  # between checkpoints (every 4 steps)
RTOL, ATOL = 1e-5, 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Interrupt(Exception):
    pass


def _fit(run_dir: Path, crash_at: int | None = None) -> tuple[dict, dict | None]:
    """The test trainer's model (no dropout) fit in ``run_dir``: its weights and result (None when
    it crashed at step ``crash_at``). Validation every step, so the history is the loss trajectory."""
    torch.manual_seed(0)
    model = build_ctr_model("dnn", FIELDS, {"hidden_units": [16], "dropout": 0.0}, preset="smoke")
    cfg = StageConfig(epochs=8, batch_size=64, checkpoint_every=4, lr_ctr=1e-2, evals_per_epoch=10, patience=1)
    trainer = Trainer(model, cfg, {"ctr": list(model.parameters())}, run_dir, torch.device("cpu"), seed=7,
                      fingerprint="cfg-a")

    def score() -> dict:
        return evaluate(VALID.label.numpy(), predict(model, VALID, lambda m, b: m(b["x"]).logit, 256,
                                                     torch.device("cpu")))

    def crash(step: int) -> None:
        if step == crash_at:
            raise Interrupt

    try:
        result = trainer.fit(TRAIN, lambda m, b: F.binary_cross_entropy_with_logits(m(b["x"]).logit, b["label"]),
                             score, on_step=crash)
    except Interrupt:
        return {k: v.clone() for k, v in model.state_dict().items()}, None
    return {k: v.clone() for k, v in model.state_dict().items()}, asdict(result)


def _record_writes(roots: list[Path]) -> list[str]:
    """Every file write, rename, removal or folder creation under ``roots`` from now on in this
    process (Python's audit events: what ``core.io``, ``torch.save``'s rename and mkdir do)."""
    prefixes = [str(r) for r in roots]
    seen: list[str] = []

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            paths = [path] if writing else []
        elif event == "os.rename":
            paths = list(args[:2])
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate"):
            paths = [args[0]]
        else:
            return
        seen.extend(f"{event} {p}" for p in paths if isinstance(p, (str, os.PathLike))
                    and any(str(p).startswith(r) for r in prefixes))

    sys.addaudithook(hook)
    return seen


def _rank_main(rank: int, port: int, root: Path) -> None:
    """One of 2 torchrun-like ranks: an uninterrupted fit, an interrupted one and its resumption,
    and the resumption of a one-process checkpoint; its results to ``root/out/rank<r>.pt``."""
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    place = distributed.init()
    assert place == Dist(2, rank, rank, torch.device("cpu")) and dist.get_backend() == "gloo"
    assert torch.get_num_threads() == max(1, len(os.sched_getaffinity(0)) // 2)
    writes = _record_writes([root / "ddp", root / "cross"])
    out: dict = {}
    out["full"], out["full_result"] = _fit(root / "ddp" / "full")
    assert _fit(root / "ddp" / "resumed", crash_at=CRASH_AT)[1] is None
    out["resumed"], out["resumed_result"] = _fit(root / "ddp" / "resumed")
    out["cross"], out["cross_result"] = _fit(root / "cross")  # a one-process checkpoint, resumed on 2 ranks
    out["writes"] = list(writes)
    distributed.teardown()
    torch.save(out, root / "out" / f"rank{rank}.pt")


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


# --- a process alone ------------------------------------------------------------------------


def test_a_process_alone_starts_no_process_group(monkeypatch) -> None:
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.from_env({}) == Dist() and distributed.from_env({"WORLD_SIZE": "1"}) == Dist()
    place = distributed.init()
    assert place == Dist() and not place.enabled and place.is_main and place.device is None
    assert not dist.is_initialized()
    index = torch.arange(7)
    assert distributed.shard(index) == (index, 1.0)
    loss = torch.tensor(0.25)
    assert distributed.global_mean(loss) is loss and distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(3) == [3]
    distributed.check_batch_size(7)
    with distributed.leading():
        distributed.announce("ignored")  # nobody waits: nothing is sent
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT unset: launch with torchrun"):
        distributed.from_env({"WORLD_SIZE": "2", "RANK": "0"})
    assert distributed.from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                                 "MASTER_PORT": "1"}).rank == 1


def test_each_rank_takes_its_strided_share_of_a_global_batch(monkeypatch) -> None:
    batch = torch.arange(100, 125)  # the short last batch: 25 rows over 2 ranks
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "_current", Dist(2, rank, rank, torch.device("cpu")))
        shares.append(distributed.shard(batch))
    (a, wa), (b, wb) = shares
    assert a.tolist() == list(range(100, 125, 2)) and b.tolist() == list(range(101, 125, 2))
    assert (wa, wb) == (2 * 13 / 25, 2 * 12 / 25)  # DDP's average of weighted means = the mean over 25 rows
    losses = torch.rand(25)
    assert torch.isclose((wa * losses[::2].mean() + wb * losses[1::2].mean()) / 2, losses.mean())
    monkeypatch.setattr(distributed, "_current", Dist(2, 1, 1, torch.device("cpu")))
    one, weight = distributed.shard(torch.tensor([7]))  # a 1-row last batch: rank 1 takes part with weight 0
    assert one.tolist() == [7] and weight == 0.0
    with pytest.raises(ValueError, match="batch size 63 does not divide by the 2 training processes"):
        distributed.check_batch_size(63)


# --- two gloo ranks ------------------------------------------------------------------------


def test_two_gloo_ranks_follow_one_process_and_rank_0_alone_writes(tmp_path) -> None:
    one_weights, one = _fit(tmp_path / "one" / "full")
    assert one["stopped_early"] and one["steps"] < 80  # early stopping is part of what the ranks must agree on
    assert _fit(tmp_path / "cross", crash_at=CRASH_AT)[1] is None  # a one-process checkpoint at step 12
    (tmp_path / "out").mkdir()
    mp.spawn(_rank_main, args=(_free_port(), tmp_path), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / "out" / f"rank{r}.pt", weights_only=False) for r in (0, 1))

    ddp = r0["full_result"]
    for key in ("steps", "best_step", "stopped_early", "train_rows"):
        assert ddp[key] == one[key], key
    losses_one, losses_ddp = ([h["loss"] for h in r["history"]] for r in (one, ddp))
    assert len(losses_ddp) == ddp["steps"]  # validated every step: the whole trajectory
    np.testing.assert_allclose(losses_ddp, losses_one, rtol=RTOL, atol=ATOL)
    for metric in ("auc", "logloss"):
        np.testing.assert_allclose([h[metric] for h in ddp["history"]], [h[metric] for h in one["history"]],
                                   rtol=RTOL, atol=ATOL)
    assert r1["full_result"]["history"] == ddp["history"]  # every rank decided on rank 0's metrics
    for name, value in one_weights.items():
        assert torch.equal(r0["full"][name], r1["full"][name]), name  # the ranks end alike (best weights)
        torch.testing.assert_close(r0["full"][name], value, rtol=1e-4, atol=1e-5)

    for name in one_weights:  # interrupted at step 14, resumed from the checkpoint at 12
        torch.testing.assert_close(r0["resumed"][name], r0["full"][name], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(r0["cross"][name], one_weights[name], rtol=1e-4, atol=1e-5)
    assert r0["resumed_result"]["steps"] == r0["cross_result"]["steps"] == one["steps"]
    np.testing.assert_allclose([h["loss"] for h in r0["resumed_result"]["history"]], losses_one, rtol=RTOL, atol=ATOL)

    assert r1["writes"] == []  # rank 1 never wrote, renamed, removed or created anything in the run folders
    assert any("trainer_state.json" in w for w in r0["writes"])  # the hook does see rank 0's writes
    assert _files(tmp_path / "ddp" / "full") == _files(tmp_path / "one" / "full")
    assert not any(".tmp-" in f for f in _files(tmp_path / "ddp"))
    state = json.loads((tmp_path / "ddp" / "full" / "trainer_state.json").read_text())
    assert state["step"] == one["steps"]
    blob = torch.load(tmp_path / "ddp" / "full" / "trainer_state.pt", weights_only=True)
    assert len(blob["torch_rng_ranks"]) == 2  # each rank's RNG, for a resumption on 2 ranks


# --- clickprompt train under torchrun ------------------------------------------------------------


def _torchrun_train(paths: Paths, raw: Path) -> subprocess.CompletedProcess:
    stages = "baseline,pretrain,finetune-with-lm"
    sets = ["plm=tiny-bert", "max_len=48", "baseline.batch_size=64", "pretrain.batch_size=32",
            "pretrain.max_train_samples=192", "pretrain.max_eval_samples=64", "finetune_lm.batch_size=32",
            "finetune_lm.max_train_samples=192"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "cli", "train", "--profile", "smoke", "--stages", stages, "--source", str(raw), "--run-id", "ddp",
           *[a for s in sets for a in ("--set", s)], "--json"]
    env = {**os.environ, "CLICKPROMPT_HOME": str(paths.home), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def _summary(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.count('"run_id"') == 1  # rank 0's summary; the other rank prints nothing
    return json.loads(run.stdout[run.stdout.index("{\n"):])


def test_clickprompt_train_under_torchrun_trains_the_stages_on_two_ranks(paths: Paths, tmp_path) -> None:
    from core.training_data import TrainingData, load_training_data
    from feature_repo.training_sets import latest_training_set
    from models.train.config import TrainConfig
    from models.train.run import run_training
    from tests.serving.conftest import write_synthetic_raw
    from tests.tiny_plm import tiny_bert

    model, tokenizer = tiny_bert()
    model.save_pretrained(paths.plms / "tiny-bert")
    tokenizer.save_pretrained(paths.plms / "tiny-bert")
    raw = write_synthetic_raw(tmp_path / "raw")

    run = _torchrun_train(paths, raw)
    summary = _summary(run)
    run_dir = paths.runs / "ddp"
    assert summary["run_id"] == "ddp" and set(summary["variants"]) >= {"baseline", "finetune-with-lm"}
    assert not any(".tmp-" in f for f in _files(run_dir))
    assert run.stderr.count("clickprompt.train: encoded") == 1  # one preparation per run: rank 0's log alone

    # the same stage in this process alone, on the same training set and config
    cfg = TrainConfig.model_validate(json.loads((run_dir / "config.json").read_text()))
    data: TrainingData = load_training_data(latest_training_set(paths))
    alone = run_training(cfg, data, ["baseline"], tmp_path / "alone", paths.plm_source(cfg.plm))["stages"]["baseline"]
    ddp = json.loads((run_dir / "baseline" / "metrics.json").read_text())
    assert ddp["fit"]["steps"] == alone["fit"]["steps"] and ddp["trained_on"] == alone["trained_on"]
    np.testing.assert_allclose([h["loss"] for h in ddp["fit"]["history"]],
                               [h["loss"] for h in alone["fit"]["history"]], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose([ddp["test"]["auc"], ddp["test"]["logloss"]],
                               [alone["test"]["auc"], alone["test"]["logloss"]], rtol=RTOL, atol=ATOL)
    p_ddp, p_alone = (pd.read_parquet(d / "baseline" / "test_predictions.parquet").probability.to_numpy()
                      for d in (run_dir, tmp_path / "alone"))
    np.testing.assert_allclose(p_ddp, p_alone, atol=1e-5)
    assert _files(run_dir / "baseline") == _files(tmp_path / "alone" / "baseline")
    for stage in ("pretrain", "finetune-with-lm"):  # unused parameters (click head, MLM decoder) under DDP
        metrics = json.loads((run_dir / stage / "metrics.json").read_text())
        assert metrics["fit"]["steps"] > 0 and np.isfinite(metrics["fit"]["loss_last"])

