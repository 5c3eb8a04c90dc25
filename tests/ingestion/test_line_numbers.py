"""Line numbers are the file's physical lines - blank lines, quoted newlines, CRLF - in every error
and in the quarantine table (issue 23, item 3), through the real DuckDB reader and warehouse."""

from __future__ import annotations

import duckdb
import pytest

from ingestion.rows import RawDataError
from ingestion.warehouse import ingest
from tests.ingestion.test_tabular import own_data  # noqa: F401  (fixture)
from validation import gate
from validation.runner import ValidationError

BAD_ROW = "7,3,5,2024-03-05T10:00:00Z,Comedy"  # rating 5 is outside 0..1


def _reshape(folder, crlf: bool, bad_row: str = BAD_ROW) -> tuple[list[str], int]:
    """clicks.csv with a blank line after line 100, two quoted newlines in row 150's category, the bad
    row appended; returns the physical lines and the bad row's line number."""
    lines = (folder / "clicks.csv").read_text().splitlines()
    head, rest = lines[:100], lines[100:]
    row = rest[50].split(",")
    row[4] = f'"\n{row[4]}\n"'  # the same categories (each value is stripped), over three lines
    rest[50] = ",".join(row)
    physical = [*head, "", *"\n".join(rest).split("\n"), *bad_row.split("\n")]  # a bad row may bring blank lines
    end = "\r\n" if crlf else "\n"
    (folder / "clicks.csv").write_bytes((end.join(physical) + end).encode())
    return physical, len(physical)


@pytest.mark.parametrize("crlf", [False, True])
def test_errors_and_quarantine_name_the_physical_line(own_data, crlf):  # noqa: F811
    paths, spec = own_data
    folder = paths.raw(spec.name)
    physical, bad_line = _reshape(folder, crlf)
    assert physical[bad_line - 1] == BAD_ROW and bad_line == 805  # header, 800 rows, a blank line, 2 quoted newlines
    with pytest.raises(RawDataError, match=rf"^clicks.csv line {bad_line}, field rating \(column 'clicked'\): '5' is outside 0..1$"):
        ingest(spec, folder, paths.warehouse, paths.snapshots, gate)
    report = ingest(spec, folder, paths.warehouse, paths.snapshots, gate, quarantine=True)
    assert report.rejected == 1 and report.rows_after["interactions"] == 800
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        kept = con.execute("SELECT file, line, field, raw FROM quarantine").fetchall()
    assert kept == [("clicks.csv", bad_line, "rating", BAD_ROW)]


@pytest.mark.parametrize("crlf", [False, True])  # DuckDB's byte position of a rejected line differs by one
@pytest.mark.parametrize("bad_row, error", [(BAD_ROW.replace("5,", "1,") + ",extra", "too many columns"),
                                            ("7,3,1", "missing columns"),
                                            ("\n\n7,3,1", "missing columns")])  # right after two blank lines
def test_a_structural_error_after_a_blank_line_and_quoted_newlines_names_its_physical_line(
        own_data, crlf, bad_row, error):  # noqa: F811
    paths, spec = own_data
    _, bad_line = _reshape(paths.raw(spec.name), crlf=crlf, bad_row=bad_row)
    with pytest.raises(RawDataError, match=rf"^clicks.csv line {bad_line}(, field \w+)?: {error}"):
        ingest(spec, paths.raw(spec.name), paths.warehouse, paths.snapshots, gate)


def test_mixed_line_endings_name_the_first_line_that_differs(own_data):  # noqa: F811
    paths, spec = own_data
    folder = paths.raw(spec.name)
    lines = (folder / "clicks.csv").read_text().splitlines()
    text = "\r\n".join(lines[:41]) + "\r\n" + "\n".join(lines[41:]) + "\n"  # line 42 on: LF
    (folder / "clicks.csv").write_bytes(text.encode())
    with pytest.raises(RawDataError, match=r"^clicks.csv line 42: mixed line endings: this line ends with LF, "
                                           r"line 1 with CRLF \(Windows\); save the file with one kind of line end$"):
        ingest(spec, folder, paths.warehouse, paths.snapshots, gate)


def test_a_row_the_gate_rejects_names_its_physical_line(own_data):  # noqa: F811
    """A row the parser takes but the GX gate rejects (an event in the future) is named by file and
    physical line too, past a blank line and a quoted field over three lines."""
    paths, spec = own_data
    future = "7,3,1,2099-03-05T10:00:00Z,Comedy"
    _, bad_line = _reshape(paths.raw(spec.name), crlf=False, bad_row=future)
    with pytest.raises(ValidationError, match=rf"column event_timestamp: 1 unexpected, e\.g\. \[\"2099-03-05T10:00:00"
                                              rf"\+00:00\"\] \(.*\) at clicks.csv line {bad_line}$"):
        ingest(spec, paths.raw(spec.name), paths.warehouse, paths.snapshots, gate)
