"""The generic tabular loader: a user's own export (CSV, TSV or parquet, their column names, their
time format, a rating or a click column, optional user / item tables), configured by the spec's
``source`` block alone - no Python.

Each table is read by DuckDB (``read_csv`` with every column as text, its reject store catching
structural problems such as a wrong column count or an unclosed quote, with the line; or
``read_parquet``), its columns renamed from the file's names to the spec's, then checked column by
column with the same row checks as every loader (``ingestion.rows``): errors name the file, the
1-based line (the header is line 1) and the spec field; ``quarantine`` sets bad rows aside.

Without a user (item) table the entity's fields come from the events table, a profile version per
run of unchanged values (valid from the first event of the run), or the entity has only its id.
"""

from __future__ import annotations

import glob
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from core.spec import DatasetSpec, EntityName, FieldSpec, Kind, TableSource
from ingestion.csvlines import FileLines
from ingestion.rows import (
    FileFormat,
    Parsed,
    RawDataError,
    RawTables,
    Rejected,
    allowed_text,
    check_duplicate_events,
    check_duplicates,
    check_field,
    check_int,
    check_rating,
    empty_table,
    int_column,
    require_raw_folder,
    to_int,
)

log = logging.getLogger("clickprompt.loaders")

EVENT_COLUMNS = ("rating", "timestamp")  # besides the two keys: what every events table provides


def resolve(folder: Path, source: TableSource, table: str) -> Path:
    """The one file a table reads: ``path`` relative to the raw folder, or a glob matching one file."""
    pattern = str(folder / source.path)
    found = sorted(glob.glob(pattern)) if any(c in source.path for c in "*?[") else [pattern]
    if len(found) != 1 or not Path(found[0]).is_file():
        what = "no file" if not found or not Path(found[0]).is_file() else f"{len(found)} files ({', '.join(found[:3])} ...)"
        raise RawDataError(source.path, None, None, f"{table} table: {what} at {pattern}", path=folder / source.path)
    return Path(found[0])


def read_table(path: Path, source: TableSource, table: str, quarantine: bool = False) -> Parsed:
    """Every column as text, in file order, with 1-based line numbers. Structural errors (a wrong field
    count, an unclosed quote) raise, or with ``quarantine`` become the returned rows' problems
    (``Parsed.settle`` sets those lines aside with the rest)."""
    import hashlib

    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    fmt = FileFormat(table, path.name, source.delimiter or ",", source.encoding, None)
    with duckdb.connect() as con:
        if source.format == "parquet":
            try:
                frame = con.execute("SELECT * FROM read_parquet(?)", [str(path)]).df()
            except duckdb.Error as exc:
                raise RawDataError(path.name, None, None, f"not a readable parquet file ({exc})", path=path) from None
            frame = frame.astype(object).where(frame.notna(), "").astype(str)
            line_no, lines, broken = np.arange(1, len(frame) + 1), _RowsAsJson(frame), []
        else:
            frame, line_no, lines, broken = _read_delimited(con, FileLines(path, source.encoding, data), source,
                                                            quarantine)
    if frame.empty:
        raise RawDataError(path.name, None, None, "file is empty (no data rows)", path=path)
    parsed = Parsed(fmt, path, sha, lines, list(frame.columns), frame.reset_index(drop=True), line_no)
    for line, column, reason in broken:  # quarantine: lines DuckDB could not split into the file's columns
        parsed.problems.add(np.array([line]), column, lambda _, r=reason: r)
    return parsed


class _RowsAsJson(Sequence):
    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i):
        return json.dumps(self.frame.iloc[i].to_dict(), ensure_ascii=False)


def _read_delimited(con: duckdb.DuckDBPyConnection, file_lines: FileLines, source: TableSource, quarantine: bool = False
                    ) -> tuple[pd.DataFrame, np.ndarray, Sequence[str], list[tuple[int, str | None, str]]]:
    """The rows as text, the physical line each starts on (``ingestion.csvlines``), the file's lines,
    and (``quarantine``; else the first raises) the (line, column, reason) of each line DuckDB rejected."""
    path = file_lines.path
    file_lines.check_line_ends(path.name)
    options = dict(delim=source.delimiter or ",", header=source.header, all_varchar=True, encoding=source.encoding,
                   store_rejects=True, null_padding=False, quote='"', escape='"')
    args = ", ".join(f"{k} = {_sql_value(v)}" for k, v in options.items())
    try:
        frame = con.execute(f"SELECT * FROM read_csv(?, {args})", [str(path)]).df()
        rejects = con.execute("SELECT line, line_byte_position, column_name, error_type, error_message, csv_line FROM reject_errors "
                              "ORDER BY line").df()
    except duckdb.Error as exc:  # an encoding error, a file that is not text ...
        raise RawDataError(path.name, None, None, f"cannot be read as {source.format} "
                           f"(separator {source.delimiter!r}, encoding {source.encoding}): {_first_line(exc)}",
                           path=path) from None
    broken = []
    for r in rejects.itertuples():
        line = file_lines.record_line_at(int(r.line_byte_position)) if pd.notna(r.line_byte_position) else int(r.line)
        column = None if r.column_name in (None, "") else str(r.column_name)
        kind = str(r.error_type).lower().replace("_", " ")
        reason = f"{kind}: {_first_line(r.error_message)}"
        # only a line of the wrong field count is set aside: an unclosed quote swallows the lines after
        # it into one record, and those must not vanish with it
        one_line = kind in ("too many columns", "missing columns") and not re.search(r"[\r\n]", str(r.csv_line or ""))
        if not (quarantine and one_line):
            raise RawDataError(path.name, line, column, f"{reason} ({len(rejects)} such line(s); separator "
                               f"{source.delimiter!r}" + ("; --quarantine sets them aside)" if one_line else ")"),
                               path=path)
        if not broken or broken[-1][0] != line:  # DuckDB may report one line twice (each bad column)
            broken.append((line, column, reason))
    if len(broken) >= max(len(frame), 1):  # the field count DuckDB settled on is more likely wrong than the lines
        line, column, reason = broken[0]
        raise RawDataError(path.name, line, column, f"{reason}: {len(broken)} lines of this kind and {len(frame)} "
                           f"others; the field count read from the file's first lines is likely not its own: "
                           "mend the file rather than set most of it aside", path=path)
    if frame.shape[1] == 1 and len(frame) and (source.delimiter or ",") not in str(frame.iloc[0, 0]) \
            and any(sep in str(frame.columns[0]) for sep in ",;\t|"):
        raise RawDataError(path.name, 1, None, f"one column {frame.columns[0]!r} only: the separator is not "
                           f"{source.delimiter!r}?", path=path)
    frame = frame.fillna("")
    line_no = file_lines.record_lines(source.header)
    if broken:  # DuckDB left the rejected records out of the frame
        line_no = line_no[~np.isin(line_no, [line for line, _, _ in broken])]
    if len(line_no) != len(frame):  # a dialect the scan does not follow: number the rows as read
        log.warning("%s: %d rows but %d records found: line numbers count rows", path.name, len(frame), len(line_no))
        first = 2 if source.header else 1
        line_no = np.arange(first, first + len(frame), dtype=np.int64)
    return frame, line_no, file_lines.lines(), broken


def _sql_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "'" + str(v).replace("'", "''") + "'"


def _first_line(exc) -> str:
    return str(exc).strip().splitlines()[0][:300]


def _rename(p: Parsed, mapping: dict[str, str], wanted: list[str]) -> None:
    """File columns -> spec names; a mapped or required column the file lacks raises, naming both."""
    present = set(p.frame.columns)
    for name in wanted:
        column = mapping.get(name, name)
        if column not in present:
            raise RawDataError(p.file, 1, column,
                               f"no column {column!r} for spec field {name} (the file has: "
                               f"{', '.join(map(str, p.frame.columns))})", path=p.path)
    p.frame = p.frame.rename(columns={mapping.get(n, n): n for n in wanted})[wanted]
    p.columns = list(wanted)
    p.renamed = {n: mapping[n] for n in wanted if mapping.get(n, n) != n}


def parse_times(p: Parsed, name: str, time_format: str) -> pd.Series:
    """A time column -> int64 unix seconds (UTC); unparsable values flagged on ``p``."""
    col = p.frame[name].str.strip()
    if time_format in ("unix_s", "unix_ms"):
        ok = check_int(p, name)
        out = pd.Series(0, index=col.index, dtype="int64")
        out[ok] = to_int(col[ok])
        # 10**11: milliseconds before 1973-03-03, or seconds after the year 5138 - the other unit, surely
        other = ok & ((out < 10**11) & (out > 0) if time_format == "unix_ms" else out >= 10**11)
        unit, fix = ("seconds", "unix_s") if time_format == "unix_ms" else ("milliseconds", "unix_ms")
        p.flag(other.to_numpy(), name, lambda v: f"{str(v).strip()!r} reads as {unit}, and the spec says time_format "
                                                 f"{time_format}: set `time_format: {fix}` in the spec's source block")
        return out // 1000 if time_format == "unix_ms" else out
    if time_format == "iso8601":
        ts, hint = pd.to_datetime(col, utc=True, errors="coerce", format="ISO8601"), "an ISO 8601 time"
    elif time_format == "date":
        ts, hint = pd.to_datetime(col, utc=True, errors="coerce", format="%Y-%m-%d"), "a date YYYY-MM-DD"
    else:  # a strftime pattern, e.g. %d/%m/%Y %H:%M
        ts, hint = pd.to_datetime(col, utc=True, errors="coerce", format=time_format), f"a time like {time_format}"
    bad = ts.isna()
    p.flag(bad.to_numpy(), name, lambda v: "missing time" if not str(v).strip() else f"{v!r} is not {hint}")
    seconds = (ts.astype("int64") // 10**9).where(~bad, 0)
    return seconds.astype("int64")


def multi_lists(p: Parsed, f: FieldSpec) -> pd.Series:
    """Multi-valued cells ('Comedy|Drama') -> lists in order of appearance, no duplicates; values
    outside the spec's allowed set flagged."""
    sep = f.separator or "|"
    parts = p.frame[f.name].str.split(sep, regex=False).map(
        lambda vals: list(dict.fromkeys(v.strip() for v in vals if v.strip())))
    if f.allowed is not None:
        allowed = set(f.allowed)
        bad = parts.map(lambda vals: next((v for v in vals if v not in allowed), None))
        text = allowed_text(f.allowed)
        p.flag(bad.notna().to_numpy(), f.name, lambda v: f"value {v!r} is not an allowed value ({text})", values=bad)
    return parts


def _typed(p: Parsed, fields: list[FieldSpec], lists: dict[str, pd.Series]) -> pd.DataFrame:
    out = {}
    for f in fields:
        if f.name in lists:
            out[f.name] = lists[f.name]
        elif f.dtype == "int64":
            out[f.name] = int_column(p, f.name)
        else:
            out[f.name] = p.frame[f.name].str.strip().replace("", None)
    return pd.DataFrame(out).reset_index(drop=True)


def _check_fields(p: Parsed, fields: list[FieldSpec]) -> dict[str, pd.Series]:
    lists = {}
    for f in fields:
        if f.kind == Kind.MULTI:
            lists[f.name] = multi_lists(p, f)
        else:
            check_field(p, f)
    return lists


def _profile_table(spec: DatasetSpec, entity: EntityName, folder: Path, source: TableSource, quarantine: bool,
                   rejected: list[Rejected], files: dict[str, str], lines: dict) -> pd.DataFrame:
    fields = spec.fields_of(entity)
    p = read_table(resolve(folder, source, f"{entity}s"), source, f"{spec.entities[entity].table}", quarantine)
    files[p.file] = p.sha256
    _rename(p, source.columns, [f.name for f in fields])
    lists = _check_fields(p, fields)
    check_duplicates(p, spec.entities[entity].key)
    for name, values in lists.items():
        p.frame[name] = values
    p.settle(quarantine, rejected)
    lines[spec.entities[entity].table] = (p.file, p.line_no.copy())
    return _typed(p, fields, {n: p.frame[n] for n in lists})


def _profiles_from_events(spec: DatasetSpec, entity: EntityName, events: pd.DataFrame) -> pd.DataFrame:
    """Versions of an entity's fields carried by the events: one per run of unchanged values, valid
    from the run's first event; only the id (valid from the data set's start) when none are mapped."""
    fields = [f.name for f in spec.fields_of(entity)]
    key = spec.entities[entity].key
    if fields == [key]:
        return pd.DataFrame({key: events[key].drop_duplicates().sort_values().to_numpy()})
    ordered = events.sort_values([key, "timestamp"], kind="stable")
    values = ordered[fields].map(lambda v: tuple(v) if isinstance(v, list) else v)
    changed = (values != values.shift()).any(axis=1) | (ordered[key] != ordered[key].shift())
    runs = ordered[changed.to_numpy()]
    runs = runs.drop_duplicates([key, "timestamp"], keep="last")
    return runs[fields].assign(valid_from=runs["timestamp"].to_numpy()).reset_index(drop=True)


def _absent(folder: Path, path: str) -> bool:
    """A batch may lack a table: its file (not a glob pattern, which ``resolve`` checks) is not there."""
    return not any(c in path for c in "*?[") and not (folder / path).exists()


def load_tabular(spec: DatasetSpec, source: Path, quarantine: bool = False, partial: bool = False) -> RawTables:
    """Read a data set laid out as its spec's ``source`` says into canonical tables (module doc).

    ``partial``: a batch of arrivals, which may lack any of the tables.
    """
    src = spec.source
    if src is None:
        raise ValueError(f"spec {spec.name} names loader 'tabular' but has no source block")
    folder = Path(source)
    require_raw_folder(folder, spec.name)
    rejected: list[Rejected] = []
    files: dict[str, str] = {}
    lines: dict[str, tuple[str, np.ndarray]] = {}
    keys = {e: spec.entities[e].key for e in spec.entity_order}
    on_events = {e: [f for f in spec.fields_of(e) if getattr(src, f"{e}s") is None] for e in keys}

    events_cols = list(dict.fromkeys([keys["user"], keys["item"], *EVENT_COLUMNS,
                                      *(f.name for e in keys for f in on_events[e])]))
    tables: dict[str, pd.DataFrame] = {}
    for entity in keys:  # profile files first: a whole load's events are checked against them
        table_src = getattr(src, f"{entity}s")
        if table_src is None:
            continue
        if partial and _absent(folder, table_src.path):
            tables[entity] = empty_table(spec.fields_of(entity))
        else:
            tables[entity] = _profile_table(spec, entity, folder, table_src, quarantine, rejected, files, lines)
    if partial and _absent(folder, src.events.path):
        events = pd.DataFrame({c: pd.Series(dtype="int64") for c in (keys["user"], keys["item"], *EVENT_COLUMNS)})
    else:
        p = read_table(resolve(folder, src.events, "events"), src.events, "interactions", quarantine)
        files[p.file] = p.sha256
        mapping = {**src.events.columns}
        if src.events.time_column:
            mapping["timestamp"] = src.events.time_column
        _rename(p, mapping, events_cols)
        event_fields = [spec.field(c) for c in events_cols if c not in EVENT_COLUMNS]
        lists = _check_fields(p, event_fields)
        ratings = check_rating(p, spec)
        seconds = parse_times(p, "timestamp", src.events.time_format)
        if not partial:  # a batch's events may use profiles of earlier batches (checked when it is committed)
            for entity in tables:
                key, where = keys[entity], getattr(src, f"{entity}s").path
                text = p.frame[key].str.strip()
                whole = text.str.fullmatch(r"-?\d+").fillna(False).to_numpy(dtype=bool)  # others: flagged already
                ids = pd.Series(0, index=text.index, dtype="int64")
                ids[whole] = to_int(text[whole])  # exact: a float column would blur ids past 2**53
                p.flag(whole & ~ids.isin(tables[entity][key]).to_numpy(), key,
                       lambda v, e=entity, w=where: f"{e} {str(v).strip()} has no profile in {w} (its row is missing "
                                                    "or was rejected): add or mend its row there, or drop its events")
        check_duplicate_events(p, pd.DataFrame({**{k: p.ints[k] if k in p.ints else pd.to_numeric(
            p.frame[k].str.strip(), errors="coerce") for k in (keys["user"], keys["item"])}, "timestamp": seconds}))
        for name, values in {**lists, "rating": ratings, "timestamp": seconds}.items():
            p.frame[name] = values
        p.settle(quarantine, rejected)
        lines["interactions"] = (p.file, p.line_no.copy())
        events = p.frame.copy()
        for f in event_fields:
            if f.dtype == "int64" and f.kind != Kind.MULTI:
                events[f.name] = to_int(events[f.name])
        events["rating"] = events["rating"].astype(spec.rating.dtype)
        events["timestamp"] = events["timestamp"].astype("int64")
    for entity in keys:
        if entity not in tables:  # no file of its own: its profiles come from the events
            tables[entity] = _profiles_from_events(spec, entity, events) if len(events) else empty_table(
                spec.fields_of(entity))
    if partial and not files:  # a batch without any of the spec's files: refused, not taken as an empty batch
        named = [t.path for t in (src.events, src.users, src.items) if t is not None]
        raise RawDataError(folder.name, None, None, f"no files of {spec.name} in {folder}: expected at least one of "
                           f"{', '.join(named)} (the spec's source block)", path=folder)
    interactions = events[[keys["user"], keys["item"], *EVENT_COLUMNS]].reset_index(drop=True)
    log.info("%s (spec %s, tabular): %d users, %d items, %d interactions, %d rejected rows", folder, spec.name,
             len(tables["user"]), len(tables["item"]), len(interactions), len(rejected))
    return RawTables(tables["user"], tables["item"], interactions, rejected, files, "tabular", lines)


