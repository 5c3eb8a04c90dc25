"""Training cost of every stage, measured in one process: FLOPs per sample (counted by torch's
``FlopCounterMode`` on the very batches that are timed), achieved samples/s of the trainer's own
step (``Trainer.train_step``: autocast, backward, clipping, AdamW), and the GEMM rate of the
device the model runs on as the ceiling (``benchmarks.ceiling``: a bf16 matmul on CUDA, a float32
one on the CPU, same threads), named in the output; utilisation = achieved FLOP/s / ceiling.
FlopCounterMode counts matrix products (mm, addmm, bmm, attention), not element-wise work, so utilisation says how much of the time the matrix units are fed.

A shared 2-core VM's speed drifts (the GEMM rate was seen at 75 and at 175 GFLOP/s in one run),
so every timing round measures the GEMM ceiling right before the arms it compares, runs the arms
in turn (A B A B ...), and each figure is the median over rounds of its per-round value.

Each choice that could cut waste is measured side by side on the same batches: the restricted
MLM decoder against the full vocabulary, length-grouped against random batches, 1 thread against
all, bf16 autocast against float32 on the CPU (speed and the loss of the same steps from the same
weights), ``torch.compile`` of the LM encoder (compile time, steady speed, the rows after which
it would pay).
"""

from __future__ import annotations

import copy
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.ceiling import Ceiling, gemm_rate, peak_memory_mb, reset_peak_memory
from models.data import batch_at, batch_order
from models.train.host import compile_lm_encoders
from models.train.prepare import RunContext
from models.train.setups import SETUPS, StageSetup
from models.train.stages import ALIGNMENT_METHODS, STAGES, TEXT_STAGES, Stage
from models.train.trainer import Trainer

log = logging.getLogger("clickprompt.bench")


@dataclass
class Measured:
    stage: str
    choice: str  # what this row measures, e.g. "decoder: full vocabulary"
    flops_per_sample: float  # counted: forward + backward of the timed batches
    samples_per_s: float  # median over rounds
    ceiling: float  # FLOP/s of the model's device's GEMM (``Ceiling.of``), median of the rounds'
    utilisation: float  # median over rounds of achieved FLOP/s / that round's ceiling
    rows: int  # samples timed per round
    batch_size: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        return {"stage": self.stage, "choice": self.choice, "mflop_per_sample": self.flops_per_sample / 1e6,
                "samples_per_s": self.samples_per_s,
                "achieved_gflop_s": self.flops_per_sample * self.samples_per_s / 1e9,
                "ceiling_gflop_s": self.ceiling / 1e9, "utilisation": self.utilisation, "rows": self.rows,
                "batch_size": self.batch_size, "note": self.note}


class _NoCheckpointWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("no PA-MLM checkpoint")


_NO_CHECKPOINT_WARNING = _NoCheckpointWarning()


class StageBench:
    """One stage's model and trainer step over a fixed list of batches (the stage's own batch size)."""

    def __init__(self, ctx: RunContext, stage: str, n_batches: int, grouped: bool, workdir: Path) -> None:
        self.ctx, self.stage = ctx, stage
        # a timing's own folder has no PA-MLM checkpoint: the stage's warning that it starts from the
        # plain PLM would read, in a benchmark's log, as if the benchmarked run had none
        train_log = logging.getLogger("clickprompt.train")
        train_log.addFilter(_NO_CHECKPOINT_WARNING)
        try:
            self.setup: StageSetup = SETUPS[stage](ctx)
        finally:
            train_log.removeFilter(_NO_CHECKPOINT_WARNING)
        sc = self.setup.stage_cfg
        self.trainer = Trainer(self.setup.model, sc, self.setup.param_groups, workdir / stage, ctx.device, ctx.cfg.amp,
                               ctx.cfg.seed, desc=f"cost-{stage}")
        self.setup.model.to(ctx.device)
        train = ctx.splits["train"]
        lengths = train.lengths() if grouped else None
        # the stage's batch size; smaller on a training split too small for a warm-up and timed batches
        self.batch_size = max(1, min(sc.batch_size, len(train) // (n_batches + 1)))
        order = batch_order(len(train), self.batch_size, shuffle=True, seed=0, lengths=lengths)
        self.batches = [batch_at(train, idx, ctx.device) for idx in order[: n_batches + 1]]
        self.rows = sum(len(b["label"]) for b in self.batches[1:])
        self.step(self.batches[0])  # warm-up: AdamW state allocated, kernels chosen
        self.flops = self.count_flops()

    def step(self, batch: dict) -> torch.Tensor:
        """One trainer step; the loss stays on the device (no synchronisation per step)."""
        return self.trainer.train_step(self.setup.step_fn, batch)

    def count_flops(self) -> float:
        """Counted forward + backward FLOPs of the timed batches, per sample (weights unchanged)."""
        model = self.setup.model
        with FlopCounterMode(display=False) as counter:
            for batch in self.batches[1:]:
                self.setup.step_fn(model.train(), batch).backward()
        model.zero_grad(set_to_none=True)
        return counter.get_total_flops() / self.rows

    def seconds(self) -> float:
        sync(self.ctx.device)
        t = time.perf_counter()
        for batch in self.batches[1:]:
            self.step(batch)
        sync(self.ctx.device)
        return time.perf_counter() - t


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def side_by_side(arms: dict[str, tuple[StageBench, Callable[[], float] | None]], rounds: int,
                 notes: dict[str, str] | None = None) -> list[Measured]:
    """Each arm (a bench, and how to time it: default ``bench.seconds``) timed in turn per round,
    each round after a fresh GEMM ceiling measurement; a row per arm of medians over rounds."""
    secs: dict[str, list[float]] = {k: [] for k in arms}
    ceilings: list[float] = []
    first = next(iter(arms.values()))[0].ctx
    ceiling = Ceiling.of(first.device, first.cfg.amp)
    for _ in range(rounds):
        ceilings.append(ceiling.rate())
        for name, (bench, timer) in arms.items():
            secs[name].append((timer or bench.seconds)())
    rows = []
    for name, (bench, _) in arms.items():
        util = statistics.median(bench.flops * bench.rows / s / c for s, c in zip(secs[name], ceilings))
        rows.append(Measured(bench.stage, name, bench.flops, statistics.median(bench.rows / s for s in secs[name]),
                             statistics.median(ceilings), util, bench.rows, bench.batch_size,
                             (notes or {}).get(name, "")))
    return rows


def measure_costs(ctx: RunContext, stages: list[str], n_batches: int = 10, rounds: int = 3,
                  choices: bool = True) -> dict:
    """The cost table of ``stages`` (as configured: restricted decoder, grouped batches), and with
    ``choices`` the side-by-side measurements of each choice. Returns a JSON-able dict."""
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    out: dict = {"threads": torch.get_num_threads(), "device": str(ctx.device), "ceiling": Ceiling.of(ctx.device, ctx.cfg.amp).name,
                 "rows": [], "choices": {}}
    with tempfile.TemporaryDirectory(prefix="cost-") as tmp:
        work = Path(tmp)
        for stage in stages:
            grouped = stage in TEXT_STAGES and ctx.splits["train"].input_ids is not None
            reset_peak_memory(ctx.device)
            bench = StageBench(ctx, stage, n_batches, grouped, work)
            row = side_by_side({"as configured": (bench, None)}, rounds)[0]
            peak, what = peak_memory_mb(ctx.device)
            row.note = f"{what} {peak:,.0f} MiB"
            out["rows"].append({**row.to_dict(), "peak_memory_mb": peak})
            log.info("cost %s: %.1f MFLOP/sample, %.0f samples/s, utilisation %.2f (GEMM %.0f GFLOP/s)", stage,
                     row.flops_per_sample / 1e6, row.samples_per_s, row.utilisation, row.ceiling / 1e9)
            if choices and stage in TEXT_STAGES:
                out["choices"][stage] = [r.to_dict() for r in measure_choices(ctx, stage, bench, n_batches, rounds,
                                                                              work)]
    ceilings = [r["ceiling_gflop_s"] for r in out["rows"]]
    out["gemm_gflop_s"] = statistics.median(ceilings) if ceilings else Ceiling.of(ctx.device, ctx.cfg.amp).rate() / 1e9
    out["gemm_gflop_s_range"] = [min(ceilings), max(ceilings)] if ceilings else []
    return out


def measure_choices(ctx: RunContext, stage: str, bench: StageBench, n_batches: int, rounds: int,
                    work: Path) -> list[Measured]:
    """Each waste-cutting choice against its alternative, same process, alternating."""
    rows: list[Measured] = []
    # padding: random batches, trimmed to each batch's longest row, against length-grouped ones
    random = StageBench(ctx, stage, n_batches, grouped=False, workdir=work / "random")
    rows += side_by_side({"length-grouped batches": (bench, None), "random batches": (random, None)}, rounds)
    del random
    vocab = ctx.decoder_vocab
    if stage == Stage.PRETRAIN and ctx.cfg.method not in ALIGNMENT_METHODS and vocab is not None:
        full_ctx = copy.copy(ctx)
        full_ctx.decoder_vocab = None
        full = StageBench(full_ctx, stage, n_batches, grouped=True, workdir=work / "full")
        rows += side_by_side({"decoder: training-text ids": (bench, None), "decoder: full vocabulary": (full, None)},
                             rounds, {"decoder: training-text ids": f"{len(vocab):,} of {vocab.vocab_size:,} ids"})
        del full
    threads = torch.get_num_threads()
    if threads > 1:
        def one_thread() -> float:
            torch.set_num_threads(1)
            try:
                return bench.seconds()
            finally:
                torch.set_num_threads(threads)

        rows += side_by_side({f"{threads} threads": (bench, None), "1 thread": (bench, one_thread)}, rounds)
    if ctx.device.type == "cpu":
        rows.append(_bf16_choice(bench))
    rows.append(_compile_choice(ctx, stage, bench, n_batches, rounds, work))
    return rows


def _bf16_choice(bench: StageBench, steps: int = 4) -> Measured:
    """bf16 autocast on the CPU against float32: speed over ``steps`` steps from the same weights and
    optimizer state, and how far the losses of those steps differ."""
    model, trainer = bench.setup.model, bench.trainer
    configured = trainer.amp_dtype  # float32 by default on the CPU, bf16 with amp=bf16
    start = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(trainer.optimizer.state_dict())
    batches = bench.batches[1: steps + 1]

    def run(dtype: torch.dtype | None) -> tuple[float, list[float]]:
        model.load_state_dict(start)
        trainer.optimizer.load_state_dict(opt_state)
        trainer.amp_dtype = dtype  # the trainer's own autocast
        t = time.perf_counter()
        losses = [float(bench.step(b)) for b in batches]
        return time.perf_counter() - t, losses

    ceiling = gemm_rate()
    fp32_s, fp32_loss = run(None)
    bf16_s, bf16_loss = run(torch.bfloat16)
    model.load_state_dict(start)
    trainer.optimizer.load_state_dict(opt_state)
    trainer.amp_dtype = configured  # the choices after this one time the stage as configured
    rows = sum(len(b["label"]) for b in batches)
    diff = max(abs(a - b) / max(abs(a), 1e-9) for a, b in zip(fp32_loss, bf16_loss))
    bf16_gemm = gemm_rate(n=1024, dtype=torch.bfloat16, reps=1)
    achieved = bench.flops * rows / bf16_s
    return Measured(bench.stage, "bf16 autocast (CPU)", bench.flops, rows / bf16_s, ceiling, achieved / ceiling, rows,
                    bench.batch_size, f"{fp32_s / bf16_s:.2f}x float32's speed; loss differs by up to {diff:.1%} over "
                    f"{len(batches)} steps; this CPU's bf16 GEMM {bf16_gemm / 1e9:.2f} GFLOP/s")


def _compile_choice(ctx: RunContext, stage: str, bench: StageBench, n_batches: int, rounds: int,
                    work: Path) -> Measured:
    """``torch.compile`` of the LM encoder (``StageConfig.compile``, in place): the first steps
    with compilation, then the steady speed against eager (alternating); pays after
    ``compile seconds / (eager - compiled seconds per row)`` rows."""
    torch._dynamo.reset()  # no compiled code carried over from another stage
    compiled = StageBench(ctx, stage, n_batches, grouped=True, workdir=work / "compiled")
    compile_lm_encoders(compiled.setup.model)  # what a stage's ``compile: true`` does
    t = time.perf_counter()
    try:
        for batch in compiled.batches[1:3]:  # compiles (and recompiles for a second length)
            compiled.step(batch)
    except Exception as exc:  # noqa: BLE001 - a backend that cannot compile here is a result, not a crash
        return Measured(stage, "torch.compile (LM encoder)", bench.flops, float("nan"), float("nan"), float("nan"), 0,
                        note=f"failed: {type(exc).__name__}: {str(exc)[:120]}")
    compile_s = time.perf_counter() - t
    eager, comp = side_by_side({"eager": (bench, None), "compiled": (compiled, None)}, rounds)
    torch._dynamo.reset()
    gain_per_row = 1 / eager.samples_per_s - 1 / comp.samples_per_s
    pays = f"pays after {compile_s / gain_per_row:,.0f} rows" if gain_per_row > 0 else "never pays (slower)"
    comp.choice = "torch.compile (LM encoder)"
    comp.note = (f"first 2 steps {compile_s:.0f} s with compilation; {comp.samples_per_s / eager.samples_per_s:.2f}x "
                 f"eager's samples/s; {pays}")
    return comp


def cost_table(result: dict) -> str:
    """The measurements as a Markdown table."""
    lo, hi = result.get("gemm_gflop_s_range") or [result["gemm_gflop_s"]] * 2
    shape = f"; LM: {result['plm_shape']}" if result.get("plm_shape") else ""
    lines = [f"Ceiling: {result['ceiling']}, measured in every timing round: median {result['gemm_gflop_s']:.1f} "
             f"GFLOP/s ({lo:.1f}-{hi:.1f} across stages){shape}", "",
             "| stage | measured | MFLOP/sample | samples/s | achieved GFLOP/s | ceiling GFLOP/s | utilisation (MFU) | note |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [*result["rows"], *(r for rs in result["choices"].values() for r in rs)]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['choice']} | {r['mflop_per_sample']:.1f} | {r['samples_per_s']:.1f} | "
                     f"{r['achieved_gflop_s']:.1f} | {r['ceiling_gflop_s']:.1f} | {r['utilisation']:.2f} | "
                     f"{r['note']} |")
    return "\n".join(lines)
