"""What the training-cost benchmark measures against, and what it times at other shapes.

- ``Ceiling``: the GEMM of the device the model runs on, in the dtype its matrix units are fed
  (the trainer's autocast dtype: bf16 on CUDA, float32 on the CPU unless amp=bf16), timed on that device. A CPU
  matmul as the ceiling of a CUDA model says nothing (it once printed "utilisation 4.10").
- ``peak_memory_mb``: ``torch.cuda.max_memory_allocated`` on CUDA, the process's peak RSS on the CPU.
- ``random_plm``: a masked LM of a named shape (``bert-base``: 12 layers x 768) or ``<layers>x<hidden>``,
  built from a transformers config with random weights and saved with the run's tokenizer, so a
  step can be timed at the paper's shape without downloading weights (they do not change a step's
  cost).
"""

from __future__ import annotations

import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

# name -> (layers, hidden, heads, intermediate)
PLM_SHAPES: dict[str, tuple[int, int, int, int]] = {
    "bert-base": (12, 768, 12, 3072),
    "bert-large": (24, 1024, 16, 4096),
    "minilm-l6": (6, 384, 12, 1536),
}


@dataclass(frozen=True)
class Ceiling:
    device: str  # e.g. "cuda:0", "cpu"
    dtype: torch.dtype
    n: int  # n x n x n matmul

    @classmethod
    def of(cls, device: torch.device | str, amp: bool | str = True) -> "Ceiling":
        """The ceiling of a model on ``device`` trained with ``TrainConfig.amp``: a GEMM in the dtype the
        trainer autocasts to (``models.runtime.amp_dtype``; float32 without autocast), 8192^3 on CUDA,
        2048^3 on the CPU - by default bf16 on CUDA and float32 on the CPU; bf16 on the CPU with amp=bf16."""
        from models.runtime import amp_dtype

        device = torch.device(device)
        dtype = amp_dtype(device, amp) or torch.float32
        if device.type == "cuda":
            index = torch.cuda.current_device() if device.index is None else device.index
            return cls(f"cuda:{index}", dtype, 8192)
        return cls(device.type, dtype, 2048)

    @property
    def name(self) -> str:
        threads = f", {torch.get_num_threads()} threads" if self.device == "cpu" else ""
        return f"{self.n}^3 {str(self.dtype).removeprefix('torch.')} GEMM on {self.device}{threads}"

    def rate(self, reps: int = 4) -> float:
        """FLOP/s of this GEMM now (best of ``reps`` after a warm-up)."""
        return gemm_rate(self.n, self.dtype, reps, self.device)


def gemm_rate(n: int = 2048, dtype: torch.dtype = torch.float32, reps: int = 4,
              device: torch.device | str = "cpu") -> float:
    """FLOP/s of an n x n x n matmul on ``device``, now (best of ``reps`` after a warm-up; on CUDA
    each timing covers 4 matmuls between synchronisations)."""
    device = torch.device(device)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    inner = 4 if device.type == "cuda" else 1
    _sync(device)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t) / inner)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(MiB, what was measured): CUDA memory allocated at its peak, or this process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "peak CUDA memory allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak RSS of the process"


def parse_shape(shape: str) -> tuple[int, int, int, int]:
    """``bert-base`` (a name in PLM_SHAPES) or ``<layers>x<hidden>`` (heads: hidden / 64, at least 1;
    intermediate: 4 x hidden) -> (layers, hidden, heads, intermediate)."""
    if shape in PLM_SHAPES:
        return PLM_SHAPES[shape]
    m = re.fullmatch(r"(\d+)x(\d+)", shape)
    if not m:
        raise ValueError(f"unknown PLM shape {shape!r}: use one of {sorted(PLM_SHAPES)} or <layers>x<hidden>, "
                         "e.g. 12x768")
    layers, hidden = int(m[1]), int(m[2])
    heads = max(1, hidden // 64)
    if layers < 1 or hidden % heads:
        raise ValueError(f"PLM shape {shape!r}: needs >= 1 layer and a hidden size divisible by {heads} heads")
    return layers, hidden, heads, 4 * hidden


def random_plm(shape: str, tokenizer_source: Path | str, out: Path, max_len: int = 512) -> Path:
    """A masked LM of ``shape`` with random weights and the family of ``tokenizer_source`` (BERT or
    RoBERTa), its vocabulary the tokenizer's, saved with that tokenizer to ``out``; returns ``out``."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    from models.plm import load_tokenizer

    layers, hidden, heads, intermediate = parse_shape(shape)
    tokenizer = load_tokenizer(tokenizer_source)
    base = AutoConfig.from_pretrained(str(tokenizer_source))
    config = type(base)(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate,
                        max_position_embeddings=max(max_len, base.max_position_embeddings),
                        pad_token_id=tokenizer.pad_token_id, type_vocab_size=base.type_vocab_size)
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
