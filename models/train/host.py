"""The trainer's host-side bookkeeping, kept off a GPU step's critical path: the step losses read
back in one synchronisation every ``log_every`` steps (``LossLog``), ``torch.compile`` of the
LM encoders (``StageConfig.compile``, measured by ``benchmarks/bench_training_cost.py``), and
AdamW's parameter groups (``StageConfig.no_decay``)."""

from __future__ import annotations

import torch
from torch import nn

NO_DECAY_MODULES = (nn.LayerNorm, nn.Embedding, nn.EmbeddingBag, nn.modules.batchnorm._BatchNorm)


def no_decay_params(model: nn.Module) -> set[int]:
    """ids of the parameters AdamW should not decay (``StageConfig.no_decay``): every bias, and the
    weights of LayerNorm / BatchNorm and embedding tables (an LM's tied decoder is its embedding)."""
    out = {id(p) for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "bias"}
    for module in model.modules():
        if isinstance(module, NO_DECAY_MODULES):
            out |= {id(p) for p in module.parameters(recurse=False)}
    return out


def optimizer_groups(model: nn.Module, param_groups: dict[str, list[nn.Parameter]], lr_lm: float, lr_ctr: float,
                     no_decay: bool) -> list[dict]:
    """AdamW's groups: each named group's trainable parameters ("plm" at ``lr_lm``, the others at
    ``lr_ctr``); with ``no_decay`` its biases, norms and embeddings in a ``<name>/no_decay`` group
    with weight decay 0 (without, exactly the named groups)."""
    skip = no_decay_params(model) if no_decay else set()
    groups = []
    for name, params in param_groups.items():
        lr, trainable = lr_lm if name == "plm" else lr_ctr, [p for p in params if p.requires_grad]
        groups.append({"params": [p for p in trainable if id(p) not in skip], "lr": lr, "name": name})
        groups.append({"params": [p for p in trainable if id(p) in skip], "lr": lr, "name": f"{name}/no_decay",
                       "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


class LossLog:
    """The step losses kept on the device and read back every ``every`` steps in one synchronisation
    (and before a validation, a checkpoint and the end): the first and last 10 into ``state``, the
    progress bar's loss and rate."""

    def __init__(self, state: dict, every: int, bar) -> None:
        self.state, self.every, self.bar, self.pending = state, every, bar, []

    def add(self, loss: torch.Tensor, samples: int, elapsed: float) -> None:
        self.pending.append(loss.detach().float())
        if len(self.pending) >= self.every:
            self.flush(samples, elapsed)

    def flush(self, samples: int = 0, elapsed: float = 0.0) -> None:
        if not self.pending:
            return
        values = torch.stack(self.pending).tolist()
        self.pending = []
        first, last = self.state["losses_first"], self.state["losses_last"]
        first += values[: max(0, 10 - len(first))]
        self.state["losses_last"] = (last + values)[-10:]
        self.bar.set_postfix(loss=f"{values[-1]:.4f}", samples_s=f"{samples / max(elapsed, 1e-9):.0f}", refresh=False)


def compile_lm_encoders(model: nn.Module) -> int:
    """``torch.compile`` (dynamic shapes: batches are trimmed to their longest row) of every LM
    encoder in ``model``, in place, so weights keep their names; how many were compiled."""
    from transformers import PreTrainedModel

    # a *ForMaskedLM and its base model are both PreTrainedModels: each encoder once
    encoders = list({id(m.base_model.encoder): m.base_model.encoder for m in model.modules()
                     if isinstance(m, PreTrainedModel)}.values())
    for encoder in encoders:
        encoder.compile(dynamic=True)
    return len(encoders)
