"""Numbers are not taken on trust (issue 23, item 6): ids are whole numbers inside the spec's range,
a repeated (user, item, time) event names its file and line and can be quarantined, and the CLI
refuses bad counts and unknown names up front with exit 2 and one line."""

from __future__ import annotations

import time
from datetime import datetime

import duckdb
import pytest

import cli
from core.spec import load_spec
from ingestion.rows import RawDataError
from ingestion.warehouse import ingest
from tests.conftest import small_ratings, write_small_raw
from tests.ingestion.test_tabular import own_data  # noqa: F401  (fixture)
from validation import gate

SPEC = "movielens-100k"


def _ingest(paths, folder, quarantine: bool = False):
    return ingest(load_spec(SPEC), folder, paths.warehouse, paths.snapshots, gate, quarantine=quarantine)


@pytest.mark.parametrize("user, message", [
    ("-5", r"u\.data line 4, field user_id: '-5' is outside the spec's range 1\.\.1000000 of user_id$"),
    ("5.0", r"u\.data line 4, field user_id: '5\.0' is not a whole number \(ids are integers\)$"),
    ("0", r"u\.data line 4, field user_id: '0' is outside the spec's range 1\.\.1000000 of user_id$"),
])
def test_ids_are_whole_numbers_inside_the_specs_range(paths, tmp_path, user, message):
    rows = small_ratings()
    rows[3] = user + rows[3][rows[3].index("\t"):]
    with pytest.raises(RawDataError, match=message):
        _ingest(paths, write_small_raw(tmp_path / "raw", ratings=rows))


def test_a_repeated_event_names_both_lines_and_can_be_quarantined(paths, tmp_path):
    rows = small_ratings()
    rows.append(rows[2].rsplit("\t", 2)[0] + "\t1\t" + rows[2].rsplit("\t", 1)[1])  # same user, item, time
    user, item, _, ts = rows[2].split("\t")
    folder = write_small_raw(tmp_path / "raw", ratings=rows)
    with pytest.raises(RawDataError, match=rf"^u\.data line 21: duplicate event: \(user_id, item_id, timestamp\) = "
                                           rf"\({user}, {item}, {ts}\) as on line 3$"):
        _ingest(paths, folder)
    report = _ingest(paths, folder, quarantine=True)
    assert report.rejected == 1 and report.rows_after["interactions"] == 20
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        kept = con.execute("SELECT file, line, raw FROM quarantine").fetchall()
    assert kept == [("u.data", 21, rows[20])]


def test_a_repeated_event_in_an_export_names_both_lines(own_data):  # noqa: F811
    paths, spec = own_data
    folder = paths.raw(spec.name)
    lines = (folder / "clicks.csv").read_text().splitlines()
    customer, product, clicked, when, cat = lines[1].split(",")
    lines.append(",".join([customer, product, str(1 - int(clicked)), when, cat]))  # line 802, as line 2
    (folder / "clicks.csv").write_text("\n".join(lines) + "\n")
    seconds = int(datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp())
    with pytest.raises(RawDataError, match=rf"^clicks\.csv line 802: duplicate event: \(user_id, item_id, timestamp\) "
                                           rf"= \({customer}, {product}, {seconds}\) as on line 2$"):
        ingest(spec, folder, paths.warehouse, paths.snapshots, gate)
    report = ingest(spec, folder, paths.warehouse, paths.snapshots, gate, quarantine=True)
    assert report.rejected == 1 and report.rows_after["interactions"] == 800


def _run(capsys, *argv) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["data", "update", "--max-batches", "-1"],
     "error: clickprompt data update: argument --max-batches: -1 is not a count: give a whole number >= 1"),
    (["data", "ingest", "--max-batches", "0"], "error: clickprompt data ingest: argument --max-batches: 0 is not"),
    (["retrain", "--margin", "-1"], "error: clickprompt retrain: argument --margin: -1 must be a number >= 0"),
    (["data", "replay", "--batches", "x"], "error: clickprompt data replay: argument --batches: 'x' is not a whole"),
    (["serve", "--workers", "0"], "error: clickprompt serve: argument --workers: 0 is not a count"),
    (["data", "fetch", "nosuch"], "error: nosuch: no raw files in "),
    (["data", "fetch", "movielens-100k", "--from", "/nonexistent"], "error: source /nonexistent does not exist"),
    (["train", "--backbone", "dcnv3"], "error: --backbone dcnv3: unknown CTR model; known: autoint, dcn, dcnv2,"),
    (["retrain", "--stages", "baseline,pretrian"], "error: --stages: unknown stage 'pretrian'; known: baseline,"),
    (["pipeline", "--plm", "no-such-lm"], "error: --plm no-such-lm: not a known language model (bert-2l-128, "),
    (["data", "init-spec", "--name", "x", "--events", "/nonexistent.csv"], "error: /nonexistent.csv: no such file"),
    (["data", "init-spec", "--name", "My Shop!", "--events", "/nonexistent.csv"], "error: data set name 'My Shop!': "
     "use letters, digits, '.', '_' and '-' (starting with a letter or digit, at most 64), e.g. 'my-shop'"),
    (["plm", "fetch", "no-such-lm"], "error: unknown language model 'no-such-lm'; known: bert-2l-128, minilm-l6"),
    # an empty home: the step that is missing is named, and nothing is created (an empty warehouse
    # file would make `data status` report current snapshots)
    (["text", "render"], "error: no warehouse at "),
    (["data", "ingest"], "error: movielens-100k: raw data folder "),  # and what to run first (below)
    (["data", "update"], "error: no warehouse at "),  # no batch waiting either: nothing to update
    (["retrain", "--profile", "smoke"], "error: no warehouse at "),  # was a Prefect traceback, then ENOENT
    (["retrain", "--window-days", "3"], "error: --window-days is the length of a sliding window: add --window "
     "sliding"),  # it was ignored: a growing window
    (["features", "materialize"], "error: no warehouse at "),
    (["features", "online", "--user-id", "1", "--item-id", "1"], "error: no warehouse at "),
    (["features", "online", "--user-id", "1", "--item-id", "1", "--service", "nope"],
     "error: clickprompt features online: argument --service: invalid choice: 'nope' (choose from 'ctr_v1', "),
    (["features", "training-set", "--fractions", "0.5,0.5"], "error: clickprompt features training-set: argument "
     "--fractions: '0.5,0.5': give three numbers > 0 that add up to 1"),
    (["features", "training-set", "--fractions", "0.8,0.1,0.1000005"], "error: clickprompt features training-set: "
     "argument --fractions: '0.8,0.1,0.1000005': give three numbers > 0 that add up to 1"),  # the split's own rule
    (["predict", "--user-id", "99999999999999999999", "--item-id", "2"], "error: clickprompt predict: argument "
     "--user-id: 99999999999999999999 is out of range: ids are 64-bit integers"),
    (["data", "status", "--bogus"], "error: clickprompt data status: unrecognized arguments: --bogus (see clickprompt "
     "data status --help)"),  # the subcommand's help, not the top level's
    (["serve", "--port", "99999"], "error: clickprompt serve: argument --port: 99999 is not a port: give 0-65535"),
    (["registry", "register", "--run", "/nonexistent-run"], "error: /nonexistent-run: no such run folder"),
    (["registry", "register", "--run", "/nonexistent-run", "--stage", "pretrain"],
     "error: clickprompt registry register: argument --stage: invalid choice: 'pretrain'"),
])
def test_bad_input_is_refused_up_front_with_exit_2_and_one_line(paths, capsys, argv, message):
    started = time.monotonic()
    code, err = _run(capsys, *argv)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert time.monotonic() - started < 10  # before any fetch, ingest or feature work
    assert not paths.warehouse.exists() and not paths.raw("movielens-100k").exists()


def test_ingest_before_fetch_names_the_fetch(paths, capsys):
    code, err = _run(capsys, "data", "ingest")
    assert code == 2 and err.rstrip().endswith(
        f"raw data folder {paths.raw('movielens-100k')} does not exist: fetch the files first "
        "(`clickprompt data fetch movielens-100k`; your own: `--from FOLDER`)"), err


def test_data_commands_default_to_the_data_set_in_the_warehouse(own_data, capsys):  # noqa: F811
    """A home holding one's own data set: `data ingest` / `replay` / `update` without --dataset act on
    it (they used to act on movielens-100k: an update exited 0 having done nothing for the home's data)."""
    paths, spec = own_data
    assert _run(capsys, "data", "ingest", "--dataset", spec.name)[0] == 0
    code = cli.main(["data", "ingest"])
    assert code == 0 and capsys.readouterr().out.startswith(f"ingested {spec.name} into {paths.warehouse}")
    code, err = _run(capsys, "data", "replay")  # replay refuses a tabular data set: the message names which
    assert code == 2 and err.startswith(f"error: replay writes MovieLens (RecBole) files and {spec.name} is read")
    assert not paths.raw(SPEC).exists()


def test_debug_shows_the_traceback_of_a_user_error(paths, capsys):
    code, err = _run(capsys, "--debug", "data", "fetch", "nosuch")
    assert code == 2 and err.startswith("Traceback (most recent call last):") and "NoRawFiles" in err
    assert err.rstrip().splitlines()[-1].startswith("error: nosuch: no raw files in ")


@pytest.mark.parametrize("argv, message", [
    (["train", "--profile", "smoke", "--set", "pretrain.epochs=abc"],
     "error: bad training setting(s): pretrain.epochs='abc': Input should be a valid integer"),
    (["train", "--set", "baseline.lr=0.1"], "error: bad training setting(s): baseline.lr: unknown setting; the "
     "settings of baseline: batch_size, "),
    (["retrain", "--profile", "nope"], "error: --profile: unknown profile 'nope'; known: "),
    (["retrain", "--set", "foo=1"], "error: bad training setting(s): foo: unknown setting; settings: alt, "),
    (["bench", "--profile", "smoke", "--training-set", "/nonexistent"], "error: no training set in /nonexistent"),
    (["bench", "--profile", "smoke", "--set", "pretrain.epochs=0"],
     "error: bad training setting(s): pretrain.epochs=0: Input should be greater than or equal to 1"),
    (["train", "--stages", "baseline,pretrian"], "error: --stages: unknown stage 'pretrian'; known: "),
    # no offline source and nothing fetched: said before the flow, not as its two tracebacks
    (["train", "--dataset", "movielens-1m"], "error: movielens-1m has no offline source: download ml-1m.zip from "
     "GroupLens (https://files.grouplens.org/datasets/movielens/ml-1m.zip) and give it: `clickprompt data fetch "
     "movielens-1m --from PATH_OR_URL`"),
])
def test_bad_flow_settings_are_refused_before_the_flow_starts(paths, capsys, argv, message):
    """Flow commands check their settings before Prefect starts: one line, and no error record from
    Prefect's flow logger (its handler writes to the stderr of its import, which capsys cannot see)."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    prefect_flows = logging.getLogger("prefect.flows")
    prefect_flows.addHandler(handler)
    try:
        code, err = _run(capsys, *argv)
    finally:
        prefect_flows.removeHandler(handler)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    assert not paths.warehouse.exists() and not paths.runs.exists()


@pytest.mark.parametrize("argv", [
    ["pipeline", "--profile", "huge", "--method", "clip"],
    ["train", "--profile", "huge"],
    ["features", "export-bundle", "out", "--profile", "huge"],
])
def test_unknown_profile_and_method_are_refused_before_torch_or_prefect_load(paths, argv):
    """A typo is refused in a fraction of a second: before the flow's imports (torch, transformers,
    Prefect: 5-7 s on 2 cores), all unknown names in one line."""
    import subprocess
    import sys

    probe = ("import sys; from cli import main; code = main(sys.argv[1:]); "
             "print(code, [m for m in ('torch', 'prefect', 'transformers') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120,
                          cwd=paths.home)  # CLICKPROMPT_HOME: the fixture's
    assert done.stdout.strip() == "2 []", (done.stdout, done.stderr)
    assert done.stderr.startswith("error: --profile: unknown profile 'huge'; known: ['default', 'demo', 'paper', "
                                  "'smoke']"), done.stderr
    assert ("--method: unknown method 'clip'; known: clickprompt, alt" in done.stderr) == ("--method" in argv)


def test_replay_over_a_loaded_warehouse_is_refused_and_the_missing_warehouse_hint_names_both_ways(paths, tmp_path,
                                                                                                   capsys):
    """A new user told "run data ingest first" by `data update` who then replays gets batches of nothing
    new: every later week of the life cycle empty. The hint names both ways in, and replay refuses."""
    code, err = _run(capsys, "data", "update")
    assert code == 2 and "`clickprompt data replay` then `clickprompt data update`" in err, err
    _ingest(paths, write_small_raw(tmp_path / "raw"))
    code, err = _run(capsys, "data", "replay", "--every", "7d", "--batches", "2")
    assert code == 2 and err.startswith(f"error: the warehouse at {paths.warehouse} already holds ") and \
        "events: replayed batches would bring nothing new" in err, err
    assert not paths.inbox(SPEC).exists()  # nothing written
