"""What training and serving share to run a model: seeding, the device, mixed precision, weights
on disk (safetensors, written atomically) and batched prediction over an encoded split."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import random
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_model, save_file
from torch import nn

from core.io import atomic_write
from models.data import EncodedSplit, batch_at, eval_batches

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


def amp_dtype(device: torch.device, amp: bool | str) -> torch.dtype | None:
    """The autocast dtype of ``TrainConfig.amp`` on ``device``; None runs float32.

    ``True``: on CUDA bf16 where the GPU supports it, else fp16 (with a grad scaler); float32 elsewhere.
    ``"bf16"``: bf16 on any device, the CPU included - it pays only on a CPU with native bf16 (AVX512-BF16,
    AMX), so elsewhere it warns. ``False``: float32.
    """
    if amp == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("amp=bf16: this GPU has no bf16; use amp=true (fp16 with a grad scaler) instead")
        if device.type == "cpu" and not cpu_has_native_bf16():
            log.warning("amp=bf16 on a CPU without native bf16 (no AVX512-BF16 or AMX): expect it many times "
                        "slower than float32; use amp=true on CPU")
        return torch.bfloat16
    if amp is not True and amp is not False:
        raise ValueError(f"amp={amp!r}: expected true, false or bf16")
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


HEAP_ENV = "CLICKPROMPT_HEAP_MMAP_MB"  # a fixed glibc mmap threshold for CPU training, in MiB; unset / 0: glibc's own
_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)


def bound_cpu_heap() -> int | None:
    """With ``$CLICKPROMPT_HEAP_MMAP_MB`` set (e.g. 4), fix glibc's mmap threshold there, so that CPU
    tensors above it are mapped and go back to the system when freed; returns the threshold set, in bytes.

    glibc's own threshold rises to the largest block freed (up to 32 MiB), so after the first steps an
    LM's activations come from the heap, and batches of varying length leave it fragmented: a
    minilm-l6 suite process grew from 4 to 9 GB resident over one PA-MLM epoch and higher run after
    run. Bounded at 4 MiB (``benchmarks/bench_memory.py``, minilm-l6 PA-MLM on 2 cores) the peak is
    0.60x but every mapped block is faulted in afresh, and PA-MLM ran 0.67x as fast: a choice for a
    machine short of memory, not the default. None where it does not apply: unset or 0, not glibc,
    or ``MALLOC_MMAP_THRESHOLD_`` already chosen by the user (glibc reads it at start-up)."""
    mb = os.environ.get(HEAP_ENV, "0")
    try:
        size = int(float(mb) * 2**20)
    except (ValueError, OverflowError):
        size = -1
    if not 0 <= size < 2**31:  # mallopt takes an int
        raise ValueError(f"${HEAP_ENV}={mb!r}: expected a number of MiB from 0 (glibc's own threshold) "
                         f"to 2047, e.g. 4")
    if size == 0 or not sys.platform.startswith("linux"):
        return None
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        log.warning("$%s=%s not applied: MALLOC_MMAP_THRESHOLD_ sets glibc's threshold already", HEAP_ENV, mb)
        return None
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        log.warning("$%s=%s not applied: this C library is not glibc", HEAP_ENV, mb)
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return size if mallopt(_M_MMAP_THRESHOLD, size) == 1 else None


def save_weights(model: nn.Module, path: Path) -> None:
    """safetensors, written atomically (a crash never leaves half a file), the same bytes for the same
    weights: a run's fingerprints and a bundle's digests name weights, not the process that wrote them.

    Tied tensors (an LM's word embeddings and MLM decoder) are stored once under the first name in
    sorted order, as ``safetensors.torch.save_model`` does; ``load_weights`` fills the kept name and
    the model's own tie gives the other its values. The names dropped go in a single metadata entry:
    safetensors writes its metadata map in a per-process random order, so more than one entry would
    give other bytes on every save.
    """
    state = model.state_dict()
    tied = tied_names(state)
    tensors = {k: v.contiguous() for k, v in state.items() if k not in tied}
    metadata = {"tied": json.dumps(tied, sort_keys=True)} if tied else None
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def tied_names(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """{name dropped: name kept} for the tensors of ``state`` that share one storage; the kept name
    is the first in sorted order of those covering the whole storage."""
    groups: dict[tuple, list[str]] = {}
    for name, t in state.items():
        storage = t.untyped_storage()
        if t.device.type != "meta" and storage.nbytes():
            groups.setdefault((t.device, storage.data_ptr(), storage.nbytes()), []).append(name)
    tied: dict[str, str] = {}
    for names in groups.values():  # a lone slice of a larger storage is refused too, as safetensors does
        whole = sorted(n for n in names if state[n].data_ptr() == state[n].untyped_storage().data_ptr()
                       and state[n].nbytes == state[n].untyped_storage().nbytes())
        if not whole:
            raise RuntimeError(f"{sorted(names)}: no tensor covers its whole storage (a slice of a larger tensor); "
                               "save a copy (.clone()) instead")
        tied.update({n: whole[0] for n in names if n != whole[0]})
    return tied


def load_weights(model: nn.Module, path: Path, strict: bool = True) -> None:
    missing, unexpected = load_model(model, str(path), strict=strict)
    if missing or unexpected:
        log.warning("%s: missing %s, unexpected %s", path.name, missing, unexpected)


def predict(
    model: nn.Module,
    split: EncodedSplit,
    score_fn: Callable[[nn.Module, dict], torch.Tensor],
    batch_size: int,
    device: torch.device,
    amp: bool | str = False,
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
    amp: bool | str = False,
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
