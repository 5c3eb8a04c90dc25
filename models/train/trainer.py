"""The one training loop: AdamW with LM / CTR learning rates, warmup + schedule, early stopping on a
validation metric, mixed precision on CUDA, progress with rates, and resumable checkpoints.

A stage supplies ``step_fn(model, batch) -> loss`` and ``eval_fn() -> metrics``; the trainer
does the rest. Checkpoints (every ``checkpoint_every`` steps, in ``run_dir``): weights in
safetensors, optimizer / scheduler / RNG state in ``trainer_state.pt`` (tensors and numbers
only, loaded with ``weights_only=True``). A resumed run replays the same batch order and skips
the batches already done, so it ends where an uninterrupted run would.

Data-parallel under torchrun (``models.train.distributed``): the model is wrapped in
DistributedDataParallel, each rank trains on its share of every global batch (the config's batch
size, the same shuffled order as one process), and the logged loss is the global batch's mean, so
N ranks follow one process's loss trajectory (to float rounding; exactly the same batches).
Rank 0 evaluates and broadcasts the metrics (the same early stopping on every rank), and alone
writes checkpoints and weights while the others wait; a resumed run starts every rank from rank
0's checkpoint. A process alone (no torchrun) runs exactly the single-process loop.

Little host work per step (``models.train.host``): the training split moves to the device once per
fit, batches are gathered and trimmed there, losses are read back every ``log_every`` steps.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from core.io import atomic_write, write_json_atomic
from models.data import EncodedSplit, batch_at, batch_order
from models.runtime import amp_dtype, load_weights, save_weights
from models.train import distributed
from models.train.config import StageConfig
from models.train.host import LossLog, compile_lm_encoders, optimizer_groups

log = logging.getLogger("clickprompt.trainer")


def lr_lambda(schedule: str, total: int, warmup: int) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress

    return fn


@dataclass
class FitResult:
    train_rows: int  # rows of the training split this fit drew its batches from
    best_metric: float
    best_step: int
    steps: int
    epochs_run: float
    stopped_early: bool
    seconds: float  # the fit's clock, over every process that trained it
    samples_per_s: float
    loss_first: float  # mean training loss of the first steps (up to 10) ...
    loss_last: float  # ... and of the last steps of this fit: did the loss fall?
    history: list[dict] = field(default_factory=list)
    resumed_seconds: float = 0.0  # of ``seconds``, those of the processes before this one (its checkpoint's)


class _StepModule(nn.Module):
    """A stage's loss as a module's forward: DDP prepares its gradient all-reduce in ``forward``,
    and a step function may call any method of the model (``pa_mlm``, ``ctr_parts``), not only
    its forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, step_fn: Callable[[nn.Module, dict], torch.Tensor], batch: dict) -> torch.Tensor:
        return step_fn(self.model, batch)


class Trainer:
    """Trains ``model`` with named parameter groups; the group "plm" gets ``lr_lm``, all others ``lr_ctr``."""

    def __init__(
        self,
        model: nn.Module,
        cfg: StageConfig,
        param_groups: dict[str, list[nn.Parameter]],
        run_dir: Path,
        device: torch.device,
        amp: bool | str = True,
        seed: int = 42,
        desc: str = "train",
        fingerprint: str = "",
    ) -> None:
        self.model, self.cfg, self.run_dir, self.device, self.seed, self.desc = model, cfg, run_dir, device, seed, desc
        self.fingerprint = fingerprint  # a checkpoint with another one (config, data, pretraining) is not resumed
        self.amp_dtype = amp_dtype(device, amp)
        groups = optimizer_groups(model, param_groups, cfg.lr_lm, cfg.lr_ctr, cfg.no_decay)
        # the fused kernel (CPU and CUDA): one pass over every parameter instead of a loop per tensor
        # (11% of a PA-MLM step on 2 CPU cores: benchmarks/bench_training_cost.py)
        self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=device.type in ("cpu", "cuda"))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.dist = distributed.current()
        if cfg.compile:
            log.info("%s: torch.compile of %d LM encoder(s)", desc, compile_lm_encoders(model))
        self._net: nn.Module | None = None  # the DDP-wrapped step while a data-parallel fit runs
        if self.dist.is_main:  # rank 0 alone writes the run folder
            run_dir.mkdir(parents=True, exist_ok=True)

    # --- checkpoints -------------------------------------------------------------------

    @property
    def _state_path(self) -> Path:
        return self.run_dir / "trainer_state.pt"

    def _save_checkpoint(self, state: dict, scheduler) -> None:
        """Rank 0 writes (data-parallel: with every rank's RNG state, so a resumed run draws each
        rank's dropout masks as the uninterrupted one would); the other ranks wait until it has."""
        ranks_rng = distributed.all_gather_object(torch.get_rng_state()) if self.dist.enabled else None
        if self.dist.is_main:
            save_weights(self.model, self.run_dir / "last.safetensors")
            blob = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            }
            if ranks_rng is not None:
                blob["torch_rng_ranks"] = ranks_rng
            atomic_write(self._state_path, lambda tmp: torch.save(blob, tmp))
            write_json_atomic(self.run_dir / "trainer_state.json", state, indent=1)
        distributed.barrier()

    def _load_checkpoint(self, scheduler) -> dict | None:
        """The checkpoint's loop state, its weights, optimizer, scheduler and RNG restored; None
        when there is none to resume. Data-parallel: rank 0 reads it and broadcasts it (weights
        reach the other ranks when DDP wraps the model), so every rank resumes the same way."""
        found = self._read_checkpoint() if self.dist.is_main else None
        if self.dist.enabled:
            found = distributed.broadcast_object(found)
        if found is None:
            return None
        state, blob = found
        self.optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        self.scaler.load_state_dict(blob["scaler"])
        ranks_rng = blob.get("torch_rng_ranks")
        if ranks_rng is not None and len(ranks_rng) == self.dist.world:
            torch.set_rng_state(ranks_rng[self.dist.rank])
        elif self.dist.is_main:
            torch.set_rng_state(blob["torch_rng"])
        else:  # a checkpoint of another world size: a stream of this rank's own
            self._fork_rng(state["step"])
        if self.dist.is_main:
            log.info("%s: resuming at step %d (epoch %d, batch %d)", self.desc, state["step"], state["epoch"],
                     state["batch"])
        return state

    def _read_checkpoint(self) -> tuple[dict, dict] | None:
        meta = self.run_dir / "trainer_state.json"
        if not (meta.exists() and self._state_path.exists() and (self.run_dir / "last.safetensors").exists()):
            return None
        state = json.loads(meta.read_text())
        if state.get("fingerprint", "") != self.fingerprint:
            log.warning("%s: checkpoint in %s is from another config or data; starting fresh", self.desc, self.run_dir)
            return None
        load_weights(self.model, self.run_dir / "last.safetensors")
        # data-parallel: on the CPU, to be pickled to the other ranks (the optimizer moves its state
        # to the parameters' device when it loads it)
        where = {"map_location": "cpu"} if self.dist.enabled else {}
        return state, torch.load(self._state_path, weights_only=True, **where)

    def _fork_rng(self, step: int) -> None:
        """Ranks after 0 draw dropout from streams of their own (rank 0 keeps the process's), so
        the shares of a batch do not all get the same masks."""
        torch.manual_seed(self.seed * 1_000_003 + 7_919 * self.dist.rank + step)

    def _data_parallel(self) -> nn.Module | None:
        """The model's step under DDP (None in a process alone). DDP starts every rank from rank
        0's weights. ``static_graph``: the parameters a stage's loss never reaches (a pretraining
        model's click head) are found once, in the first step, not searched for in every step as
        ``find_unused_parameters`` would; they keep no gradient, as in one process."""
        if not self.dist.enabled:
            return None
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules())
        if has_bn and self.device.type == "cuda":  # batch statistics over the global batch, as in one process
            nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        elif has_bn:
            log.warning("%s: BatchNorm on CPU ranks normalises each rank's share of a batch (SyncBatchNorm "
                        "needs GPUs); the losses differ from one process's", self.desc)
        return DistributedDataParallel(
            _StepModule(self.model), device_ids=[self.device.index] if self.device.type == "cuda" else None,
            static_graph=True, forward_sync_buffers=has_bn)  # rank 0's buffers at the start (and BN's every step)

    # --- loop --------------------------------------------------------------------------

    def train_step(self, step_fn: Callable[[nn.Module, dict], torch.Tensor], batch: dict,
                   weight: float = 1.0) -> torch.Tensor:
        """One optimisation step on ``batch`` (autocast, backward, clipping, AdamW); the loss, detached.

        Data-parallel: ``batch`` is this rank's share of the global batch and ``weight`` its
        loss's weight (``distributed.shard``); DDP averages the ranks' gradients in ``backward``,
        so clipping and AdamW see the same gradient on every rank. The loss returned is the rank's.
        """
        net = self._net
        (self.model if net is None else net).train()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = step_fn(self.model, batch) if net is None else net(step_fn, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss if weight == 1.0 else loss * weight).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def _evaluate(self, state: dict, eval_fn: Callable[[], dict], monitor: str, sign: float, epoch: float,
                  loss: torch.Tensor, best_path: Path) -> None:
        """One validation check: rank 0 evaluates, every rank decides on its numbers (best weights
        kept, early stopping after ``patience`` epochs of checks without improvement)."""
        cfg, dist = self.cfg, self.dist
        metrics = distributed.broadcast_object(eval_fn() if dist.is_main else None)
        metrics.update(step=state["step"], epoch=epoch, loss=loss.item())
        state["history"].append(metrics)
        value = metrics[monitor]
        if dist.is_main:
            log.info("%s step %d: %s", self.desc, state["step"],
                     ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        if state["best"] is None or sign * value > sign * state["best"]:
            state.update(best=value, best_step=state["step"], bad_evals=0)
            if dist.is_main:
                save_weights(self.model, best_path)
            return
        state["bad_evals"] += 1
        if state["bad_evals"] >= cfg.patience * cfg.evals_per_epoch:
            state["stopped"] = True
            if dist.is_main:
                log.info("%s: early stop at step %d (best %s=%.4f at step %d)", self.desc,
                         state["step"], monitor, state["best"], state["best_step"])

    @staticmethod
    def _result(state: dict, rows: int, n_batches: int, resumed_seconds: float) -> FitResult:
        epochs_run = state["epoch"] + state["batch"] / n_batches
        return FitResult(
            train_rows=rows,
            best_metric=float("nan") if state["best"] is None else state["best"],
            best_step=state["best_step"],
            steps=state["step"],
            epochs_run=epochs_run,
            stopped_early=state["stopped"],
            seconds=round(state["seconds"], 2),
            samples_per_s=round(rows * epochs_run / max(state["seconds"], 1e-9), 1),  # validation included
            loss_first=float(np.mean(state["losses_first"])) if state["losses_first"] else float("nan"),
            loss_last=float(np.mean(state["losses_last"])) if state["losses_last"] else float("nan"),
            history=state["history"],
            resumed_seconds=round(resumed_seconds, 2),
        )

    def fit(
        self,
        train: EncodedSplit,
        step_fn: Callable[[nn.Module, dict], torch.Tensor],
        eval_fn: Callable[[], dict] | None = None,
        monitor: str = "auc",
        mode: str = "max",
        resume: bool = True,
        on_step: Callable[[int], None] | None = None,
    ) -> FitResult:
        cfg, dist = self.cfg, self.dist
        distributed.check_batch_size(cfg.batch_size)
        n_batches = math.ceil(len(train) / cfg.batch_size)
        total = n_batches * cfg.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.schedule, total, int(cfg.warmup_ratio * total))
        )
        eval_points = {round(n_batches * (i + 1) / cfg.evals_per_epoch) for i in range(cfg.evals_per_epoch)}
        host_lengths = train.lengths()  # (N,) on the host: batches are trimmed without a device sync
        lengths = host_lengths if cfg.group_by_length else None  # None without text
        resident = train.to(self.device)  # moved once per fit; a batch is then a gather on the device
        sign = 1.0 if mode == "max" else -1.0
        state = {"step": 0, "epoch": 0, "batch": 0, "best": None, "best_step": -1, "bad_evals": 0,
                 "history": [], "stopped": False, "seconds": 0.0, "fingerprint": self.fingerprint,
                 "losses_first": [], "losses_last": []}
        self.model.to(self.device)  # first: a resumed optimizer's state follows the parameters' device
        if resume and (loaded := self._load_checkpoint(scheduler)):
            state = loaded
        elif dist.enabled and not dist.is_main:
            self._fork_rng(0)
        best_path = self.run_dir / "best.safetensors"
        resumed_seconds = state["seconds"]
        started = time.perf_counter() - state["seconds"]  # the run's clock, over every process that trained it
        here, samples = time.perf_counter(), 0  # this process's: the rate shown is of the samples it trained
        self._net = self._data_parallel()
        bar = tqdm(total=total, initial=state["step"], desc=self.desc, unit="step", mininterval=2.0, dynamic_ncols=True,
                   disable=not dist.is_main)
        losses = LossLog(state, cfg.log_every, bar)
        try:
            while state["epoch"] < cfg.epochs and not state["stopped"]:
                batches = batch_order(len(train), cfg.batch_size, shuffle=True, seed=self.seed * 1000 + state["epoch"],
                                      lengths=lengths)
                for b in range(state["batch"], n_batches):
                    index, weight = distributed.shard(batches[b])  # the whole batch in a process alone
                    loss = self.train_step(step_fn, batch_at(resident, index, self.device, host_lengths), weight)
                    loss = distributed.global_mean(loss, weight)  # the global batch's mean loss, on every rank
                    scheduler.step()
                    state["step"] += 1
                    state["batch"] = b + 1
                    samples += len(batches[b])
                    bar.update(1)
                    losses.add(loss, samples, time.perf_counter() - here)
                    if eval_fn is not None and (b + 1) in eval_points:
                        losses.flush(samples, time.perf_counter() - here)
                        self._evaluate(state, eval_fn, monitor, sign, state["epoch"] + (b + 1) / n_batches, loss,
                                       best_path)
                        if state["stopped"]:
                            break
                    if state["step"] % cfg.checkpoint_every == 0:
                        losses.flush(samples, time.perf_counter() - here)
                        state["seconds"] = time.perf_counter() - started
                        self._save_checkpoint(state, scheduler)
                    if on_step is not None:
                        on_step(state["step"])
                if not state["stopped"]:
                    state["epoch"] += 1
                    state["batch"] = 0
        finally:
            losses.flush(samples, time.perf_counter() - here)  # the bar ends on the rate of the whole fit
            bar.close()
            self._net = None
        state["seconds"] = time.perf_counter() - started
        self._save_checkpoint(state, scheduler)
        if dist.is_main:
            if eval_fn is None:
                save_weights(self.model, best_path)
            load_weights(self.model, best_path)
        distributed.broadcast_module(self.model)  # every rank ends with the best weights
        return self._result(state, len(train), n_batches, resumed_seconds)


def result_dict(result: FitResult) -> dict:
    return asdict(result)
