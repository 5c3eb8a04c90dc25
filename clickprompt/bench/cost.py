"""Training cost of every stage, measured in one process: FLOPs per sample (counted by torch's
``FlopCounterMode`` on the very batches that are timed), achieved samples/s of the trainer's own
step (``Trainer.train_step``: autocast, backward, clipping, AdamW), and the same process's GEMM
rate (a 2048 x 2048 float32 matmul, same threads) as the ceiling; utilisation = achieved FLOP/s /
ceiling. FlopCounterMode counts matrix products (mm, addmm, bmm, attention), not element-wise
work, so utilisation says how much of the time the matrix units are fed.

Each choice that could cut waste is measured side by side on the same batches, A and B
alternating: the restricted MLM decoder against the full vocabulary, length-grouped against
random batches, 1 thread against all, bf16 autocast against float32 on the CPU (speed and the loss
curve from the same start), ``torch.compile`` of the LM encoder (compile time, steady speed and the
rows after which it would pay).
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

from models.data import batch_at, batch_order
from models.stages import STAGES, TEXT_STAGES, RunContext, SETUPS, StageSetup
from models.trainer import Trainer

log = logging.getLogger("clickprompt.bench")


def gemm_rate(n: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 5, reps: int = 6) -> float:
    """FLOP/s of an n x n x n matmul in this process (median of ``repeats`` timings of ``reps`` products)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        rates.append(2 * n**3 * reps / (time.perf_counter() - t))
    return statistics.median(rates)


@dataclass
class Measured:
    stage: str
    choice: str  # what this row measures, e.g. "decoder=train, grouped"
    flops_per_sample: float  # counted: forward + backward of the timed batches
    samples_per_s: float
    ceiling: float  # FLOP/s of the same process's GEMM (float32 unless the row is bf16)
    rows: int  # samples timed
    note: str = ""

    @property
    def utilisation(self) -> float:
        return self.flops_per_sample * self.samples_per_s / self.ceiling

    def to_dict(self) -> dict:
        return {"stage": self.stage, "choice": self.choice, "mflop_per_sample": self.flops_per_sample / 1e6,
                "samples_per_s": self.samples_per_s, "achieved_gflop_s": self.flops_per_sample * self.samples_per_s / 1e9,
                "ceiling_gflop_s": self.ceiling / 1e9, "utilisation": self.utilisation, "rows": self.rows,
                "note": self.note}


class StageBench:
    """One stage's model and trainer step over a fixed list of batches (the stage's own batch size)."""

    def __init__(self, ctx: RunContext, stage: str, n_batches: int, grouped: bool, workdir: Path) -> None:
        self.ctx, self.stage = ctx, stage
        self.setup: StageSetup = SETUPS[stage](ctx)
        sc = self.setup.stage_cfg
        self.trainer = Trainer(self.setup.model, sc, self.setup.param_groups, workdir / stage, ctx.device, ctx.cfg.amp,
                               ctx.cfg.seed, desc=f"cost-{stage}")
        self.setup.model.to(ctx.device)
        train = ctx.splits["train"]
        lengths = train.lengths() if grouped else None
        order = batch_order(len(train), sc.batch_size, shuffle=True, seed=0, lengths=lengths)
        self.batches = [batch_at(train, idx, ctx.device) for idx in order[: n_batches + 1]]
        self.rows = sum(len(b["label"]) for b in self.batches[1:])
        self.step(self.batches[0])  # warm-up: AdamW state allocated, kernels chosen

    def step(self, batch: dict) -> float:
        return float(self.trainer.train_step(self.setup.step_fn, batch))

    def flops_per_sample(self) -> float:
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


def alternate(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median seconds of each callable, timed in turn ``rounds`` times (A B A B ...): a slow spell
    of the machine hits every arm alike."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name].append(fn())
    return {k: statistics.median(v) for k, v in times.items()}


def measure_costs(ctx: RunContext, stages: list[str], n_batches: int = 10, rounds: int = 3,
                  choices: bool = True) -> dict:
    """The cost table of ``stages`` (as configured: restricted decoder, grouped batches), and with
    ``choices`` the side-by-side measurements of each choice. Returns a JSON-able dict."""
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    ceiling = gemm_rate()
    out: dict = {"threads": torch.get_num_threads(), "device": str(ctx.device),
                 "gemm_fp32_gflop_s": ceiling / 1e9, "rows": [], "choices": {}}
    with tempfile.TemporaryDirectory(prefix="cost-") as tmp:
        work = Path(tmp)
        for stage in stages:
            grouped = stage in TEXT_STAGES and ctx.splits["train"].input_ids is not None
            bench = StageBench(ctx, stage, n_batches, grouped, work)
            flops = bench.flops_per_sample()
            secs = alternate({"run": bench.seconds}, rounds)["run"]
            row = Measured(stage, "as configured", flops, bench.rows / secs, ceiling, bench.rows)
            out["rows"].append(row.to_dict())
            log.info("cost %s: %.1f MFLOP/sample, %.0f samples/s, utilisation %.2f", stage, flops / 1e6,
                     row.samples_per_s, row.utilisation)
            if choices and stage in TEXT_STAGES:
                out["choices"][stage] = measure_choices(ctx, stage, bench, n_batches, rounds, ceiling, work)
        out["gemm_fp32_gflop_s_after"] = gemm_rate() / 1e9  # the machine's state at the end, for comparison
    return out


def measure_choices(ctx: RunContext, stage: str, bench: StageBench, n_batches: int, rounds: int, ceiling: float,
                    work: Path) -> list[dict]:
    """Each waste-cutting choice against its alternative, same process, alternating."""
    rows: list[Measured] = []
    base_flops = bench.flops_per_sample()
    # padding: the same stage with random batches (trimmed to each batch's longest row)
    random_batches = StageBench(ctx, stage, n_batches, grouped=False, workdir=work / "random")
    t = alternate({"grouped": bench.seconds, "random": random_batches.seconds}, rounds)
    rows += [Measured(stage, "length-grouped batches", base_flops, bench.rows / t["grouped"], ceiling, bench.rows),
             Measured(stage, "random batches", random_batches.flops_per_sample(), random_batches.rows / t["random"],
                      ceiling, random_batches.rows)]
    del random_batches
    if stage == "pretrain" and ctx.cfg.method not in ("alt", "ctrl") and ctx.decoder_vocab is not None:
        rows += _decoder_choice(ctx, bench, n_batches, rounds, ceiling, work, base_flops)
    rows += _thread_choice(bench, rounds, ceiling, base_flops)
    rows.append(_bf16_choice(ctx, stage, bench, ceiling))
    rows.append(_compile_choice(ctx, stage, bench, n_batches, ceiling, work, base_flops))
    return [r.to_dict() for r in rows]


def _decoder_choice(ctx, bench, n_batches, rounds, ceiling, work, base_flops) -> list[Measured]:
    vocab, full_ctx = ctx.decoder_vocab, copy.copy(ctx)
    full_ctx.decoder_vocab = None
    full = StageBench(full_ctx, "pretrain", n_batches, grouped=True, workdir=work / "full")
    t = alternate({"train": bench.seconds, "full": full.seconds}, rounds)
    note = f"{len(vocab):,} of {vocab.vocab_size:,} token ids"
    return [Measured("pretrain", "decoder: training-text ids", base_flops, bench.rows / t["train"], ceiling, bench.rows,
                     note),
            Measured("pretrain", "decoder: full vocabulary", full.flops_per_sample(), full.rows / t["full"], ceiling,
                     full.rows)]


def _thread_choice(bench, rounds, ceiling, base_flops) -> list[Measured]:
    threads = torch.get_num_threads()
    if threads < 2:
        return []

    def one_thread() -> float:
        torch.set_num_threads(1)
        try:
            return bench.seconds()
        finally:
            torch.set_num_threads(threads)

    t = alternate({"all": bench.seconds, "one": one_thread}, rounds)
    return [Measured(bench.stage, f"{threads} threads", base_flops, bench.rows / t["all"], ceiling, bench.rows),
            Measured(bench.stage, "1 thread", base_flops, bench.rows / t["one"], ceiling, bench.rows)]


def _bf16_choice(ctx, stage, bench, ceiling) -> Measured:
    """bf16 autocast on the device against float32: speed, and the loss of the same steps from the
    same weights (max relative difference over the timed batches)."""
    device = ctx.device
    if device.type == "cuda":
        return Measured(stage, "bf16 autocast", float("nan"), float("nan"), ceiling, 0, "CUDA: the trainer's AMP setting")
    model = bench.setup.model
    start = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(bench.trainer.optimizer.state_dict())

    def run(bf16: bool) -> tuple[float, list[float]]:
        model.load_state_dict(start)
        bench.trainer.optimizer.load_state_dict(opt_state)
        bench.trainer.amp_dtype = torch.bfloat16 if bf16 else None  # the trainer's own autocast
        losses = []
        t = time.perf_counter()
        for batch in bench.batches[1:]:
            losses.append(bench.step(batch))
        return time.perf_counter() - t, losses

    fp32_s, fp32_loss = run(False)
    bf16_s, bf16_loss = run(True)
    model.load_state_dict(start)
    bench.trainer.optimizer.load_state_dict(opt_state)
    bench.trainer.amp_dtype = None
    diff = max(abs(a - b) / max(abs(a), 1e-9) for a, b in zip(fp32_loss, bf16_loss))
    bf16_ceiling = gemm_rate(dtype=torch.bfloat16, repeats=3, reps=2)
    return Measured(stage, "bf16 autocast (CPU)", bench.flops_per_sample(), bench.rows / bf16_s, bf16_ceiling, bench.rows,
                    f"{fp32_s / bf16_s:.2f}x float32's speed; loss differs by up to {diff:.1%} over "
                    f"{len(fp32_loss)} steps; bf16 GEMM {bf16_ceiling / 1e9:.0f} GFLOP/s")


def _compile_choice(ctx, stage, bench, n_batches, ceiling, work, base_flops) -> Measured:
    """``torch.compile`` of the LM encoder (in place, so weights keep their names): the first step
    with compilation, then steady speed; pays after ``compile seconds / (eager - compiled per row)``."""
    compiled = StageBench(ctx, stage, n_batches, grouped=True, workdir=work / "compiled")
    plm = getattr(compiled.setup.model, "plm", None) or compiled.setup.model.text.plm
    eager_s = bench.seconds()
    plm.base_model.encoder.compile(dynamic=True)
    t = time.perf_counter()
    try:
        for batch in compiled.batches[1:3]:  # compiles (and recompiles for a second length)
            compiled.step(batch)
    except Exception as exc:  # noqa: BLE001 - a backend that cannot compile here is a result, not a crash
        return Measured(stage, "torch.compile (LM encoder)", base_flops, float("nan"), ceiling, 0,
                        f"failed: {type(exc).__name__}: {str(exc)[:120]}")
    compile_s = time.perf_counter() - t
    steady = statistics.median(compiled.seconds() for _ in range(2))
    gain_per_row = (eager_s - steady) / compiled.rows
    pays = f"pays after {compile_s / gain_per_row:,.0f} rows" if gain_per_row > 0 else "never pays (slower)"
    return Measured(stage, "torch.compile (LM encoder)", base_flops, compiled.rows / steady, ceiling, compiled.rows,
                    f"first steps {compile_s:.0f} s with compilation; {eager_s / steady:.2f}x eager; {pays}")


def cost_table(result: dict) -> str:
    """The measurements as a Markdown table."""
    lines = [f"GEMM ceiling (2048^3 float32, {result['threads']} threads): {result['gemm_fp32_gflop_s']:.1f} GFLOP/s "
             f"(at the end: {result['gemm_fp32_gflop_s_after']:.1f})", "",
             "| stage | measured | MFLOP/sample | samples/s | achieved GFLOP/s | utilisation | note |",
             "|---|---|---|---|---|---|---|"]
    rows = [*result["rows"], *(r for rs in result["choices"].values() for r in rs)]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['choice']} | {r['mflop_per_sample']:.1f} | {r['samples_per_s']:.1f} | "
                     f"{r['achieved_gflop_s']:.1f} | {r['utilisation']:.2f} | {r['note']} |")
    return "\n".join(lines)

