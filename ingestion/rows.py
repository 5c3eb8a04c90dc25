"""Generic row-level reading of raw files: split a delimited file, check every column, and name the
file, 1-based line and field of each problem (``RawDataError``), or set bad rows aside (quarantine).

A data set's loader (``ingestion.loaders``) describes its files (``FileFormat``) and canonical
tables; everything here is independent of the data set. Parsing is vectorised: each file is split
by pandas' C parser (all columns as str) and checked column-wise; Python loops only run over the
offending rows to format messages.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

import numpy as np
import pandas as pd

from core.spec import FieldSpec

# --- public types -----------------------------------------------------------------


class RawDataError(ValueError):
    """A problem in a raw file: which file, 1-based line (None: the whole file), field (None: n/a), why."""

    def __init__(
        self, file: str, line: int | None = None, field: str | None = None, reason: str = "", *, path: Path | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.reason = reason
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f" line {self.line}"
        if self.field is not None:
            where += f", field {self.field}"
        return f"{where}: {self.reason}"

    def __reduce__(self):
        return (_rebuild_error, (self.file, self.line, self.field, self.reason, self.path))


def _rebuild_error(file, line, field, reason, path):  # pickle support for the keyword-only path
    return RawDataError(file, line, field, reason, path=path)


@dataclass
class Rejected:
    table: str  # users | items | interactions
    file: str
    line: int
    field: str | None
    reason: str
    raw: str  # the line's text as read

    def __str__(self) -> str:
        return str(RawDataError(self.file, self.line, self.field, self.reason))


@dataclass
class RawTables:
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    rejected: list[Rejected]
    files: dict[str, str]  # raw file name -> sha256 of its bytes
    layout: str = ""  # which raw layout was read
    # table -> (file name, 1-based line of each row): what later checks (the warehouse's) name
    lines: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)


# --- file formats and layouts ------------------------------------------------------


@dataclass(frozen=True)
class FileFormat:
    table: str
    name: str
    sep: str
    encoding: str  # "utf-8" (strict) or "latin-1" (checked for control characters instead)
    columns: tuple[str, ...] | None  # None: read from the header line (RecBole)
    aliases: tuple[tuple[str, str], ...] = ()  # header names that differ from the canonical ones

    @property
    def header(self) -> bool:
        return self.columns is None


_SEP_WORDS = {"\t": "tab", "|": "'|'", "::": "'::'"}
_INT_RE = r"\s*-?[0-9]{1,18}(?:\.0*)?\s*"  # RecBole types ratings and timestamps as float: "4.0" is fine
_NON_INT_CHARS = re.compile(r"[^0-9\- \t]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0 (but tab, LF, CR), DEL, C1
_STRAY_CR_RE = re.compile(r"\r(?!\n)")
_MOJIBAKE_RE = re.compile(r"[\xc2-\xf4][\xa0-\xbf]")  # UTF-8 bytes read as latin-1: 'Ã©' for 'é'

# --- problems -----------------------------------------------------------------------


class Problems:
    """Problems of one file: per check, the offending 1-based line numbers and a message maker."""

    def __init__(self) -> None:
        self.checks: list[tuple[np.ndarray, str | None, Callable[[int], str]]] = []

    def add(self, lines: np.ndarray, field: str | None, reason: Callable[[int], str]) -> None:
        lines = np.asarray(lines, dtype=np.int64)
        if len(lines):
            self.checks.append((lines, field, reason))

    def __bool__(self) -> bool:
        return bool(self.checks)

    def first(self) -> tuple[int, str | None, str]:
        best: tuple[int, int, int] | None = None  # (line, check order, index)
        for k, (lines, _, _) in enumerate(self.checks):
            i = int(np.argmin(lines))
            if best is None or (int(lines[i]), k) < best[:2]:
                best = (int(lines[i]), k, i)
        assert best is not None
        line, k, i = best
        return line, self.checks[k][1], self.checks[k][2](i)

    def per_line(self) -> dict[int, tuple[str | None, str]]:
        """Line -> (field, reason) of its first problem (checks run in field order)."""
        found: dict[int, tuple[str | None, str]] = {}
        for lines, fld, reason in self.checks:
            for i, line in enumerate(lines.tolist()):
                if line not in found:
                    found[line] = (fld, reason(i))
        return found

    def bad_lines(self) -> np.ndarray:
        return np.unique(np.concatenate([lines for lines, _, _ in self.checks]))


@dataclass
class Parsed:
    fmt: FileFormat
    path: Path
    sha256: str
    lines: list[str]  # every line of the file as read (1-based line n is lines[n - 1])
    columns: list[str]  # canonical column names of ``frame``
    frame: pd.DataFrame  # one str column per raw column, one row per well-formed line
    line_no: np.ndarray  # 1-based line number of each frame row
    problems: Problems = field(default_factory=Problems)
    ints: dict[str, np.ndarray] = field(default_factory=dict)  # int64 columns converted while checking

    @property
    def file(self) -> str:
        return self.fmt.name

    def flag(self, mask: np.ndarray | pd.Series, fld: str | None, reason: Callable[[Any], str], values=None) -> None:
        """Record the rows where mask is True; reason(value) formats one message."""
        rows = np.flatnonzero(np.asarray(mask, dtype=bool))
        if not len(rows):
            return
        vals = (self.frame[fld] if values is None else values).to_numpy()[rows]
        self.problems.add(self.line_no[rows], fld, lambda i: reason(vals[i]))

    def settle(self, quarantine: bool, rejected: list[Rejected]) -> None:
        """Raise the first problem, or (quarantine) move the bad rows to ``rejected``."""
        if not self.problems:
            return
        if not quarantine:
            line, fld, reason = self.problems.first()
            raise RawDataError(self.file, line, fld, reason, path=self.path)
        for line, (fld, reason) in sorted(self.problems.per_line().items()):
            rejected.append(Rejected(self.fmt.table, self.file, line, fld, reason, self.lines[line - 1]))
        keep = ~np.isin(self.line_no, self.problems.bad_lines())
        self.frame = self.frame.loc[keep].reset_index(drop=True)
        self.line_no = self.line_no[keep]
        self.ints = {name: values[keep] for name, values in self.ints.items()}
        self.problems = Problems()


# --- reading one file ---------------------------------------------------------------


def _line_of(positions: np.ndarray, newline_positions: np.ndarray) -> np.ndarray:
    """0-based line index of each character/byte position."""
    return np.searchsorted(newline_positions, positions, side="right")


def _field_at(line: str, offset: int, sep: str, columns: list[str] | None) -> str | None:
    k = line[:offset].count(sep)
    return columns[k] if columns is not None and k < len(columns) else None


def _constant(reason: str) -> Callable[[int], str]:
    return lambda _i: reason


def _separator_counts(text: str, sep: str, n_lines: int) -> np.ndarray:
    """Number of ``sep`` characters on each line of text, computed with numpy (no per-line loop)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    newlines = np.flatnonzero(codes == 10)
    line_of_sep = np.searchsorted(newlines, np.flatnonzero(codes == ord(sep)))
    return np.bincount(line_of_sep, minlength=n_lines)[:n_lines].astype(np.int64)


def _parse(body: str, sep: str, columns: list[str]) -> pd.DataFrame:
    frame = pd.read_csv(
        io.StringIO(body), sep=sep, header=None, names=range(len(columns)), dtype=str,
        quoting=csv.QUOTE_NONE, keep_default_na=False, na_filter=False, skip_blank_lines=False,
        engine="c",
    )  # fmt: skip
    frame.columns = columns
    return frame


def read_file(path: Path, fmt: FileFormat) -> Parsed:
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if not data.strip():
        raise RawDataError(fmt.name, None, None, "file is empty", path=path)
    text_problems: list[tuple[int, int, str]] = []  # (0-based line index, char offset in line, reason)

    if fmt.encoding == "utf-8":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
            starts = np.concatenate([[0], newlines + 1])
            high = np.fromiter((m.start() for m in re.finditer(rb"[\x80-\xff]+", data)), dtype=np.int64)
            for idx in np.unique(_line_of(high, newlines)).tolist():
                raw = data[starts[idx] : (newlines[idx] if idx < len(newlines) else len(data))]
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad = raw[exc.start : exc.end]
                    prefix = raw[: exc.start].decode("utf-8", errors="replace")
                    text_problems.append((idx, len(prefix), f"undecodable bytes {bad!r} (the file must be UTF-8)"))
            text = data.decode("utf-8", errors="replace")  # the bad lines are set aside below
    else:
        text = data.decode(fmt.encoding)  # latin-1 never fails: look for control characters instead

    hits = [(m.start(), m.group()) for m in _CONTROL_RE.finditer(text)]
    if "\r" in text:  # a carriage return is fine only as part of a CRLF line end
        hits += [(m.start(), m.group()) for m in _STRAY_CR_RE.finditer(text)]
    if fmt.encoding == "latin-1":
        hits += [(m.start(), m.group()) for m in _MOJIBAKE_RE.finditer(text)]
    if hits:
        newlines = np.flatnonzero(np.frombuffer(text.encode("utf-32-le"), dtype="<u4") == 10)
        starts = np.concatenate([[0], newlines + 1])
        idxs = _line_of(np.array([h[0] for h in hits], dtype=np.int64), newlines)
        for (pos, chars), idx in zip(hits, idxs.tolist()):
            if len(chars) == 1:
                why = f"control character U+{ord(chars):04X} (wrong encoding? {fmt.name} must be {fmt.encoding})"
            else:
                why = f"{chars!r} looks like UTF-8 read as latin-1 ({fmt.name} must be latin-1)"
            text_problems.append((idx, pos - int(starts[idx]), why))
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if not text.endswith("\n"):
        text += "\n"

    lines = text.split("\n")
    lines.pop()  # the empty string after the last line end

    # header (RecBole): "user_id:token\tage:token\t..."
    first = 0
    if fmt.header:
        if any(idx == 0 for idx, _, _ in text_problems):
            idx, off, why = min(p for p in text_problems if p[0] == 0)
            raise RawDataError(fmt.name, 1, None, f"header line: {why}", path=path)
        names = [h.split(":", 1)[0].strip() for h in lines[0].split(fmt.sep)]
        columns = [dict(fmt.aliases).get(n, n) for n in names]
        if len(set(columns)) != len(columns):
            raise RawDataError(fmt.name, 1, None, f"header line has duplicate columns: {lines[0]!r}", path=path)
        first = 1
        if not any(line.strip() for line in lines[1:]):
            raise RawDataError(fmt.name, None, None, "file has a header line but no data rows", path=path)
    else:
        columns = list(fmt.columns)  # type: ignore[arg-type]

    sep = "\x1f" if len(fmt.sep) > 1 else fmt.sep  # the C parser wants one character
    n_lines = len(lines) - first
    if not text_problems:
        # Fast path: the C parser raises on a line with too many fields; a line with too few
        # (or a blank one) leaves the total separator count short of (columns - 1) * lines.
        body = text[len(lines[0]) + 1 :] if first else text
        if sep != fmt.sep:
            body = body.replace(fmt.sep, sep)  # safe: no control characters in the file
        if body.count(sep) == (len(columns) - 1) * n_lines:
            try:
                frame = _parse(body, sep, columns)
            except pd.errors.ParserError:
                frame = None
            if frame is not None and len(frame) == n_lines:
                good = np.arange(first, len(lines), dtype=np.int64)
                return Parsed(fmt, path, sha, lines, columns, frame, good + 1, Problems())

    # Slow path: find the offending lines, parse the rest.
    problems = Problems()
    skip: set[int] = set()
    if text_problems:
        text_problems.sort()
        seen: dict[int, tuple[str | None, str]] = {}
        for idx, off, why in text_problems:
            if idx >= first and idx not in seen:
                seen[idx] = (_field_at(lines[idx], off, fmt.sep, columns), why)
        for idx, (fld, why) in seen.items():
            problems.add(np.array([idx + 1]), fld, _constant(why))
        skip.update(seen)
    expected = len(columns) - 1
    one_char = text.replace(fmt.sep, sep) if sep != fmt.sep else text
    counts = _separator_counts(one_char, sep, len(lines))
    counts[:first] = expected
    wrong = [i for i in np.flatnonzero(counts != expected).tolist() if i not in skip]
    skip.update(i for i in wrong if not lines[i].strip())  # blank lines are skipped silently
    miscounted = np.array([i for i in wrong if lines[i].strip()], dtype=np.int64)
    if len(miscounted):
        found = counts[miscounted] + 1
        sep_word = _SEP_WORDS.get(fmt.sep, repr(fmt.sep))
        problems.add(
            miscounted + 1, None,
            lambda i: f"wrong field count: expected {len(columns)} {sep_word}-separated fields, found {found[i]}",
        )  # fmt: skip
        skip.update(miscounted.tolist())
    keep = np.ones(len(lines), dtype=bool)
    keep[:first] = False
    keep[list(skip)] = False
    good = np.flatnonzero(keep)
    body = "\n".join(np.asarray(one_char.split("\n")[: len(lines)], dtype=object)[good].tolist())
    frame = _parse(body, sep, columns) if len(good) else pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    if len(frame) != len(good):  # cannot happen when every line has the right field count
        raise RawDataError(fmt.name, None, None, f"parsed {len(frame)} rows from {len(good)} lines", path=path)
    return Parsed(fmt, path, sha, lines, columns, frame, good + 1, problems)


# --- column checks ------------------------------------------------------------------


def check_int(p: Parsed, name: str) -> pd.Series:
    """Flag values that are not integers; return the mask of good values.

    Fast path: the C-level int conversion succeeds and the column holds nothing but ASCII digits,
    minus signs and blanks (int() alone would also take '+5', '5_000' or non-ASCII digits).
    Otherwise a regex finds the offending rows.
    """
    col = p.frame[name]
    try:
        ints = col.astype("int64").to_numpy()
        if not _NON_INT_CHARS.search("".join(col.to_numpy())):
            p.ints[name] = ints
            return pd.Series(True, index=col.index)
    except (ValueError, OverflowError):
        pass
    ok = col.str.fullmatch(_INT_RE).fillna(False).to_numpy(dtype=bool)
    p.flag(~ok, name, lambda v: "missing value (expected an integer)" if not str(v).strip() else f"{v!r} is not an integer")
    return pd.Series(ok, index=col.index)


def int_column(p: Parsed, name: str) -> pd.Series:
    """An int64 column of the (settled) frame, reusing the conversion done while checking."""
    if name in p.ints:
        return pd.Series(p.ints[name], index=p.frame.index)
    return to_int(p.frame[name])


def to_int(col: pd.Series) -> pd.Series:
    try:
        return col.astype("int64")
    except ValueError:  # "4.0" (RecBole float columns)
        return col.str.strip().str.replace(r"\.0*$", "", regex=True).astype("int64")


def allowed_text(values: list[str], limit: int = 25) -> str:
    shown = ", ".join(values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def check_field(p: Parsed, spec_field: FieldSpec) -> None:
    """Integer syntax (int64 fields) and the allowed set (categorical fields) of one raw str column."""
    name = spec_field.name
    col = p.frame[name]
    if spec_field.dtype == "int64":
        ok = check_int(p, name)
        if spec_field.allowed is not None:
            try:
                allowed_ints = {int(a) for a in spec_field.allowed}
            except ValueError as exc:
                raise ValueError(f"spec field {name} is int64 but lists non-integer values {spec_field.allowed}") from exc
            ints = pd.Series(-1, index=col.index, dtype="int64")
            ints[ok] = to_int(col[ok])
            bad = ok & ~ints.isin(allowed_ints)
            allowed = allowed_text(spec_field.allowed)
            p.flag(bad, name, lambda v: f"{str(v).strip()!r} is not an allowed value ({allowed})")
    elif spec_field.allowed is not None and spec_field.kind.value != "multi":
        bad = ~col.str.strip().isin(spec_field.allowed)
        allowed = allowed_text(spec_field.allowed)
        p.flag(bad, name, lambda v: f"{v!r} is not an allowed value ({allowed})")


def check_duplicates(p: Parsed, key: str) -> None:
    """Flag rows whose key repeats an earlier row's key (among rows without other problems)."""
    bad_lines = p.problems.bad_lines() if p.problems else np.array([], dtype=np.int64)
    clean = ~np.isin(p.line_no, bad_lines)
    keys = pd.Series(pd.NA, index=p.frame.index, dtype="Int64")
    keys[clean] = to_int(p.frame.loc[clean, key])
    dup = keys.duplicated(keep="first").to_numpy() & clean
    if dup.any():
        first_line = pd.Series(p.line_no[clean], index=keys[clean].to_numpy()).groupby(level=0).min()
        p.flag(dup, key, lambda v: f"duplicate {key} {v} (first on line {first_line[int(v)]})", values=keys)


def require_columns(p: Parsed, names: list[str]) -> None:
    for name in names:
        if name not in p.frame.columns:
            raise RawDataError(
                p.file, 1 if p.fmt.header else None, name,
                f"no column for spec field {name} (columns: {', '.join(p.columns)})", path=p.path,
            )  # fmt: skip


# --- building the canonical tables -------------------------------------------------------


def empty_table(fields: list[FieldSpec]) -> pd.DataFrame:
    """A canonical table without rows (a batch that brings no file for it)."""
    return pd.DataFrame({f.name: pd.Series(dtype="int64" if f.dtype == "int64" else object) for f in fields})


def typed_table(p: Parsed, fields: list[FieldSpec], ready: Collection[str] = ()) -> pd.DataFrame:
    """The canonical table: int64 fields converted, str fields stripped, ``ready`` columns as they are."""
    out = {}
    for f in fields:
        if f.name in ready:
            out[f.name] = p.frame[f.name]
        elif f.dtype == "int64":
            out[f.name] = int_column(p, f.name)
        else:
            out[f.name] = p.frame[f.name].str.strip()
    return pd.DataFrame(out).reset_index(drop=True)
