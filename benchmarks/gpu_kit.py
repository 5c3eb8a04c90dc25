"""The map's GPU cells and the paper-shape timing, packed to train on a lent GPU machine from bundles.

    # here (the whole stack): the training sets as bundles, the PLMs, the missing wheels, one folder
    .venv/bin/python -m benchmarks.gpu_kit pack .gpu [--cells minilm-l6--movielens-100k--global-temporal ...]
    # there (torch + transformers, nothing installed): the cells' runs and the timing, results to $OUT
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl && export PYTHONPATH=/tmp/site
    python3 -m benchmarks.gpu_kit run .gpu --out $OUT [--cells ...] [--seeds 1 2 3] [--shape bert-base]
    # here again: the cells' results.json into the map, the timing beside it
    .venv/bin/python -m benchmarks.gpu_kit unpack <files_at> && make bench-map

A lent machine reaches no registry or hub and takes at most 64 MiB of ignored files, so ``pack``
writes what the run needs and nothing else: each cell's training set as a bundle
(``models.train.bundle``, sha256-checked there), each PLM's files with its weights as float16 (half
the bytes; ``run`` widens them back to float32 before training, so the model trains from the
pretrained weights rounded to float16, which the map states), and the wheels the machine lacks
(pydantic and its parts; everything else the training path imports is there). ``run`` imports no
Feast, DuckDB, Prefect or GX: each cell is the benchmark's headline (``benchmarks.suite``: DCNv2 and
ClickPrompt, the ``cpu`` profile, the same configs as the CPU cells) trained by ``benchmarks.results``
and written as the same ``results.json``; then the step cost of an LM of the paper's shape (random
weights, ``benchmarks.ceiling``) against that GPU's own bf16 GEMM. Cells run in the order given;
one over ``--budget-s`` is not started, so one call ends inside the machine's 10-minute limit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.map import GPU_LMS, LMS, Cell, MapError, MissingInput, all_cells, prepare_home
from core.io import write_json_atomic
from core.settings import Paths

KIT_FILE = "kit.json"
LIMIT_MIB = 60  # the lent machine takes 64 MiB of carried files, the repository's own included
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")  # what the GPU image lacks
RESULTS_BACK = "results"  # under $OUT: <key>.json per cell, cost-<shape>.json, run.log (8 files at most)


def _mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def _cast_plm(src: Path, dst: Path, dtype) -> None:
    """``src``'s files with every floating tensor of its safetensors stored as ``dtype`` (float16 for
    transport, float32 again before training)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    for weights in src.glob("*.safetensors"):
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(weights).items()}
        save_file(tensors, dst / weights.name, metadata={"format": "pt"})


def _wheels(out: Path) -> list[str]:
    """The pinned versions this environment runs, as CPython 3.12 manylinux wheels (the lent machine's)."""
    from importlib.metadata import version

    pins = [f"{name}=={version(name)}" for name in WHEELS]
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(out), *pins],
                   check=True)
    return pins


def pack(out: Path, cells: list[Cell], map_out: Path, ml1m: Path | None = None, wheels: bool = True,
         limit_mib: float = LIMIT_MIB) -> dict:
    """Write the kit folder ``out`` (replaced whole): bundles, half-width PLMs, wheels, ``kit.json``."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        kit = _fill(tmp, cells, map_out, ml1m, wheels, limit_mib)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written is left beside the kit
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return kit


def _fill(tmp: Path, cells: list[Cell], map_out: Path, ml1m: Path | None, wheels: bool, limit_mib: float) -> dict:
    """``pack``'s content written into ``tmp``: the bundles, the PLMs, the wheels, ``kit.json``."""
    import torch

    from core.names import CLICKPROMPT_SERVICE
    from core.training_data import DEFAULT_FRACTIONS, TrainingSetRef
    from feature_repo.training_sets import training_set_folder  # here only: the lent machine has no Feast
    from models.train.bundle import export_bundle

    kit: dict = {"cells": [c.key for c in cells], "bundles": {}, "plms": {}, "wheels": [],
                 "packed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for data, split in dict.fromkeys((c.data, c.split) for c in cells):
        home = Paths(prepare_home(data, map_out, ml1m))
        folder = training_set_folder(home, CLICKPROMPT_SERVICE, split, DEFAULT_FRACTIONS)
        if not folder.is_dir():
            raise MissingInput(f"no {split} training set of {data} in {home.home}: build it with "
                               f"`CLICKPROMPT_HOME={home.home} clickprompt features training-set --split {split}` "
                               "(or run the map's CPU cell of the same data and split first)")
        export_bundle(TrainingSetRef.of(folder), tmp / "bundles" / f"{data}--{split}")
        kit["bundles"][f"{data}--{split}"] = folder.name
    for lm in dict.fromkeys(c.lm for c in cells):
        homes = [Paths(prepare_home(data, map_out, ml1m)).plms for data in dict.fromkeys(c.data for c in cells)]
        src = next((h / lm for h in homes if (h / lm).is_dir()), None)
        if src is None:
            raise MissingInput(f"{lm} is not fetched in {' or '.join(map(str, homes))}: run "
                               f"`clickprompt plm fetch {lm}` there")
        _cast_plm(src, tmp / "plms" / lm, torch.float16)
        kit["plms"][lm] = "float16 for transport; widened to float32 before training"
    if wheels:
        kit["wheels"] = _wheels(tmp / "wheels")
    size = _mib(tmp)
    if size > limit_mib:
        raise MapError(f"the kit would be {size:.1f} MiB, over {limit_mib} MiB (a lent machine takes 64 MiB with "
                       "the repository): pack fewer cells per call (--cells)")
    kit["mib"] = round(size, 1)
    write_json_atomic(tmp / KIT_FILE, kit)
    return kit


def run(kit_dir: Path, out: Path, cells: list[Cell] | None = None, seeds: list[int] | None = None,
        profile: str = "cpu", sets: dict | None = None, shape: str | None = "bert-base",
        budget_s: float = 480, shape_batch: int = 1024) -> dict:
    """Train the kit's cells (the map's configs) and time the paper-shape step; results under ``out``."""
    kit = json.loads((kit_dir / KIT_FILE).read_text(encoding="utf-8"))
    cells = cells or [Cell.parse(k) for k in kit["cells"]]
    seeds = seeds or [1, 2, 3]
    back = out / RESULTS_BACK
    back.mkdir(parents=True, exist_ok=True)
    home = Paths(Path(tempfile.mkdtemp(prefix="gpu-kit-")))
    try:  # the working home (the PLMs widened to float32, a random base-sized PLM: hundreds of MB) goes after
        return _run_cells(kit_dir, out, kit, cells, seeds, profile, sets, shape, budget_s, shape_batch, back, home)
    finally:
        shutil.rmtree(home.home, ignore_errors=True)


def _run_cells(kit_dir: Path, out: Path, kit: dict, cells: list[Cell], seeds: list[int], profile: str,
               sets: dict | None, shape: str | None, budget_s: float, shape_batch: int, back: Path,
               home: Paths) -> dict:
    """``run``'s work in the working home ``home``."""
    import torch

    from benchmarks.map import cell_row
    from benchmarks.results import train_run, write_results
    from benchmarks.suite import plan_suite

    for lm in kit["plms"]:
        _cast_plm(kit_dir / "plms" / lm, home.plms / lm, torch.float32)
    loaded: dict[str, object] = {}  # each bundle read once, whichever cells share it
    t0, summary = time.perf_counter(), {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else
                                        "cpu", "cells": {}}
    for cell in cells:
        spent = time.perf_counter() - t0
        if spent > budget_s:
            summary["cells"][cell.key] = {"status": f"not started: {spent:.0f} s of the {budget_s:.0f} s budget spent"}
            continue
        data = _bundle_data(kit_dir, cell, loaded)
        overrides = {"plm": cell.lm, **LMS[cell.lm], **(sets or {})}
        plan = plan_suite(profile, seeds, out / "cells" / cell.key, ["base-dcnv2", "cp-dcnv2"], overrides)
        t = time.perf_counter()
        metrics = {r.name: {s: train_run(plan, r, s, data, home) for s in seeds} for r in plan.runs}
        results = json.loads(write_results(plan, metrics, data, home, time.perf_counter() - t).read_text())
        results["plm_weights"] = "pretrained, rounded to float16 for transport"
        write_json_atomic(back / f"{cell.key}.json", results)
        summary["cells"][cell.key] = {"status": "measured", "minutes": round((time.perf_counter() - t) / 60, 1),
                                      "row": cell_row(cell, results)}
        print(f"gpu-kit: {cell.key} in {(time.perf_counter() - t) / 60:.1f} min", flush=True)
    if shape and time.perf_counter() - t0 < budget_s:
        summary["cost"] = paper_shape_cost(_bundle_data(kit_dir, cells[0], loaded), home, cells[0], shape, back,
                                           shape_batch)
    write_json_atomic(back / "summary.json", summary)
    return summary


def _bundle_data(kit_dir: Path, cell: Cell, loaded: dict):
    """The training data of ``cell``'s bundle, read once per (data, split)."""
    from models.train.bundle import Bundle

    key = f"{cell.data}--{cell.split}"
    if key not in loaded:
        loaded[key] = Bundle(kit_dir / "bundles" / key).data()
    return loaded[key]


def paper_shape_cost(data, home: Paths, cell: Cell, shape: str, back: Path, batch: int = 1024) -> dict:
    """PA-MLM and LM finetuning steps of a ``shape`` LM (random weights, the cell's LM's tokenizer) at
    ``batch``: counted FLOPs, samples/s, utilisation of this device's own GEMM, peak memory."""
    from benchmarks.ceiling import random_plm
    from benchmarks.cost import measure_costs
    from models.train.config import build_config
    from models.train.prepare import prepare

    cfg = build_config("demo", overrides={"plm": str(home.plms / f"shape-{shape}"), "pretrain.batch_size": batch,
                                          "finetune_lm.batch_size": batch})
    random_plm(shape, home.plms / cell.lm, home.plms / f"shape-{shape}", cfg.max_len)
    stages = ["pretrain", "finetune-with-lm"]
    ctx = prepare(cfg, data, home.home / "cost-run", stages, home.plms / f"shape-{shape}")
    result = measure_costs(ctx, stages, n_batches=10, rounds=3, choices=False)
    result.update(shape=shape, batch_size=batch)
    write_json_atomic(back / f"cost-{shape}.json", result)
    return result


def unpack(files: Path, map_out: Path) -> list[str]:
    """The cells' results.json brought back from a lent machine, into the map's cell folders."""
    placed = []
    for path in sorted(files.rglob("*.json")):
        key = path.stem
        try:
            Cell.parse(key)
        except ValueError:
            continue
        folder = map_out / "cells" / key
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / "results.json")
        placed.append(key)
    for cost in sorted(files.rglob("cost-*.json")):
        (map_out / "gpu").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cost, map_out / "gpu" / cost.name)
    return placed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    gpu_cells = [c.key for c in all_cells() if c.lm in GPU_LMS]
    p = sub.add_parser("pack", help="write the kit folder (here, with the whole stack)")
    p.add_argument("dir", type=Path)
    p.add_argument("--cells", nargs="+", default=gpu_cells, metavar="KEY")
    p.add_argument("--map-out", type=Path, default=None, help="the map's folder (default artifacts/bench/map)")
    p.add_argument("--ml-1m", type=Path, default=None)
    p.add_argument("--no-wheels", action="store_true", help="leave the wheels out (the target has pydantic)")
    p = sub.add_parser("run", help="train the kit's cells and time the paper shape (on the lent machine)")
    p.add_argument("dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cells", nargs="+", default=None, metavar="KEY")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--profile", default="cpu", help="benchmark profile (the CPU cells': cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--shape", default="bert-base", help="paper-shape timing ('' to skip)")
    p.add_argument("--shape-batch", type=int, default=1024)
    p.add_argument("--budget-s", type=float, default=480)
    p = sub.add_parser("unpack", help="place results brought back into the map's cell folders")
    p.add_argument("files", type=Path)
    p.add_argument("--map-out", type=Path, default=None)
    args = parser.parse_args(argv)
    map_out = (getattr(args, "map_out", None) or Paths.default().artifacts / "bench" / "map").resolve()
    try:
        _command(args, map_out)
    except MapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _command(args: argparse.Namespace, map_out: Path) -> None:
    if args.command == "pack":
        kit = pack(args.dir.resolve(), [Cell.parse(k) for k in args.cells], map_out, args.ml_1m, not args.no_wheels)
        print(json.dumps(kit, indent=2))
    elif args.command == "run":
        from models.train.config import parse_set

        summary = run(args.dir, args.out, [Cell.parse(k) for k in args.cells] if args.cells else None, args.seeds,
                      args.profile, parse_set(args.set), args.shape or None, args.budget_s, args.shape_batch)
        print(json.dumps({k: v["status"] for k, v in summary["cells"].items()}, indent=2))
    else:
        print("placed:", ", ".join(unpack(args.files, map_out)) or "nothing")


if __name__ == "__main__":
    sys.exit(main())
