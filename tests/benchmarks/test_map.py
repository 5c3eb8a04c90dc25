"""The map (benchmarks/map.py): cells, resuming, the paired verdicts, the cells that wait for a GPU,
and (``benchmark``-marked) one real cell trained end to end on MovieLens-1M-format files."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks import map as bmap
from benchmarks.results import machine
from benchmarks.suite import HEADLINE_RUNS
from core.settings import REPO_ROOT
from models.train.stages import Stage
from tests.benchmarks.test_report import RESULTS

PNG = b"\x89PNG\r\n\x1a\n"
CTR_ONLY, WITH_LM = "ClickPrompt CTR-only (DCNv2)", "ClickPrompt with LM"


def _cell_results(seeds: list[int], with_lm_diffs: list[float]) -> dict:
    """A benchmark results.json of the headline runs (the report test's figures, relabelled as
    `clickprompt bench --only base-dcnv2 cp-dcnv2` labels them)."""
    models = json.loads(json.dumps(RESULTS["models"]))
    models[CTR_ONLY] = models.pop("ClickPrompt CTR-only")
    for m in models.values():
        m["per_seed"] = {str(s): {"auc": 0.71, "logloss": 0.62} for s in seeds}
    models[WITH_LM]["paired_auc_diff"] = with_lm_diffs
    models[WITH_LM]["per_seed"] = {str(s): {"auc": 0.70, "logloss": 0.60} for s in seeds}
    return {**RESULTS, "seeds": seeds, "models": models,
            "long_tail": {CTR_ONLY: RESULTS["long_tail"]["ClickPrompt CTR-only"], "DCNv2": RESULTS["long_tail"]["DCNv2"]},
            "training_set": {"identity": "abc", "rows": {"train": 79999, "valid": 10001, "test": 10000},
                             "unseen": {"test": {"users": 0.858, "items": 0.015}}}}


def _write_cell(out: Path, key: str, results: dict) -> None:
    folder = out / "cells" / key
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))


def test_a_cell_names_its_parts_and_a_bad_one_says_which_are_known():
    cell = bmap.Cell.parse("minilm-l6--movielens-1m-subset--random")
    assert (cell.lm, cell.data, cell.split) == ("minilm-l6", "movielens-1m-subset", "random")
    assert len(bmap.all_cells()) == 8 and len({c.key for c in bmap.all_cells()}) == 8
    with pytest.raises(ValueError, match=r"unknown map cell 'roberta--movielens-100k--random'.*lm in \['bert-2l-128'"):
        bmap.Cell.parse("roberta--movielens-100k--random")
    with pytest.raises(SystemExit):  # the command line refuses it with the same message (argparse: exit 2)
        bmap.main(["--cells", "bert-2l-128--movielens-100k--by-day", "--report-only"])


def test_the_map_reads_finished_cells_marks_the_rest_and_states_paired_verdicts(tmp_path):
    out = tmp_path / "map"
    _write_cell(out, "bert-2l-128--movielens-100k--global-temporal", _cell_results([1, 2, 3], [-0.002, -0.003, -0.001]))
    _write_cell(out, "bert-2l-128--movielens-100k--random", _cell_results([1, 2, 3], [0.004, -0.001, 0.002]))
    # finished with other seeds: not this map's cell (re-running resumes it run by run)
    _write_cell(out, "bert-2l-128--movielens-1m-subset--global-temporal", _cell_results([1, 2], [0.01, 0.01]))

    result = bmap.build_map(out, [1, 2, 3], bmap.all_cells(), report_only=True)
    cells = result["cells"]
    assert cells["bert-2l-128--movielens-100k--global-temporal"]["status"] == "measured"
    assert cells["bert-2l-128--movielens-100k--global-temporal"]["rows"]["train"] == 79999
    assert cells["bert-2l-128--movielens-100k--random"]["models"][WITH_LM]["paired_logloss_diff"] == \
        pytest.approx([-0.02, -0.02, -0.02])
    assert cells["bert-2l-128--movielens-1m-subset--global-temporal"]["status"].startswith("not run yet")
    assert "make bench-map" in cells["bert-2l-128--movielens-1m-subset--random"]["status"]
    if not torch.cuda.is_available():
        assert all(cells[c.key]["status"].startswith("waits for a GPU") for c in bmap.all_cells() if c.lm == "minilm-l6")
    assert json.loads((out / "map.json").read_text())["cells"] == json.loads(json.dumps(cells))

    md = bmap.markdown(result)
    rows = {line.split(" | ")[2]: line for line in md.splitlines() if line.startswith("| bert-2l-128 | movielens-100k")}
    # every seed below the backbone: a loss; seeds disagreeing: a tie, whatever the mean
    assert "-0.0020 ± 0.0010 (loss)" in rows["global-temporal"]
    assert "+0.0017 ± 0.0025 (tie)" in rows["random"]
    assert "+0.0050 ± 0.0010 (gain)" in rows["random"]  # CTR-only: 0.005, 0.004, 0.006
    # LogLoss is lower on every seed: better (lower is better there), never read as a loss
    assert "-0.0200 ± 0.0000 (better)" in rows["random"] and "(worse)" not in md
    assert "79,999 / 10,000 (85.8%)" in rows["global-temporal"]
    # resumed (a run taken from an earlier invocation): the runs' training time, not the last invocation's
    assert rows["random"].endswith("| 45.0 min of training in all (resumed: 1 of its runs trained in earlier "
                                   "invocations; the last took 50.0 min) |")
    one_go = {**cells["bert-2l-128--movielens-100k--random"], "reused_runs": 0}
    md_one = bmap.markdown({**result, "cells": {"bert-2l-128--movielens-100k--random": one_go}})
    assert [line for line in md_one.splitlines() if line.startswith("| bert-2l-128")][0].endswith("| 50.0 min |")
    bmap.plot(result, out / "map.png")
    assert (out / "map.png").read_bytes().startswith(PNG)


def test_rows_measured_before_are_kept_local_results_win_and_overrides_are_shown(tmp_path):
    published, out = tmp_path / "docs", tmp_path / "map"
    gt, rnd = "bert-2l-128--movielens-100k--global-temporal", "bert-2l-128--movielens-100k--random"
    # a map measured elsewhere (the fixtures' profile: smoke) and published, its folder since cleared
    before = tmp_path / "before"
    _write_cell(before, gt, _cell_results([1, 2, 3], [-0.002, -0.003, -0.001]))
    _write_cell(before, rnd, _cell_results([1, 2, 3], [0.004, -0.001, 0.002]))
    bmap.build_map(before, [1, 2, 3], bmap.all_cells(), report_only=True)  # writes before/map.json
    published.mkdir()
    (published / "map.json").write_text((before / "map.json").read_text())
    # here: the random cell measured again, with its runs' overrides (amp=bf16) in its results.json
    again = _cell_results([1, 2, 3], [0.001, 0.002, 0.003]) | {"overrides": {"plm": "bert-2l-128", "amp": "bf16"}}
    _write_cell(out, rnd, again)

    earlier = bmap.earlier_rows([out / "map.json", published / "map.json"], [1, 2, 3], "smoke")
    assert set(earlier) == {gt, rnd}
    result = bmap.build_map(out, [1, 2, 3], bmap.all_cells(), report_only=True, earlier=earlier)
    cells = result["cells"]
    assert list(cells) == [c.key for c in bmap.all_cells()]  # the map's order, whatever was kept
    assert cells[gt]["status"] == "measured"  # kept from the published map
    assert cells[gt]["models"][WITH_LM]["paired_auc_diff"] == [-0.002, -0.003, -0.001]
    assert cells[rnd]["models"][WITH_LM]["paired_auc_diff"] == [0.001, 0.002, 0.003]  # local wins
    assert cells[rnd]["overrides"] == {"amp": "bf16"}  # the LM is the cell's own: not repeated
    md = bmap.markdown(result)
    assert "| bert-2l-128 (amp=bf16) | movielens-100k | random |" in md
    assert "| bert-2l-128 | movielens-100k | global-temporal |" in md
    # rows of other seeds or another profile are not this map's: the cell is marked, not kept
    assert bmap.earlier_rows([published / "map.json"], [1, 2], "smoke") == {}
    assert bmap.earlier_rows([published / "map.json"], [1, 2, 3], "cpu") == {}
    # the latest row of this map's seeds wins, in either order, and a newer row of other seeds does not
    # hide an older one of these
    newer = json.loads((published / "map.json").read_text())
    newer["cells"][gt] |= {"created_at": "2999-01-01T00:00:00Z", "wall_minutes": 1.0}
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    other = json.loads((published / "map.json").read_text())
    other["cells"][gt] |= {"created_at": "2999-06-01T00:00:00Z", "seeds": [1, 2]}
    (tmp_path / "other.json").write_text(json.dumps(other))
    for order in ([tmp_path / "newer.json", published / "map.json"], [published / "map.json", tmp_path / "newer.json"]):
        assert bmap.earlier_rows([*order, tmp_path / "other.json"], [1, 2, 3], "smoke")[gt]["wall_minutes"] == 1.0
    # a file that is no map.json is named; a missing one is skipped
    for bad in ("[1, 2]", '{"cells": [1]}', "{"):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(ValueError, match=r"bad.json is not a map.json the map wrote"):
            bmap.earlier_rows([tmp_path / "bad.json"], [1, 2, 3])
    assert bmap.earlier_rows([tmp_path / "missing.json"], [1, 2, 3]) == {}


def test_the_command_keeps_a_published_row_and_writes_it_back_whole(tmp_path):
    """``--report-only --publish DIR`` on a cleared folder: the published rows come back unchanged."""
    published, before = tmp_path / "docs", tmp_path / "before"
    gt = "bert-2l-128--movielens-100k--global-temporal"
    _write_cell(before, gt, _cell_results([1, 2, 3], [-0.002, -0.003, -0.001]))
    row = bmap.build_map(before, [1, 2, 3], bmap.all_cells(), report_only=True)["cells"][gt]
    published.mkdir()
    shutil.copyfile(before / "map.json", published / "map.json")
    assert bmap.main(["--report-only", "--profile", "smoke", "--out", str(tmp_path / "cleared"),
                      "--publish", str(published)]) == 0
    assert json.loads((published / "map.json").read_text())["cells"][gt] == row
    assert "-0.0020 ± 0.0010 (loss)" in (published / "map.md").read_text()
    # run again on the folder's own map.json alone (no --publish): still kept
    assert bmap.main(["--report-only", "--profile", "smoke", "--out", str(tmp_path / "cleared")]) == 0
    assert json.loads((tmp_path / "cleared" / "map.json").read_text())["cells"][gt] == row


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU cells run where a GPU is")
def test_a_measured_cell_of_a_gpu_lm_gives_its_speed_to_the_cells_still_waiting(tmp_path, monkeypatch):
    # a fresh clone: no warehouse in the project home - reading a kept probe must not need one
    monkeypatch.setenv("CLICKPROMPT_HOME", str(tmp_path / "fresh-home"))
    out = tmp_path / "map"
    ran = _cell_results([1, 2, 3], [0.001, 0.0, -0.001]) | {"overrides": {"plm": "minilm-l6", "amp": "bf16"}}
    ran["efficiency"] = {"device": "cpu", "total_seconds": 9000.0, "training_cost": {"rows": [
        {"stage": "pretrain", "samples_per_s": 64.0}, {"stage": "finetune-with-lm", "samples_per_s": 80.0}]}}
    ran["machine"] = machine()  # measured on this CPU
    # the last minilm cell of the map measured: the cells before it in the map's order get its speed too
    _write_cell(out, "minilm-l6--movielens-1m-subset--random", ran)
    # a probe of a few batches is there too, with other figures: the measured run wins
    (out / "probes" / "minilm-l6").mkdir(parents=True)
    (out / "probes" / "minilm-l6" / "cost.json").write_text(json.dumps({"device": "cpu", "rows": [
        {"stage": "pretrain", "samples_per_s": 20.0}, {"stage": "finetune-with-lm", "samples_per_s": 30.0}]}))
    cells = bmap.build_map(out, [1, 2, 3], bmap.all_cells(), report_only=True)["cells"]
    assert cells["minilm-l6--movielens-1m-subset--random"]["status"] == "measured"
    # the cell of the same data before it: 3 seeds x 79,999 rows (the measured cell's) x (1/64 + 1/80) s
    assert cells["minilm-l6--movielens-1m-subset--global-temporal"]["status"] == (
        "waits for a GPU: minilm-l6 PA-MLM 64 and LM finetuning 80 samples/s on this CPU (measured in cell "
        "minilm-l6--movielens-1m-subset--random, amp=bf16); one epoch of each over 79,999 training rows x "
        "3 seeds is >= 1.9 h of training alone on this machine")
    # no measured cell of its data: the speed without the hours
    assert cells["minilm-l6--movielens-100k--random"]["status"].endswith("(measured in cell "
                                                                     "minilm-l6--movielens-1m-subset--random, amp=bf16)")
    # measured on another CPU: not this machine's speed - the probe's figures instead
    ran["machine"] = "Some Other CPU (x86_64), 64 cores, no GPU, torch 2.13.0+cpu, 3.11.7"
    (out / "cells" / "minilm-l6--movielens-1m-subset--random" / "results.json").write_text(json.dumps(ran))
    cells = bmap.build_map(out, [1, 2, 3], bmap.all_cells(), report_only=True)["cells"]
    assert cells["minilm-l6--movielens-1m-subset--global-temporal"]["status"].startswith(
        "waits for a GPU: minilm-l6 PA-MLM 20 and LM finetuning 30 samples/s on this CPU; one epoch")


def _run_metrics(run: str) -> dict:
    """A finished headline run's metrics.json as far as the map reads it: each stage's test figures."""
    test = {"base-dcnv2": {Stage.BASELINE: 0.6840}, "cp-dcnv2": {Stage.FINETUNE_CTR_ONLY: 0.6851,
                                                                  Stage.FINETUNE_WITH_LM: 0.6829}}[run.rsplit("-seed", 1)[0]]
    return {"backbone": "dcnv2", "method": "baseline" if run.startswith("base") else "clickprompt",
            "stages": {stage: {"test": {"auc": auc, "logloss": 0.6, "n": 10}, "trained_on": {"rows": 100, "epochs": 1.0}}
                       for stage, auc in test.items()}}


def _runs(out: Path, key: str, finished: list[str], started: dict | None = None) -> Path:
    """A cell's folder with ``finished`` runs (metrics written) and, optionally, how the map started it."""
    folder = out / "cells" / key
    for run in finished:
        (folder / "runs" / run).mkdir(parents=True)
        (folder / "runs" / run / "metrics.json").write_text(json.dumps(_run_metrics(run)))
    if started is not None:
        (folder / "map_started.json").write_text(json.dumps(started))
    return folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU cells run where a GPU is")
def test_an_interrupted_cell_says_what_finished_and_the_command_that_resumes_it_alike(tmp_path):
    out = tmp_path / "map"
    started = {"seeds": [1, 2, 3], "profile": "cpu", "sets": ["amp=bf16", "train.note=a b"]}
    minilm = _runs(out, "minilm-l6--movielens-100k--random", ["base-dcnv2-seed1", "cp-dcnv2-seed1",
                                                              "base-dcnv2-seed2"], started)
    (minilm / "runs" / "cp-dcnv2-seed2").mkdir()  # started, not finished: no metrics
    _runs(out, "bert-2l-128--movielens-1m-subset--random", ["base-dcnv2-seed3"])
    _runs(out, "bert-2l-128--movielens-100k--random", [f"{r}-seed{s}" for r in HEADLINE_RUNS for s in (1, 2, 3)])
    # a measured cell keeps its row, its runs notwithstanding
    _write_cell(out, "bert-2l-128--movielens-100k--global-temporal", _cell_results([1, 2, 3], [0.001, 0.0, -0.001]))
    _runs(out, "bert-2l-128--movielens-100k--global-temporal", ["base-dcnv2-seed1"])
    # started by a map of another profile: not this map's runs
    _runs(out, "bert-2l-128--movielens-1m-subset--global-temporal", ["base-dcnv2-seed1"],
          {"seeds": [1, 2, 3], "profile": "smoke", "sets": []})
    cells = bmap.build_map(out, [1, 2, 3], [], report_only=True)["cells"]
    where = f"{tmp_path.resolve()}/map/cells"
    # the --set options it started with, quoted for a shell, and the GPU LM's cost here after them
    assert cells["minilm-l6--movielens-100k--random"]["status"].startswith(
        f"partly run: 3 of 6 runs finished (seed 1 whole) in {where}/minilm-l6--movielens-100k--random; "
        f"`python -m benchmarks.map --cells minilm-l6--movielens-100k--random --gpu-cells --out {tmp_path.resolve()}/map "
        "--set amp=bf16 --set 'train.note=a b'` resumes it; so far, 1 seed (not a result until every seed is in): "
        "DCNv2 AUC 0.6840; ClickPrompt CTR-only (DCNv2) − DCNv2 +0.0011; ClickPrompt with LM − DCNv2 -0.0011; "
        "waits for a GPU: minilm-l6")
    # a CPU cell: the note replaces "not run yet"
    assert cells["bert-2l-128--movielens-1m-subset--random"]["status"] == (
        f"partly run: 1 of 6 runs finished in {where}/bert-2l-128--movielens-1m-subset--random; `python -m "
        f"benchmarks.map --cells bert-2l-128--movielens-1m-subset--random --out {tmp_path.resolve()}/map` resumes it")
    assert cells["bert-2l-128--movielens-100k--random"]["status"].startswith(
        f"all 6 runs finished in {where}/bert-2l-128--movielens-100k--random but not the cell's report: ")
    assert cells["bert-2l-128--movielens-100k--global-temporal"]["status"] == "measured"
    assert cells["bert-2l-128--movielens-1m-subset--global-temporal"]["status"].startswith("not run yet")
    assert cells["minilm-l6--movielens-100k--global-temporal"]["status"].startswith("waits for a GPU")
    # another map's seeds and profile are in the command too
    note = bmap.interrupted_note(bmap.Cell.parse("bert-2l-128--movielens-1m-subset--global-temporal"), out, [1],
                                 "smoke", False)
    assert note is None  # that map's runs were of seed 1 2 3
    _runs(out, "bert-2l-128--movielens-1m-subset--random", ["base-dcnv2-seed1"])
    note = bmap.interrupted_note(bmap.Cell.parse("bert-2l-128--movielens-1m-subset--random"), out, [1], "smoke", False)
    assert note.endswith(f"--out {tmp_path.resolve()}/map --seeds 1 --profile smoke` resumes it")


def test_a_started_cell_records_how_it_was_started_and_notes_show_paths_inside_the_repository(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(bmap, "_clickprompt", lambda home, *args, log: called.append(args))
    bmap.run_cell(bmap.Cell.parse("bert-2l-128--movielens-100k--random"), tmp_path, tmp_path / "map", [1, 2],
                  "smoke", ("amp=bf16",))
    started = json.loads((tmp_path / "map" / "cells" / "bert-2l-128--movielens-100k--random"
                          / "map_started.json").read_text())
    assert started == {"seeds": [1, 2], "profile": "smoke", "sets": ["amp=bf16"]}
    assert called[0][:3] == ("bench", "--profile", "smoke") and "amp=bf16" in called[0]
    assert bmap._shown(REPO_ROOT / "artifacts" / "bench" / "map") == "artifacts/bench/map"
    monkeypatch.setenv("CLICKPROMPT_HOME", str(tmp_path / "home"))
    assert bmap._shown(tmp_path / "home" / "artifacts" / "x") == "artifacts/x"
    assert bmap._shown(tmp_path / "elsewhere") == str((tmp_path / "elsewhere").resolve())


def test_a_waiting_cell_states_the_measured_cpu_speed_and_the_hours_it_implies():
    cell = bmap.Cell("minilm-l6", "movielens-1m-subset", "random")
    note = bmap.waiting_note(cell, {"pretrain": 20.0, "finetune-with-lm": 30.0}, 240_000, [1, 2, 3])
    # 3 seeds x 240,000 rows x (1/20 + 1/30) s = 60,000 s
    assert note.startswith("waits for a GPU: minilm-l6 PA-MLM 20 and LM finetuning 30 samples/s")
    assert ">= 16.7 h" in note


def test_the_ml1m_cells_name_the_missing_files_and_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"none in .*nowhere; pass --ml-1m DIR"):
        bmap.prepare_home("movielens-1m-subset", tmp_path / "map", tmp_path / "nowhere")


def _ml1m_like(folder: Path, n_users: int = 60, n_items: int = 40, per_user: int = 25) -> Path:
    """GroupLens ml-1m files (women mostly like comedies, men action films; 3 stars the dislikes)."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    users = [f"{u}::{'F' if u % 2 else 'M'}::{rng.choice([18, 25, 35])}::{u % 21}::{10000 + u}" for u in
             range(1, n_users + 1)]
    items = [f"{i}::Film {i} ({1980 + i % 20})::{'Comedy' if i % 2 else 'Action'}" for i in range(1, n_items + 1)]
    ratings, t0 = [], 978_300_000
    for u in range(1, n_users + 1):
        for k, i in enumerate(rng.sample(range(1, n_items + 1), per_user)):
            liked = (u % 2) == (i % 2)
            rating = rng.choice([4, 5]) if liked != (rng.random() < 0.1) else 3
            ratings.append(f"{u}::{i}::{rating}::{t0 + (k * n_users + u) * 600}")
    (folder / "users.dat").write_text("\n".join(users) + "\n", encoding="latin-1")
    (folder / "movies.dat").write_text("\n".join(items) + "\n", encoding="latin-1")
    (folder / "ratings.dat").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    return folder


@pytest.mark.benchmark
def test_an_ml1m_cell_trains_end_to_end_in_its_own_home_and_resumes(paths, tmp_path):
    """Real commands in a real home: fetch + ingest (gated) the ml-1m files, Feast, the toy BERT from
    its wheel, then `clickprompt bench` (smoke profile, 1 seed) on the random split's training set."""
    out = tmp_path / "map"
    key = "bert-2l-128--movielens-1m-subset--random"
    result = bmap.build_map(out, [1], [bmap.Cell.parse(key)], _ml1m_like(tmp_path / "ml-1m"), profile="smoke")
    row = result["cells"][key]
    assert row["status"] == "measured", row["status"]
    assert row["rows"]["train"] + row["rows"]["valid"] + row["rows"]["test"] == 60 * 25
    assert row["unseen"]["test"]["users"] == 0.0  # a random split: every test user was seen in training
    assert set(row["models"]) == {"DCNv2", CTR_ONLY, WITH_LM}
    # the smoke profile's few steps on 1,200 rows: plausible, not good, AUCs; the paired difference is
    # the model's AUC minus DCNv2's of the same seed
    for label in (CTR_ONLY, WITH_LM):
        m = row["models"][label]
        assert 0.35 < m["auc_mean"] < 1.0 and 0.3 < m["logloss_mean"] < 1.5
        assert m["paired_auc_diff"] == pytest.approx([m["auc_mean"] - row["models"]["DCNv2"]["auc_mean"]])
    assert row["samples_per_s"]["pretrain"] > 0 and row["device"] == "cpu" or torch.cuda.is_available()
    home = out / "homes" / "movielens-1m"
    assert (home / "data" / "plms" / "bert-2l-128").is_dir() and (home / "data" / "warehouse.duckdb").exists()
    # a second call trains nothing: the finished cell is read back
    stamp = (out / "cells" / key / "results.json").stat().st_mtime_ns
    again = bmap.build_map(out, [1], [bmap.Cell.parse(key)], _ml1m_like(tmp_path / "unused"), profile="smoke")
    assert again["cells"][key]["models"] == result["cells"][key]["models"]
    assert (out / "cells" / key / "results.json").stat().st_mtime_ns == stamp


@pytest.mark.benchmark
def test_the_gpu_kit_trains_a_cell_from_bundles_as_the_map_does(paths, tmp_path):
    """pack -> run -> unpack on this CPU: the kit's DCNv2 equals the CPU cell's seed for seed (same
    bundle rows, config and seed); the LM side trains from the float16-carried weights."""
    from benchmarks import gpu_kit

    out, key = tmp_path / "map", "bert-2l-128--movielens-1m-subset--random"
    cell = bmap.Cell.parse(key)
    cpu = bmap.build_map(out, [1], [cell], _ml1m_like(tmp_path / "ml-1m"), profile="smoke")["cells"][key]
    kit = gpu_kit.pack(tmp_path / "kit", [cell], out, wheels=False)
    assert kit["bundles"] == {"movielens-1m-subset--random": cpu["training_set"]} and kit["mib"] < 40
    summary = gpu_kit.run(tmp_path / "kit", tmp_path / "device-out", seeds=[1], profile="smoke", shape="1x64",
                          shape_batch=32)
    row = summary["cells"][key]["row"]
    assert row["models"]["DCNv2"]["auc_mean"] == pytest.approx(cpu["models"]["DCNv2"]["auc_mean"], abs=1e-9)
    assert 0.35 < row["models"][WITH_LM]["auc_mean"] < 1.0
    cost = summary["cost"]
    assert cost["shape"] == "1x64" and [r["stage"] for r in cost["rows"]] == ["pretrain", "finetune-with-lm"]
    assert all(r["samples_per_s"] > 0 and r["mflop_per_sample"] > 0 for r in cost["rows"])
    # what comes back: a file per cell and the timing, placed into a map by unpack
    back = tmp_path / "device-out" / gpu_kit.RESULTS_BACK
    assert sorted(p.name for p in back.iterdir()) == sorted([f"{key}.json", "cost-1x64.json", "summary.json"])
    assert gpu_kit.unpack(back, tmp_path / "map2") == [key]
    again = bmap.build_map(tmp_path / "map2", [1], [cell], report_only=True)["cells"][key]
    assert again["status"] == "measured" and again["models"]["DCNv2"] == row["models"]["DCNv2"]
