"""Ingest into DuckDB: typed tables, one transaction, idempotent, bad input leaves the warehouse as it was."""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import pytest

import cli
from cli import main
from core.snapshots import read_snapshot_manifest
from core.spec import load_spec
from ingestion.loaders import RawDataError
from ingestion.warehouse import WarehouseError, ingest
from tests.conftest import DAY0, small_ratings, write_small_raw
from validation import gate
from validation.runner import ValidationError

SPEC = load_spec("movielens-100k")


def _ingest(paths, source, **kw):
    return ingest(SPEC, source, paths.warehouse, paths.snapshots, gate, **kw)


def _contents(paths) -> dict[str, list]:
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        return {
            t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
            for t in ("users", "items", "interactions", "user_text", "item_text")
        }


def test_ingest_writes_typed_tables_labels_and_snapshots(paths, small_raw):
    report = _ingest(paths, small_raw)
    assert report.rows_after == {"users": 4, "items": 4, "interactions": 20, "user_text": 4, "item_text": 4}
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'interactions'").fetchall())
        assert types == {"user_id": "BIGINT", "item_id": "BIGINT", "rating": "INTEGER", "label": "INTEGER",
                         "event_timestamp": "TIMESTAMP WITH TIME ZONE"}
        bad_labels = con.execute("SELECT count(*) FROM interactions WHERE label != (rating >= 4)::INT").fetchone()[0]
        assert bad_labels == 0
        first = con.execute("SELECT min(epoch(event_timestamp)) FROM interactions").fetchone()[0]
        genres = con.execute("SELECT genres FROM items WHERE item_id = 1").fetchone()[0]
    assert first == DAY0 + 60 * 4 + 1 - 0 or first >= DAY0  # earliest event is on day 0 or later
    assert genres == ["Animation", "Children's", "Comedy"]
    manifest = read_snapshot_manifest(paths.snapshots)
    assert manifest["tables"]["interactions"]["rows"] == 20
    users = pd.read_parquet(paths.snapshots / "users.parquet")
    assert str(users["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert users.loc[users.user_id == 1, "occupation"].item() == "technician"


def test_reingest_same_input_changes_nothing(paths, small_raw):
    first = _ingest(paths, small_raw)
    before = _contents(paths)
    second = _ingest(paths, small_raw)
    assert _contents(paths) == before
    assert second.snapshot_hash == first.snapshot_hash
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM ingest_log").fetchone()[0] == 2


BAD_CASES = {
    "wrong field count": (lambda r: r.__setitem__(4, "1\t2\t3"), "u.data line 5", "field count"),
    "non-numeric id": (lambda r: r.__setitem__(2, r[2].replace("1", "x", 1)), "u.data line 3", "user_id"),
    "rating 9": (lambda r: r.__setitem__(6, "\t".join(r[6].split("\t")[:2] + ["9"] + r[6].split("\t")[3:])),
                 "u.data line 7", "rating"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_malformed_row_fails_naming_file_line_field_and_writes_nothing(paths, small_raw, tmp_path, case):
    _ingest(paths, small_raw)
    before, snap = _contents(paths), read_snapshot_manifest(paths.snapshots)["snapshot_hash"]
    mutate, where, what = BAD_CASES[case]
    rows = small_ratings()
    mutate(rows)
    bad = write_small_raw(tmp_path / "bad", ratings=rows)
    with pytest.raises(RawDataError) as err:
        _ingest(paths, bad)
    assert where in str(err.value) and what in str(err.value)
    assert _contents(paths) == before
    assert read_snapshot_manifest(paths.snapshots)["snapshot_hash"] == snap


def test_undecodable_bytes_empty_and_missing_files_are_named(paths, tmp_path):
    bad = write_small_raw(tmp_path / "bytes")
    (bad / "u.user").write_bytes((bad / "u.user").read_bytes().replace(b"writer", b"wr\xffter"))
    with pytest.raises(RawDataError, match=r"u\.user line 3"):
        _ingest(paths, bad)
    empty = write_small_raw(tmp_path / "empty")
    (empty / "u.data").write_text("")
    with pytest.raises(RawDataError, match=r"u\.data.*empty"):
        _ingest(paths, empty)
    missing = write_small_raw(tmp_path / "missing")
    (missing / "u.item").unlink()
    with pytest.raises(RawDataError, match=r"u\.item"):
        _ingest(paths, missing)
    assert not paths.warehouse.exists() or _contents(paths)["interactions"] == []


def test_quarantine_commits_good_rows_and_keeps_bad_ones_with_reasons(paths, tmp_path):
    rows = small_ratings()
    rows[2] = rows[2].replace("\t", "\tx", 1)  # non-numeric item id
    rows[6] = "\t".join(rows[6].split("\t")[:2] + ["9"] + rows[6].split("\t")[3:])  # rating 9
    report = _ingest(paths, write_small_raw(tmp_path / "q", ratings=rows), quarantine=True)
    assert report.rejected == 2 and report.rows_after["interactions"] == 18
    assert report.rejected_by_reason == {"u.data, field item_id": 1, "u.data, field rating": 1}
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        kept = con.execute("SELECT file, line, field FROM quarantine ORDER BY line").fetchall()
    assert kept == [("u.data", 3, "item_id"), ("u.data", 7, "rating")]


def test_gate_failure_rolls_back(paths, small_raw, tmp_path):
    """A row the parser accepts but the GX gate rejects (an event after the data set's range)."""
    _ingest(paths, small_raw)
    before = _contents(paths)
    rows = small_ratings() + ["1\t2\t5\t1900000000"]  # 2030: in the future and after the range
    with pytest.raises(ValidationError) as err:
        _ingest(paths, write_small_raw(tmp_path / "future", ratings=rows))
    assert "interactions" in str(err.value) and "event_timestamp" in str(err.value)
    assert "at u.data line 21" in str(err.value)  # the appended row: 20 good lines before it
    assert _contents(paths) == before


def test_a_failed_first_ingest_leaves_no_warehouse(paths, tmp_path, capsys):
    """Rejected by the gate after the warehouse was opened: no empty warehouse stays behind (with one,
    `data status` called its snapshots current and `features apply` went ahead on nothing)."""
    rows = small_ratings() + ["1\t2\t5\t1900000000"]
    with pytest.raises(ValidationError):
        _ingest(paths, write_small_raw(tmp_path / "future", ratings=rows))
    assert not paths.warehouse.exists() and not paths.warehouse.with_name(paths.warehouse.name + ".wal").exists()
    assert cli.main(["data", "status"]) == 2 and "no warehouse at" in capsys.readouterr().err
    assert not paths.warehouse.exists()


def test_other_dataset_into_same_warehouse_is_refused(paths, small_raw):
    _ingest(paths, small_raw)
    with pytest.raises(WarehouseError, match="holds data set 'movielens-100k'"):
        ingest(load_spec("movielens-1m"), small_raw, paths.warehouse, paths.snapshots, gate)


def test_cli_ingest_and_validate_json(paths, small_raw, capsys):
    assert main(["data", "ingest", "--dataset", "movielens-100k", "--source", str(small_raw), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_after"]["interactions"] == 20
    assert main(["validate", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {s["name"] for s in report["suites"]} == {
        "users", "items", "interactions", "user_profile", "item_profile", "user_text", "item_text", "snapshots"}
    assert all(s["success"] for s in report["suites"])


def test_cli_validate_fails_on_a_corrupted_snapshot(paths, small_raw, capsys):
    _ingest(paths, small_raw)
    texts = pd.read_parquet(paths.snapshots / "user_text.parquet")
    texts.loc[0, "user_text"] = ""
    texts.to_parquet(paths.snapshots / "user_text.parquet")
    assert main(["validate"]) == 1
    out = capsys.readouterr().out
    assert "user_text" in out and "FAIL" in out


def test_cli_bad_input_exits_2_with_the_message(paths, tmp_path, capsys):
    rows = small_ratings()
    rows[0] = "1\t1\t9\t" + rows[0].split("\t")[3]
    code = main(["data", "ingest", "--source", str(write_small_raw(tmp_path / "b", ratings=rows))])
    assert code == 2
    assert "u.data line 1" in capsys.readouterr().err
