"""The one training loop: AdamW with LM / CTR learning rates, warmup + schedule, early stopping on a
validation metric, mixed precision on CUDA, progress with rates, and resumable checkpoints.

A stage supplies ``step_fn(model, batch) -> loss`` and ``eval_fn() -> metrics``; the trainer
does the rest. Checkpoints (every ``checkpoint_every`` steps, in ``run_dir``): weights in
safetensors, optimizer / scheduler / RNG state in ``trainer_state.pt`` (tensors and numbers
only, loaded with ``weights_only=True``). A resumed run replays the same batch order and skips
the batches already done, so it ends where an uninterrupted run would.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn
from tqdm.auto import tqdm

from core.io import atomic_write, write_json_atomic
from models.config import StageConfig
from models.data import EncodedSplit, batch_at, batch_order

log = logging.getLogger("clickprompt.trainer")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 (with a grad scaler); None on CPU or when disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def save_weights(model: nn.Module, path: Path) -> None:
    """safetensors, written atomically (a crash never leaves half a file).

    ``save_model`` stores tied tensors (an LM's word embeddings and MLM decoder) once.
    """
    atomic_write(path, lambda tmp: save_model(model, str(tmp)))


def load_weights(model: nn.Module, path: Path, strict: bool = True) -> None:
    missing, unexpected = load_model(model, str(path), strict=strict)
    if missing or unexpected:
        log.warning("%s: missing %s, unexpected %s", path.name, missing, unexpected)


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
    seconds: float
    samples_per_s: float
    loss_first: float  # mean training loss of the first steps (up to 10) ...
    loss_last: float  # ... and of the last steps of this fit: did the loss fall?
    history: list[dict] = field(default_factory=list)


class Trainer:
    """Trains ``model`` with named parameter groups; the group "plm" gets ``lr_lm``, all others ``lr_ctr``."""

    def __init__(
        self,
        model: nn.Module,
        cfg: StageConfig,
        param_groups: dict[str, list[nn.Parameter]],
        run_dir: Path,
        device: torch.device,
        amp: bool = True,
        seed: int = 42,
        desc: str = "train",
        fingerprint: str = "",
    ) -> None:
        self.model, self.cfg, self.run_dir, self.device, self.seed, self.desc = model, cfg, run_dir, device, seed, desc
        self.fingerprint = fingerprint  # a checkpoint with another fingerprint (config, data) is not resumed
        self.amp_dtype = amp_dtype(device, amp)
        groups = [
            {"params": [p for p in params if p.requires_grad], "lr": cfg.lr_lm if name == "plm" else cfg.lr_ctr, "name": name}
            for name, params in param_groups.items()
        ]
        groups = [g for g in groups if g["params"]]
        # the fused kernel (CPU and CUDA): one pass over every parameter instead of a loop per tensor
        # (11% of a PA-MLM step on 2 CPU cores: benchmarks/bench_training_cost.py)
        self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=device.type in ("cpu", "cuda"))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        run_dir.mkdir(parents=True, exist_ok=True)

    # --- checkpoints -------------------------------------------------------------------

    @property
    def _state_path(self) -> Path:
        return self.run_dir / "trainer_state.pt"

    def _save_checkpoint(self, state: dict, scheduler) -> None:
        save_weights(self.model, self.run_dir / "last.safetensors")
        blob = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        atomic_write(self._state_path, lambda tmp: torch.save(blob, tmp))
        write_json_atomic(self.run_dir / "trainer_state.json", state, indent=1)

    def _load_checkpoint(self, scheduler) -> dict | None:
        meta = self.run_dir / "trainer_state.json"
        if not (meta.exists() and self._state_path.exists() and (self.run_dir / "last.safetensors").exists()):
            return None
        state = json.loads(meta.read_text())
        if state.get("fingerprint", "") != self.fingerprint:
            log.warning("%s: checkpoint in %s is from another config or data; starting fresh", self.desc, self.run_dir)
            return None
        load_weights(self.model, self.run_dir / "last.safetensors")
        blob = torch.load(self._state_path, weights_only=True)
        self.optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        self.scaler.load_state_dict(blob["scaler"])
        torch.set_rng_state(blob["torch_rng"])
        log.info("%s: resuming at step %d (epoch %d, batch %d)", self.desc, state["step"], state["epoch"], state["batch"])
        return state

    # --- loop --------------------------------------------------------------------------

    def train_step(self, step_fn: Callable[[nn.Module, dict], torch.Tensor], batch: dict) -> torch.Tensor:
        """One optimisation step on ``batch`` (autocast, backward, clipping, AdamW); the loss, detached."""
        self.model.train()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = step_fn(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

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
        cfg = self.cfg
        n_batches = math.ceil(len(train) / cfg.batch_size)
        total = n_batches * cfg.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.schedule, total, int(cfg.warmup_ratio * total))
        )
        eval_points = {round(n_batches * (i + 1) / cfg.evals_per_epoch) for i in range(cfg.evals_per_epoch)}
        lengths = train.lengths() if cfg.group_by_length else None  # None without text
        sign = 1.0 if mode == "max" else -1.0
        state = {"step": 0, "epoch": 0, "batch": 0, "best": None, "best_step": -1, "bad_evals": 0,
                 "history": [], "stopped": False, "seconds": 0.0, "fingerprint": self.fingerprint,
                 "losses_first": [], "losses_last": []}
        if resume and (loaded := self._load_checkpoint(scheduler)):
            state = loaded
        best_path = self.run_dir / "best.safetensors"
        started = time.perf_counter() - state["seconds"]
        samples = 0
        self.model.to(self.device)
        bar = tqdm(total=total, initial=state["step"], desc=self.desc, unit="step", mininterval=2.0, dynamic_ncols=True)
        try:
            while state["epoch"] < cfg.epochs and not state["stopped"]:
                batches = batch_order(len(train), cfg.batch_size, shuffle=True, seed=self.seed * 1000 + state["epoch"],
                                      lengths=lengths)
                for b in range(state["batch"], n_batches):
                    loss = self.train_step(step_fn, batch_at(train, batches[b], self.device))
                    scheduler.step()
                    state["step"] += 1
                    state["batch"] = b + 1
                    if len(state["losses_first"]) < 10:
                        state["losses_first"].append(loss.item())
                    state["losses_last"] = (state["losses_last"] + [loss.item()])[-10:]
                    samples += len(batches[b])
                    elapsed = time.perf_counter() - started
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.4f}", samples_s=f"{samples / max(elapsed, 1e-9):.0f}", refresh=False)
                    if eval_fn is not None and (b + 1) in eval_points:
                        metrics = eval_fn()
                        metrics.update(step=state["step"], epoch=state["epoch"] + (b + 1) / n_batches, loss=loss.item())
                        state["history"].append(metrics)
                        value = metrics[monitor]
                        log.info("%s step %d: %s", self.desc, state["step"],
                                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
                        if state["best"] is None or sign * value > sign * state["best"]:
                            state.update(best=value, best_step=state["step"], bad_evals=0)
                            save_weights(self.model, best_path)
                        else:
                            state["bad_evals"] += 1
                            if state["bad_evals"] >= cfg.patience * cfg.evals_per_epoch:
                                state["stopped"] = True
                                log.info("%s: early stop at step %d (best %s=%.4f at step %d)", self.desc,
                                         state["step"], monitor, state["best"], state["best_step"])
                                break
                    if state["step"] % cfg.checkpoint_every == 0:
                        state["seconds"] = time.perf_counter() - started
                        self._save_checkpoint(state, scheduler)
                    if on_step is not None:
                        on_step(state["step"])
                if not state["stopped"]:
                    state["epoch"] += 1
                    state["batch"] = 0
        finally:
            bar.close()
        state["seconds"] = time.perf_counter() - started
        self._save_checkpoint(state, scheduler)
        if eval_fn is None:
            save_weights(self.model, best_path)
        load_weights(self.model, best_path)
        epochs_run = state["epoch"] + state["batch"] / n_batches
        return FitResult(
            train_rows=len(train),
            best_metric=float("nan") if state["best"] is None else state["best"],
            best_step=state["best_step"],
            steps=state["step"],
            epochs_run=epochs_run,
            stopped_early=state["stopped"],
            seconds=round(state["seconds"], 2),
            samples_per_s=round(len(train) * epochs_run / max(state["seconds"], 1e-9), 1),  # validation included
            loss_first=float(np.mean(state["losses_first"])) if state["losses_first"] else float("nan"),
            loss_last=float(np.mean(state["losses_last"])) if state["losses_last"] else float("nan"),
            history=state["history"],
        )


def predict(
    model: nn.Module,
    split: EncodedSplit,
    score_fn: Callable[[nn.Module, dict], torch.Tensor],
    batch_size: int,
    device: torch.device,
    amp: bool = False,
) -> np.ndarray:
    """Probabilities (N,) of ``score_fn`` (returning logits) over a whole split, in order."""
    probs = predict_parts(model, split, lambda m, b: {"p": score_fn(m, b)}, batch_size, device, amp)
    return probs.get("p", np.zeros(0, dtype=np.float32))


@torch.no_grad()
def predict_parts(
    model: nn.Module,
    split: EncodedSplit,
    parts_fn: Callable[[nn.Module, dict], dict[str, torch.Tensor]],
    batch_size: int,
    device: torch.device,
    amp: bool = False,
) -> dict[str, np.ndarray]:
    """Probabilities (N,) of each logit ``parts_fn`` returns by name (one forward pass per batch)."""
    model.eval()
    model.to(device)
    dtype = amp_dtype(device, amp)
    out: dict[str, torch.Tensor] = {}
    for index in eval_batches(split, batch_size):
        batch = batch_at(split, index, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            for name, logit in parts_fn(model, batch).items():
                out.setdefault(name, torch.zeros(len(split), dtype=torch.float32))[index] = torch.sigmoid(logit.float()).cpu()
    return {name: p.numpy() for name, p in out.items()}


def eval_batches(split: EncodedSplit, batch_size: int) -> list[torch.Tensor]:
    """Index batches covering ``split`` once; with text, rows sorted by token length so each batch
    is trimmed to little padding (scores are written back by index, so the order is unchanged)."""
    lengths = split.lengths()
    order = torch.arange(len(split)) if lengths is None else torch.argsort(lengths, stable=True)
    return list(order.split(batch_size))


def result_dict(result: FitResult) -> dict:
    return asdict(result)
