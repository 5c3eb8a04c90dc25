"""A warm-up of a fresh MLM head before pretraining (``pretrain.head_warmup_steps``).

An encoder-only checkpoint (all-MiniLM-L6-v2, ``minilm-l6``) comes without a trained MLM head
transform: pretraining would start by back-propagating a random head's gradients into the
pretrained encoder. The warm-up trains the head alone (its transform and decoder bias; the decoder
weight is the tied word embedding, left frozen with the encoder, prompts and CTR side) for a few
steps on the pretraining rows, then pretraining starts as configured.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from models.data import EncodedSplit, batch_at, batch_order
from models.plm import mlm_parts
from models.runtime import amp_dtype
from models.train.config import PretrainConfig

log = logging.getLogger("clickprompt.train")


def mlm_head_params(plm: nn.Module) -> list[nn.Parameter]:
    """The MLM head's own parameters (not those it shares with the encoder: a tied decoder)."""
    encoder, head = mlm_parts(plm)
    shared = {id(p) for p in encoder.parameters()}
    return [p for p in head.parameters() if id(p) not in shared]


def warm_up_mlm_head(model: nn.Module, step_fn: Callable[[nn.Module, dict], torch.Tensor], rows: EncodedSplit,
                     sc: PretrainConfig, device: torch.device, seed: int, amp: bool | str = True) -> dict:
    """``sc.head_warmup_steps`` AdamW steps (``lr_ctr``, no weight decay) of ``model.plm``'s MLM head
    alone on ``rows``; every other parameter frozen meanwhile. Returns the mean loss of the first and
    last (up to) 10 warm-up steps."""
    params = mlm_head_params(model.plm)
    own = {id(p) for p in params}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in own]
    optimizer = torch.optim.AdamW(params, lr=sc.lr_ctr, weight_decay=0.0)
    dtype = amp_dtype(device, amp)
    order = batch_order(len(rows), sc.batch_size, shuffle=True, seed=seed * 1000 - 1,
                        lengths=rows.lengths() if sc.group_by_length else None)
    losses: list[torch.Tensor] = []
    model.to(device).train()
    for p in frozen:
        p.requires_grad_(False)
    try:
        for i in range(sc.head_warmup_steps):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = step_fn(model, batch_at(rows, order[i % len(order)], device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, sc.grad_clip)
            optimizer.step()
            losses.append(loss.detach().float())
    finally:
        for p in frozen:
            p.requires_grad_(True)
    values = torch.stack(losses).tolist() if losses else []
    out = {"steps": len(values), "loss_first": sum(values[:10]) / max(len(values[:10]), 1),
           "loss_last": sum(values[-10:]) / max(len(values[-10:]), 1)}
    log.info("MLM head warm-up: %d steps, loss %.3f -> %.3f", out["steps"], out["loss_first"], out["loss_last"])
    return out
