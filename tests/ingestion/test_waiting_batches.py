"""A batch rejected only because an earlier batch is not in waits on it, is retried once that batch
is accepted, is reported (data ingest's exit code, data status, the trend report), and its rows are
never counted while it is not in. Real DuckDB and GX on the small landing area."""

from __future__ import annotations

import duckdb
import pytest

from cli import main
from core.settings import Paths
from ingestion.batch_log import pending_batches, quality_history, waiting_batches
from tests.ingestion.batches import SPEC, landing_area
from validation.trends import drift_flags, trend_markdown


@pytest.fixture
def week1_bad(paths: Paths, tmp_path):
    """The landing area with batch 1 (user 4's profile and events) carrying a rating of 9."""
    batches = landing_area(paths, tmp_path / "raw")
    inter = batches[1].folder / "ml-100k.inter"
    good = inter.read_text()
    lines = good.splitlines()
    lines[2] = "\t".join(lines[2].split("\t")[:2] + ["9"] + lines[2].split("\t")[3:])
    inter.write_text("\n".join(lines) + "\n")
    return paths, batches, inter, good


def _log(paths: Paths) -> list[tuple]:
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        return con.execute("SELECT batch_id, status, waiting_on, new_events, new_user_versions, new_item_versions "
                           "FROM batch_log ORDER BY batch_id, ingested_at").fetchall()


def test_a_batch_waits_on_the_rejected_one_before_it_and_is_retried_once_it_is_in(week1_bad, capsys):
    paths, batches, inter, good = week1_bad
    initial, week1, week2 = (b.folder.name for b in batches)
    assert main(["data", "ingest", "--dataset", SPEC.name]) == 1
    captured = capsys.readouterr()
    assert f"batch {week1}: REJECTED" in captured.out and "field rating: '9' is outside 1..5" in captured.out
    assert f"batch {week2}: WAITING on batch {week1}" in captured.err
    assert "user 4 has no profile" in captured.err
    # nothing of the waiting batch is counted: it wrote no rows
    assert _log(paths) == [(initial, "accepted", None, 6, 3, 3), (week1, "rejected", None, 0, 0, 0),
                           (week2, "waiting", week1, 0, 0, 0)]
    [waiting] = waiting_batches(paths.warehouse).itertuples()
    assert (waiting.batch_id, waiting.waiting_on) == (week2, week1)
    flagged = drift_flags(quality_history(paths.warehouse)).set_index("batch_id")
    assert flagged.loc[week2, "flags"] == f"waiting on {week1}" and flagged.loc[week1, "flags"] == (
        "rejected: ml-100k.inter line 3, field rating: '9' is outside 1..5")
    assert f"| {week2} | waiting | 0 |" in trend_markdown(flagged.reset_index(), SPEC.name)
    assert main(["data", "status"]) == 0
    assert f"batch {week2}: waiting on batch {week1}, 0 events: " in capsys.readouterr().out
    # again, unchanged: nothing to take, but the run still says a batch waits (exit 1)
    assert pending_batches(paths.inbox(SPEC.name), paths.warehouse) == []
    assert main(["data", "ingest", "--dataset", SPEC.name]) == 1
    assert f"batch {week2}: WAITING on batch {week1}" in capsys.readouterr().err

    inter.write_text(good)  # batch 1 corrected: it is taken, then the batch waiting on it
    assert main(["data", "ingest", "--dataset", SPEC.name]) == 0
    out = capsys.readouterr().out
    assert f"batch {week1}: 6 events" in out and f"batch {week2}: 7 events" in out
    assert waiting_batches(paths.warehouse).empty
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM interactions").fetchone()[0] == 19
        latest = con.execute("SELECT batch_id, status, new_events FROM batch_log WHERE status = 'accepted' "
                             "ORDER BY batch_id").fetchall()
    assert latest == [(initial, "accepted", 6), (week1, "accepted", 6), (week2, "accepted", 7)]


def test_a_batch_missing_profiles_no_earlier_batch_brings_is_rejected(paths: Paths, tmp_path, capsys):
    batches = landing_area(paths, tmp_path / "raw")
    (batches[1].folder / "ml-100k.user").unlink()  # user 4's profile is never sent
    assert main(["data", "ingest", "--dataset", SPEC.name]) == 1
    statuses = {row[0]: row[1:] for row in _log(paths)}
    # batch 1: nothing before it is missing, its own fault; batch 2 needs user 4 too, but the
    # rejected batch 1 does not bring it: nothing to wait for
    assert statuses[batches[1].folder.name] == ("rejected", None, 0, 0, 0)
    assert statuses[batches[2].folder.name] == ("rejected", None, 0, 0, 0)
    assert capsys.readouterr().out.count("user 4 has no profile") == 2
    assert waiting_batches(paths.warehouse).empty


def test_status_lists_landed_batches_not_ingested_and_a_writer_only_while_it_writes(paths: Paths, tmp_path, capsys):
    """`data status` showed neither the batches still in the landing area nor whether the lock's
    record (kept after the writer ends) was a writer at work: it read as busy after every ingest."""
    import json

    from core.locks import lock_path
    from tests.test_locks import hold

    batches = landing_area(paths, tmp_path / "raw")
    assert main(["data", "ingest", "--dataset", SPEC.name, "--max-batches", "1"]) == 0
    capsys.readouterr()
    assert main(["data", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [b["batch_id"] for b in status["batches"]] == [batches[0].folder.name]
    assert status["pending"] == [b.folder.name for b in batches[1:]] and status["lock"] is None
    assert main(["data", "status"]) == 0
    out = capsys.readouterr().out
    assert f"batch {batches[1].folder.name}: pending in {paths.inbox(SPEC.name)} (`clickprompt data update` " in out
    assert "busy" not in out

    proc = hold(lock_path(paths.warehouse), "ingest movielens-100k", 30)  # a writer at work now
    try:
        assert main(["data", "status", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["lock"]["pid"] == proc.pid
        assert main(["data", "status"]) == 0
        assert f"busy: the warehouse is being written by pid {proc.pid} since " in capsys.readouterr().out
    finally:
        proc.kill()
        proc.wait()
