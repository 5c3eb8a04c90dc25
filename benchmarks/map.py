"""The map of where ClickPrompt gains: language model x data set x split -> DCNv2, ClickPrompt CTR-only
and ClickPrompt with the LM, 3 seeds, paired differences, long tail and each cell's cost.

    .venv/bin/python -m benchmarks.map [--out artifacts/bench/map] [--seeds 1 2 3] [--ml-1m DIR]
        [--cells KEY ...] [--gpu-cells] [--report-only]          (make bench-map)

Each cell is one run of the benchmark suite's headline (``clickprompt bench --profile cpu``: the
``demo`` training profile, every stage on every training row) in its own folder
``<out>/cells/<lm>--<data>--<split>/`` and in a project home of its data set: MovieLens-100K in the
project's home (``make data``), the MovieLens-1M subset in ``<out>/homes/movielens-1m`` ingested from
``--ml-1m`` (GroupLens ``::`` files; its label rule is the spec's: click = rating >= 4). Running the
command again resumes: a finished cell is read back, an interrupted one resumes run by run (the
benchmark's own resume rule), so the CPU rows can be filled in across days. A cell measured before -
its row in the ``map.json`` of ``--out`` or of ``--publish DIR``, with the same seeds and profile - is
kept as it was and not trained again (unless named with ``--cells``), so a published map stays whole
after its local folder is cleared and the rows measured on a lent GPU stay beside the CPU's.

A cell whose language model a 2-core CPU cannot train in reasonable time (``minilm-l6``) is not run
without a GPU (or ``--gpu-cells``): the map marks it "waits for a GPU" with the CPU samples/s of its
two LM stages - from a cell of the same LM measured on this CPU where there is one, else the cost
benchmark's few batches - and the hours that implies.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.suite import HEADLINE_RUNS, plan_suite
from core.io import write_json_atomic
from core.settings import REPO_ROOT, Paths

LMS = {  # name -> overrides of the cell's runs (minilm-l6's MLM head transform is untrained: warm it up)
    "bert-2l-128": {},
    "minilm-l6": {"pretrain.head_warmup_steps": 100},
}
GPU_LMS = ("minilm-l6",)  # 6 x 384: ~27x the toy's encoder FLOPs per token; hours per cell on 2 cores
DATA = {"movielens-100k": "movielens-100k", "movielens-1m-subset": "movielens-1m"}  # map name -> spec
SPLITS = ("global-temporal", "random")
MODELS = ("DCNv2", "ClickPrompt CTR-only (DCNv2)", "ClickPrompt with LM")
SHARED_ML1M = REPO_ROOT.parent / "shared" / "data" / "ml-1m-subset"  # where this workspace keeps the subset
RESULTS = "results.json"
DEFAULT_SEEDS, DEFAULT_PROFILE = [1, 2, 3], "cpu"  # the command's defaults: a resume command leaves them out
STARTED = "map_started.json"  # in a cell's folder: the seeds, profile and --set options it was started with


@dataclass(frozen=True)
class Cell:
    lm: str
    data: str
    split: str

    @property
    def key(self) -> str:
        return f"{self.lm}--{self.data}--{self.split}"

    @classmethod
    def parse(cls, key: str) -> "Cell":
        parts = key.split("--")
        if len(parts) != 3 or parts[0] not in LMS or parts[1] not in DATA or parts[2] not in SPLITS:
            raise ValueError(f"unknown map cell {key!r}; a cell is <lm>--<data>--<split> with lm in {list(LMS)}, "
                             f"data in {list(DATA)}, split in {list(SPLITS)}")
        return cls(*parts)


def all_cells() -> list[Cell]:
    return [Cell(lm, data, split) for lm in LMS for data in DATA for split in SPLITS]


def _clickprompt(home: Path, *args: str, log: Path | None = None) -> None:
    """One ``clickprompt`` command in ``home``; its output goes to ``log`` (appended) and, line by line,
    to ours (long work shows progress). A failure names the command and its log."""
    env = {**os.environ, "CLICKPROMPT_HOME": str(home)}
    cmd = [sys.executable, "-m", "cli", *args]
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with open(log or os.devnull, "a", encoding="utf-8", buffering=1) as sink:  # line by line: `tail -f` it
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        for line in proc.stdout:
            sink.write(line)
            if "clickprompt.bench" in line or line.startswith("error"):
                print(line.rstrip(), flush=True)
        if proc.wait():
            raise MapError(f"`clickprompt {' '.join(args)}` failed (exit {proc.returncode}) in home {home}; "
                               f"its output: {log}")


class MapError(RuntimeError):
    """What the map (or the GPU kit) cannot go on without, said on one line: a step to run first, a
    command of the project that failed (its output included)."""


class MissingInput(MapError, FileNotFoundError):
    """Files the map or the kit needs are not there (what to run or pass is in the message)."""


def prepare_home(data: str, out: Path, ml1m: Path | None) -> Path:
    """The project home a data set's cells train in, its data ingested and the toy LM fetched."""
    if data == "movielens-100k":
        home = Paths.default().home
        if not (home / "data" / "warehouse.duckdb").exists():
            raise MapError(f"no warehouse in {home}: run `make data` first (MovieLens-100K)")
        return home
    home = out / "homes" / DATA[data]
    if (home / "data" / "warehouse.duckdb").exists():
        return home
    source = ml1m or SHARED_ML1M
    if not (source / "ratings.dat").exists():
        raise MissingInput(f"the MovieLens-1M cells need GroupLens ml-1m files (ratings.dat, users.dat, "
                                f"movies.dat): none in {source}; pass --ml-1m DIR or leave out the "
                                f"{data} cells with --cells")
    home.mkdir(parents=True, exist_ok=True)
    log = out / "logs" / f"home-{data}.log"
    for args in (("data", "fetch", DATA[data], "--from", str(source)), ("data", "ingest", "--dataset", DATA[data]),
                 ("features", "apply"), ("features", "training-set"), ("plm", "fetch", "bert-2l-128")):
        _clickprompt(home, *args, log=log)
    return home


def run_cell(cell: Cell, home: Path, out: Path, seeds: list[int], profile: str = "cpu",
             sets: tuple[str, ...] = ()) -> Path:
    """The benchmark suite's headline runs of one cell (``profile``: a benchmark profile; ``sets``:
    overrides for every run, after the cell's own); resumes an interrupted attempt."""
    folder = out / "cells" / cell.key
    folder.mkdir(parents=True, exist_ok=True)  # so a note can say how to resume it alike
    write_json_atomic(folder / STARTED, {"seeds": seeds, "profile": profile, "sets": list(sets)})
    sets = (f"plm={cell.lm}", *(f"{k}={v}" for k, v in LMS[cell.lm].items()), *sets)
    args = ["bench", "--profile", profile, "--only", *HEADLINE_RUNS, "--seeds", *map(str, seeds),
            "--split", cell.split, "--no-data-timing", "--out", str(folder)]
    for s in sets:
        args += ["--set", s]
    if cell.lm != "bert-2l-128":
        _clickprompt(home, "plm", "fetch", cell.lm, log=out / "logs" / f"{cell.key}.log")
    _clickprompt(home, *args, log=out / "logs" / f"{cell.key}.log")
    return folder / RESULTS


def default_out() -> Path:
    return (Paths.default().artifacts / "bench" / "map").resolve()


def interrupted_note(cell: Cell, out: Path, seeds: list[int], profile: str, gpu_cells: bool) -> str | None:
    """What an interrupted cell of this map (its seeds and profile) has finished - its runs with
    metrics; the suite checks each one's config again when it resumes - and the command, with the
    options the cell was started with, that goes on; None when nothing of it is there."""
    from models.train.run import RUN_METRICS

    folder = out / "cells" / cell.key
    started = json.loads((folder / STARTED).read_text(encoding="utf-8")) if (folder / STARTED).is_file() else {}
    if started and (started.get("profile") != profile or sorted(started.get("seeds", [])) != sorted(seeds)):
        return None  # runs of another map: not this one's
    plan = plan_suite(profile, seeds, folder, only=list(HEADLINE_RUNS))  # the suite's own run folders
    done = {(run.name, s) for run in plan.runs for s in seeds if (plan.run_dir(run, s) / RUN_METRICS).is_file()}
    if not done:
        return None
    command = ["python", "-m", "benchmarks.map", "--cells", cell.key] + (["--gpu-cells"] if gpu_cells else [])
    if out.resolve() != default_out():
        command += ["--out", _shown(out)]
    if sorted(seeds) != DEFAULT_SEEDS:
        command += ["--seeds", *map(str, seeds)]
    if profile != DEFAULT_PROFILE:
        command += ["--profile", profile]
    for option in started.get("sets", []):
        command += ["--set", option]
    command = " ".join(map(shlex.quote, command))
    total = len(plan.runs) * len(seeds)
    if len(done) == total:
        return (f"all {total} runs finished in {_shown(folder)} but not the cell's report: `{command}` "
                f"writes it")
    whole = [s for s in seeds if all((run.name, s) in done for run in plan.runs)]
    said = f" (seed{'s' if len(whole) > 1 else ''} {' '.join(map(str, whole))} whole)" if whole else ""
    return (f"partly run: {len(done)} of {total} runs finished{said} in {_shown(folder)}; `{command}` resumes it"
            + _whole_seeds(plan, whole))


def _whole_seeds(plan, whole: list[int]) -> str:
    """The paired differences of the seeds a partly run cell has whole, marked as what they are."""
    from benchmarks.results import aggregate  # torch: not for the map's --help
    from models.train.run import RUN_METRICS

    if not whole:
        return ""
    try:  # a note: a run it cannot read (a test split of one class, a stage missing) leaves it out
        metrics = {run.name: {s: json.loads((plan.run_dir(run, s) / RUN_METRICS).read_text(encoding="utf-8"))
                              for s in whole} for run in plan.runs}
        models = aggregate(plan.variants, metrics, whole)
    except (ValueError, KeyError) as exc:
        return f"; its whole seeds' figures unreadable ({exc})"
    parts = []
    for label, m in models.items():
        if m["reference"] is None:
            parts.append(f"{label} AUC {m['auc_mean']:.4f}")
        else:
            diffs = ", ".join(f"{d:+.4f}" for d in m["paired_auc_diff"])
            parts.append(f"{label} − {m['reference']} {diffs}")
    count = f"{len(whole)} seed{'s' if len(whole) > 1 else ''}"
    return f"; so far, {count} (not a result until every seed is in): " + "; ".join(parts)


def finished(cell: Cell, out: Path, seeds: list[int]) -> dict | None:
    path = out / "cells" / cell.key / RESULTS
    if not path.exists():
        return None
    results = json.loads(path.read_text(encoding="utf-8"))
    return results if sorted(results["seeds"]) == sorted(seeds) else None


def probe_lm(lm: str, home: Callable[[], Path], out: Path) -> dict:
    """CPU samples/s of the two LM stages of ``lm`` (the cost benchmark, 4 batches, 1 round), kept in
    ``<out>/probes/<lm>/cost.json`` so later calls reuse it; ``home()`` (the project home to probe in) is
    only asked for when there is no such probe yet, so reading a kept one needs no warehouse."""
    folder = out / "probes" / lm
    if not (folder / "cost.json").exists():
        home = home()
        env = {**os.environ, "CLICKPROMPT_HOME": str(home)}
        if lm != "bert-2l-128":
            _clickprompt(home, "plm", "fetch", lm, log=out / "logs" / f"probe-{lm}.log")
        subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_training_cost.py"), "--profile", "demo",
                        "--stages", "pretrain", "finetune-with-lm", "--batches", "4", "--rounds", "1",
                        "--no-choices", "--set", f"plm={lm}", "--out", str(folder)],
                       env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    cost = json.loads((folder / "cost.json").read_text(encoding="utf-8"))
    return {r["stage"]: r["samples_per_s"] for r in cost["rows"]} | {"device": cost["device"]}


def waiting_note(cell: Cell, probe: dict, train_rows: int | None, seeds: list[int]) -> str:
    """Why a cell is not run here: its LM stages' measured CPU speed and the hours that makes."""
    speed = f"PA-MLM {probe['pretrain']:.0f} and LM finetuning {probe['finetune-with-lm']:.0f} samples/s on this CPU"
    if probe.get("source"):
        speed += f" ({probe['source']})"
    if not train_rows:
        return f"waits for a GPU: {cell.lm} {speed}"
    hours = len(seeds) * train_rows * (1 / probe["pretrain"] + 1 / probe["finetune-with-lm"]) / 3600
    return (f"waits for a GPU: {cell.lm} {speed}; one epoch of each over {train_rows:,} training rows x "
            f"{len(seeds)} seeds is >= {hours:.1f} h of training alone on this machine")


def _wall(row: dict) -> str:
    """The cell's wall time, or for a cell resumed across invocations its runs' training time in all."""
    if row.get("reused_runs") and row.get("training_minutes"):
        return (f"{row['training_minutes']} min of training in all (resumed: {row['reused_runs']} of its runs "
                f"trained in earlier invocations; the last took {row['wall_minutes']} min)")
    return f"{row['wall_minutes']} min"


def cell_row(cell: Cell, results: dict) -> dict:
    """What the map keeps of a cell's results.json."""
    models = results["models"]
    eff = results.get("efficiency", {})
    cost = {r["stage"]: r["samples_per_s"] for r in eff.get("training_cost", {}).get("rows", [])}
    ts = results.get("training_set") or {}
    row = {"status": "measured", "machine": results["machine"], "seeds": results["seeds"],
           "created_at": results["created_at"], "rows": ts.get("rows"), "unseen": ts.get("unseen"),
           "training_set": ts.get("identity"), "models": {}, "long_tail": {},
           "samples_per_s": cost, "device": eff.get("device"),
           "wall_minutes": round(eff.get("total_seconds", 0) / 60, 1), "profile": results.get("profile"),
           # a cell resumed across invocations: its last one's wall time is not the cell's cost - the
           # runs' own training times (as recorded when each trained) are
           "training_minutes": round(eff.get("training_seconds", 0) / 60, 1),
           "reused_runs": len(eff.get("reused_runs", [])),
           # the overrides every run of the cell got (the profile's own, the LM's settings, --set), less
           # the LM the cell names
           "overrides": {k: v for k, v in (results.get("overrides") or {}).items() if k != "plm"}}
    for label in MODELS:
        m = models.get(label)
        if m is None:
            continue
        row["models"][label] = {k: m.get(k) for k in ("auc_mean", "auc_std", "logloss_mean", "logloss_std",
                                                  "paired_auc_diff", "paired_auc_diff_mean", "trained_on")}
        per_seed, ref = m["per_seed"], models.get(m["reference"] or "", {}).get("per_seed")
        if ref:
            row["models"][label]["paired_logloss_diff"] = [per_seed[s]["logloss"] - ref[s]["logloss"]
                                                           for s in per_seed]
        tail = results.get("long_tail", {}).get(label)
        if tail:
            row["long_tail"][label] = {g: tail.get(g) for g in ("tail_users", "tail_items", "n_tail_users",
                                                                 "n_tail_items")}
    return row


def earlier_rows(maps: list[Path], seeds: list[int], profile: str = "cpu") -> dict[str, dict]:
    """The measured rows of maps written before (``map.json`` files; a missing one is skipped) that are
    this map's - the same seeds and benchmark profile: for each cell the latest of them."""
    rows: dict[str, dict] = {}
    for path in maps:
        if not path.exists():
            continue
        try:
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            measured = [(k, r) for k, r in cells.items() if r.get("status") == "measured"]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path} is not a map.json the map wrote ({exc!r}): move it away or pass "
                             "another --out / --publish") from exc
        for key, row in measured:
            if sorted(row.get("seeds") or []) != sorted(seeds) or row.get("profile") != profile:
                continue
            if (row.get("created_at") or "") >= (rows.get(key, {}).get("created_at") or ""):
                rows[key] = row
    return rows


def build_map(out: Path, seeds: list[int], cells: list[Cell], ml1m: Path | None = None, gpu_cells: bool = False,
              report_only: bool = False, profile: str = "cpu", sets: tuple[str, ...] = (),
              command: str = "python -m benchmarks.map", earlier: dict[str, dict] | None = None) -> dict:
    """Run (or resume) every chosen cell that may run here, mark the others, write ``map.json``.

    ``earlier``: measured rows of maps written before (:func:`earlier_rows`: the same seeds and
    profile), kept for the cells whose results are not in ``out`` - measured on another machine (a
    lent GPU) or in a folder since cleared - and not trained again; a cell's results in ``out`` win."""
    import torch

    from benchmarks.results import machine

    has_gpu = torch.cuda.is_available()
    rows: dict[str, dict] = {}
    waiting: list[Cell] = []
    for cell in all_cells():
        chosen = cell in cells
        results = finished(cell, out, seeds)
        if results is None and cell.key in (earlier or {}):
            rows[cell.key] = earlier[cell.key]  # measured before, not trained again
            continue
        if results is None and chosen and not report_only and (has_gpu or gpu_cells or cell.lm not in GPU_LMS):
            t = time.perf_counter()
            print(f"map: cell {cell.key} ...", flush=True)
            run_cell(cell, prepare_home(cell.data, out, ml1m), out, seeds, profile, sets)
            results = finished(cell, out, seeds)
            print(f"map: cell {cell.key} done in {(time.perf_counter() - t) / 60:.1f} min", flush=True)
        if results is not None:
            rows[cell.key] = cell_row(cell, results)
        else:
            waiting.append(cell)
    here = _cpu_of(machine())
    for cell in waiting:  # after every measured row is known: any of them may give a waiting cell its figures
        chosen = cell in cells
        if cell.lm in GPU_LMS and not has_gpu:
            # the training rows of a measured cell of the same data (every split is 80/10/10 of it)
            same_data = next((r for k, r in rows.items() if Cell.parse(k).data == cell.data and r.get("rows")), None)
            train_rows = same_data["rows"]["train"] if same_data else None
            note = f"waits for a GPU: {cell.lm} needs one (its CPU speed not probed yet: --cells {cell.key})"
            # a cell of the same LM measured on this CPU: its speed over a whole run, in its settings,
            # beats a probe of a few batches
            ran = next(((k, r) for k, r in rows.items() if Cell.parse(k).lm == cell.lm and r.get("device") == "cpu"
                        and _cpu_of(r.get("machine", "")) == here
                        and {"pretrain", "finetune-with-lm"} <= set(r.get("samples_per_s") or {})), None)
            if ran is not None:
                given = ", ".join(f"{k}={v}" for k, v in (ran[1].get("overrides") or {}).items())
                probe = {**ran[1]["samples_per_s"], "source": f"measured in cell {ran[0]}" + (f", {given}" if given else "")}
                note = waiting_note(cell, probe, train_rows, seeds)
            elif (chosen and not report_only) or (out / "probes" / cell.lm / "cost.json").exists():
                probe = probe_lm(cell.lm, lambda: prepare_home("movielens-100k", out, ml1m), out)
                note = waiting_note(cell, probe, train_rows, seeds)
            rows[cell.key] = {"status": note}
        else:
            rows[cell.key] = {"status": f"not run yet on 2 CPU cores: resumable with `make bench-map` "
                                        f"(--cells {cell.key})"}
        gpu_lm_here = cell.lm in GPU_LMS and not has_gpu
        partly = interrupted_note(cell, out, seeds, profile, gpu_lm_here)
        if partly:  # what is there and how to go on; a GPU LM's cell still says what a run costs here
            rows[cell.key]["status"] = f"{partly}; {rows[cell.key]['status']}" if gpu_lm_here else partly
    result = {"seeds": seeds, "profile": profile, "sets": list(sets),
              "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": command, "cells": {c.key: rows[c.key] for c in all_cells()}}
    write_json_atomic(out / "map.json", result)
    return result


def _shown(path: Path) -> str:
    """A path as a note shows it: relative to the repository, else to the project home, when inside
    one (no machine paths in a published map)."""
    path = path.resolve()
    for root in (REPO_ROOT, Paths.default().home):
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return str(path)


def _cpu_of(machine: str) -> str:
    """The CPU model and core count of a ``benchmarks.results.machine()`` line (not its torch / Python)."""
    return ",".join(machine.split(",")[:2])


def _diff(m: dict, key: str = "paired_auc_diff") -> str:
    d = m.get(key)
    if not d:
        return "—"
    spread = statistics.stdev(d) if len(d) > 1 else 0.0
    up, down = min(d) > 0, max(d) < 0  # every seed agrees
    if key == "paired_auc_diff":
        sign = "gain" if up else "loss" if down else "tie"
    else:  # LogLoss: lower is better
        sign = "better" if down else "worse" if up else "tie"
    return f"{statistics.mean(d):+.4f} ± {spread:.4f} ({sign})"


def _lm_label(cell: Cell, row: dict) -> str:
    """A cell's LM with its runs' overrides of the profile, e.g. ``minilm-l6 (amp=bf16)``."""
    given = ", ".join(f"{k}={v}" for k, v in (row.get("overrides") or {}).items())
    return f"{cell.lm} ({given})" if given else cell.lm


def markdown(result: dict) -> str:
    seeds = ", ".join(map(str, result["seeds"]))
    lines = [
        "# The map: where ClickPrompt gains",
        "",
        f"Seeds {seeds}; every cell the benchmark suite's headline runs (`clickprompt bench --profile "
        f"{result['profile']}`; with the `cpu` profile: the `demo` training profile, every stage on every "
        "training row: DCNv2 5 epochs; PA-MLM 1 epoch, finetuning with the LM 1 epoch, CTR-only 5 epochs; "
        "a cell's overrides of the profile, for all its runs, in brackets after its LM). "
        "Differences are paired: the model minus DCNv2 of the same seed, mean ± sd "
        "over seeds; `gain` / `loss` (AUC) and `better` / `worse` (LogLoss, lower is better) only when every "
        "seed agrees, else `tie`. MovieLens-1M subset: 299,418 "
        "real ratings of 3-5 stars, click = rating >= 4 (the spec's rule), so 3 stars are the negatives. "
        f"Created {result['created_at']}; `{result['command']}`.",
        "",
        "| LM | data | split | train / test rows (test unseen users) | DCNv2 AUC | CTR-only − DCNv2 "
        "| with LM − DCNv2 | with LM LogLoss − DCNv2 | PA-MLM / LM-finetune samples/s (device) | time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in result["cells"].items():
        cell = Cell.parse(key)
        head = f"| {_lm_label(cell, row)} | {cell.data} | {cell.split} |"
        if row["status"] != "measured":
            lines.append(f"{head} {row['status']} | | | | | | |")
            continue
        m = row["models"]
        rows = row.get("rows") or {}
        unseen = (row.get("unseen") or {}).get("test", {}).get("users")
        base = m.get("DCNv2", {})
        cost = row["samples_per_s"]
        speed = (f"{cost.get('pretrain', 0):.0f} / {cost.get('finetune-with-lm', 0):.0f} ({row['device']})"
                 if cost else "—")
        lines.append(f"{head} {rows.get('train', 0):,} / {rows.get('test', 0):,} ({unseen:.1%}) | "
                     f"{base.get('auc_mean', 0):.4f} ± {base.get('auc_std', 0):.4f} | "
                     f"{_diff(m.get('ClickPrompt CTR-only (DCNv2)', {}))} | "
                     f"{_diff(m.get('ClickPrompt with LM', {}))} | "
                     f"{_diff(m.get('ClickPrompt with LM', {}), 'paired_logloss_diff')} | {speed} | "
                     f"{_wall(row)} |")
    tails = [(k, r) for k, r in result["cells"].items() if r["status"] == "measured" and r["long_tail"]]
    if tails:
        lines += ["", "Long tail (test AUC, mean over seeds; bottom 10% of users / items by training frequency, "
                  "unseen ids included; the suite's long-tail pair: the backbone and its CTR-only model, the one "
                  "that is served):", "", "| cell | model | tail users (n) | tail items (n) |",
                  "|---|---|---|---|"]
        for key, row in tails:
            for label, t in row["long_tail"].items():
                lines.append(f"| {key} | {label} | {t['tail_users']:.4f} ({t['n_tail_users']}) | "
                             f"{t['tail_items']:.4f} ({t['n_tail_items']}) |")
    machines = sorted({r["machine"] for r in result["cells"].values() if r["status"] == "measured"})
    lines += ["", "Machines: " + "; ".join(machines) if machines else "No cell measured yet.", "",
              "![paired AUC differences per cell](map.png)", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [(k, r) for k, r in result["cells"].items() if r["status"] == "measured"]
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.9 * max(1, len(measured))))
    for y, (key, row) in enumerate(measured):
        for dy, (label, color) in enumerate((("ClickPrompt CTR-only (DCNv2)", "#3b75af"),
                                             ("ClickPrompt with LM", "#c47a2c"))):
            d = row["models"].get(label, {}).get("paired_auc_diff") or []
            if d:
                yy = y + (dy - 0.5) * 0.3
                ax.scatter(d, [yy] * len(d), color=color, s=18, alpha=0.7,
                           label=label if y == 0 else None)
                ax.errorbar(statistics.mean(d), yy, xerr=statistics.stdev(d) if len(d) > 1 else 0, fmt="D",
                            color=color, capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(measured)), [f"{_lm_label(Cell.parse(k), r)}\n{k.split('--', 1)[1]}"
                                         for k, r in measured], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("test AUC − DCNv2 AUC of the same seed (dots: seeds; diamond: mean ± sd)")
    ax.set_title("Where ClickPrompt gains: paired differences per measured cell", pad=22)
    if measured:  # above the axes, clear of the points
        ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="default <home>/artifacts/bench/map")
    parser.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS)
    parser.add_argument("--ml-1m", type=Path, default=None, help=f"GroupLens ml-1m files (default {SHARED_ML1M})")
    parser.add_argument("--cells", nargs="+", default=None, metavar="KEY",
                        help="cells to run (default all that may run here): " + " ".join(c.key for c in all_cells()))
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="benchmark profile of every cell (benchmarks/suite.py)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every run of every cell (after the cell's LM settings)")
    parser.add_argument("--gpu-cells", action="store_true", help="run the GPU cells on this CPU too (hours)")
    parser.add_argument("--report-only", action="store_true", help="train nothing: the map of what is measured")
    parser.add_argument("--publish", type=Path, default=None, metavar="DIR",
                        help="also copy map.md, map.png and map.json there (e.g. docs/bench)")
    args = parser.parse_args(argv)
    try:
        return _map(parser, args, argv)
    except MapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _map(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> int:
    try:
        cells = [Cell.parse(k) for k in args.cells] if args.cells else all_cells()
    except ValueError as exc:
        parser.error(str(exc))
    out = (args.out or default_out()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from benchmarks.results import invocation  # torch and the suite: only when the map runs

    # as typed, paths relative to the working directory (the map is published)
    command = invocation(["python -m benchmarks.map", *(sys.argv[1:] if argv is None else argv)])
    # the rows measured before, here or where the map is published, carry over (the map is filled in
    # across machines and days; a published map stays whole after its local folder is cleared)
    try:
        earlier = earlier_rows([out / "map.json", *([args.publish / "map.json"] if args.publish else [])],
                               args.seeds, args.profile)
    except ValueError as exc:
        parser.error(str(exc))
    if args.cells and not args.report_only:  # cells named to be run are measured here, not read back
        earlier = {k: r for k, r in earlier.items() if k not in args.cells}
    result = build_map(out, args.seeds, cells, args.ml_1m, args.gpu_cells, args.report_only, args.profile,
                       tuple(args.set), command, earlier)
    (out / "map.md").write_text(markdown(result), encoding="utf-8")
    plot(result, out / "map.png")
    print((out / "map.md").read_text(encoding="utf-8"))
    if args.publish:
        args.publish.mkdir(parents=True, exist_ok=True)
        for name in ("map.md", "map.png", "map.json"):
            shutil.copyfile(out / name, args.publish / name)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
