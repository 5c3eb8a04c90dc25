"""Data-parallel training under torchrun: this process's place in the job and the few collectives
the trainer needs.

torchrun starts one process per device and tells each where it stands through the environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). ``init()`` reads it
once. With ``WORLD_SIZE`` unset or 1 the process trains alone, exactly as without torchrun: no
process group, and every helper here returns its input untouched. Otherwise it joins the process
group (NCCL on GPUs, one per local rank; gloo on CPUs) and the trainer goes data-parallel.

Rank 0 is the main process: it alone reads and writes the run folder, evaluates, logs progress;
the other ranks get what they need from it by broadcast (checkpoint state, metrics, the best
weights), so every rank takes the same decisions (early stopping, best step) from the same
numbers. A global batch is the config's batch size whatever the world size; each rank trains on
its strided share of it (``shard``), so N ranks together see exactly the rows one process would.

``clickprompt train`` under torchrun: rank 0 runs the Prefect pipeline as usual inside
``leading()``; each training stage it reaches is ``announce``d to the other ranks, which wait in
``next_job()`` (``models.train.run.follow_training``) and train it alongside.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

log = logging.getLogger("clickprompt.distributed")

# Rank 0 evaluates, scores the test split and (under the CLI) ingests and builds features while
# the other ranks wait in a collective: far longer than torch's 10-30 minute default on CPUs.
TIMEOUT = timedelta(hours=4)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; ``Dist()`` is a process training alone."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device | None = None  # the rank's device (cuda:LOCAL_RANK on GPUs); None alone: the config's

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_current = Dist()
_leading = False  # rank 0 of a CLI run: the other ranks wait in next_job() for each training stage


def from_env(environ: Mapping[str, str] | None = None) -> Dist:
    """The place torchrun's variables describe (nothing is started); ``Dist()`` without them."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: launch with torchrun")
    rank = int(env["RANK"])
    local_rank = int(env.get("LOCAL_RANK", rank))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    return Dist(world, rank, local_rank, device)


def init() -> Dist:
    """Join torchrun's process group (once per process) and make it the current place.

    On CPUs each rank gets its share of the cores as torch threads (torch would otherwise start
    one thread per core in every rank, and the ranks fight over them); on GPUs each rank uses
    cuda:LOCAL_RANK.
    """
    global _current
    place = from_env()
    if not place.enabled or dist.is_initialized():  # alone, or joined already (a second init is a no-op)
        _current = place
        return place
    if place.device.type == "cuda":
        torch.cuda.set_device(place.device)
    else:
        torch.set_num_threads(_threads_per_rank())
    dist.init_process_group(backend="nccl" if place.device.type == "cuda" else "gloo", timeout=TIMEOUT)
    _current = place
    log.info("rank %d of %d on %s (%s)", place.rank, place.world, place.device, dist.get_backend())
    return place


def _threads_per_rank() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cores // max(1, local_world))


def current() -> Dist:
    """The place ``init()`` found (``Dist()`` before it, or without torchrun)."""
    return _current


def teardown() -> None:
    """Leave the process group; the process trains alone afterwards."""
    global _current, _leading
    if dist.is_initialized():
        dist.destroy_process_group()
    _current, _leading = Dist(), False


# --- collectives (each returns its input unchanged in a process alone) ----------------------------


def barrier() -> None:
    if _current.enabled:
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable value; the others pass anything, e.g. None)."""
    if not _current.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not _current.enabled:
        return [obj]
    out: list[Any] = [None] * _current.world
    dist.all_gather_object(out, obj)
    return out


def global_mean(value: Tensor, weight: float = 1.0) -> Tensor:
    """The mean over the global batch of a per-rank mean ``value`` weighted as in ``shard``:
    sum over ranks of ``weight * value`` / world (equal shares: the plain mean of the ranks')."""
    if not _current.enabled:
        return value
    total = (value.detach().float() * weight).reshape(1)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total[0] / _current.world


def broadcast_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers copied into every rank's ``module`` (same architecture)."""
    if not _current.enabled:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():  # views of the module's own storage
            dist.broadcast(tensor, src=0)


# --- the global batch ---------------------------------------------------------------------------


def check_batch_size(batch_size: int) -> None:
    """A global batch splits into equal shares: the config's batch size must divide by the world."""
    if batch_size % _current.world:
        raise ValueError(f"batch size {batch_size} does not divide by the {_current.world} training processes: "
                         f"set a multiple of {_current.world} (the batch size is the global one, split across ranks)")


def shard(index: Tensor) -> tuple[Tensor, float]:
    """This rank's rows of one global batch and the weight of its loss.

    Rows are dealt out strided (``index[rank::world]``, as DistributedSampler does), so a batch of
    rows grouped by token length gives every rank rows of the same lengths. DDP averages the
    ranks' gradients; a rank's loss (a mean over its rows) is weighted by ``world * rows / batch
    rows``, so that average is the gradient of the mean over the whole global batch even when the
    last, short batch splits unevenly. A rank left without rows trains on one row with weight 0
    (every rank must take part in each gradient all-reduce).
    """
    if not _current.enabled:
        return index, 1.0
    mine = index[_current.rank :: _current.world]
    if len(mine) == 0:
        return index[:1], 0.0
    return mine, _current.world * len(mine) / len(index)


# --- rank 0 leads the CLI's pipeline -----------------------------------------------------------


@contextmanager
def leading() -> Iterator[None]:
    """Rank 0 of ``clickprompt train`` under torchrun: every training run started inside is
    announced to the other ranks; leaving the block normally releases them. On an error rank 0
    just raises (torchrun then stops the other ranks: they may be inside a collective)."""
    global _leading
    if not (_current.enabled and _current.is_main):
        yield
        return
    _leading = True
    try:
        yield
    finally:
        _leading = False
    broadcast_object(None)


def announce(job: Any) -> None:
    """Rank 0 inside ``leading()``: send ``job`` (a training run's arguments) to the waiting ranks."""
    if _leading:
        broadcast_object(job)


def next_job() -> Any:
    """A waiting rank: the next job rank 0 announces, None when rank 0 has finished."""
    return broadcast_object(None)
