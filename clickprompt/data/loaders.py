"""Parse raw data set files into canonical pandas DataFrames, as the data set's spec says.

``load_raw(spec, folder)`` dispatches on ``spec.loader`` (``LOADERS``). The MovieLens loader
reads three layouts of the same data and gives the same canonical rows for each:

* GroupLens ML-100K: ``u.data`` (tab), ``u.user`` and ``u.item`` (``|``; u.item is latin-1,
  19 genre flags in the order of ``GENRE_ORDER``);
* GroupLens ML-1M: ``ratings.dat``, ``users.dat``, ``movies.dat`` (``::``; movies.dat latin-1);
* RecBole atomic files: ``<name>.inter``, ``.user``, ``.item`` (tab, with a typed header line
  such as ``user_id:token``).

Canonical tables (columns are the spec's field names, in spec order):

* users: user_id int64, gender str, age int64, occupation (str or int64 code, per the spec's
  dtype), zip_code str;
* items: item_id int64, title str (without the trailing `` (1995)``), release_year Int64
  (nullable), genres list[str] (GroupLens order);
* interactions: user_id, item_id, rating, timestamp (unix seconds), all int64.

Every row-level problem is reported with the file, its 1-based line number (the RecBole
header is line 1) and the field. Without quarantine the first problem raises RawDataError;
with ``quarantine=True`` bad rows are set aside in ``RawTables.rejected`` and good rows kept.
Whole-file problems (a missing or empty file, a bad header) always raise.

Parsing is vectorised: each file is split by pandas' C parser (all columns as str) and
checked column-wise; Python loops only run over the offending rows to format messages.
Range and pattern rules of the spec (age 1..100, zip code pattern, event time window) are
the quality gate's job (Great Expectations), not the parser's; the rating range is checked here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

import numpy as np
import pandas as pd

from clickprompt.data.spec import DatasetSpec, FieldSpec

log = logging.getLogger("clickprompt.loaders")

# The genre flag order of GroupLens u.item (and u.genre); genre lists are sorted in this order.
GENRE_ORDER: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


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


# --- file formats and layouts ------------------------------------------------------


@dataclass(frozen=True)
class _FileFormat:
    table: str
    name: str
    sep: str
    encoding: str  # "utf-8" (strict) or "latin-1" (checked for control characters instead)
    columns: tuple[str, ...] | None  # None: read from the header line (RecBole)

    @property
    def header(self) -> bool:
        return self.columns is None


@dataclass(frozen=True)
class _Layout:
    name: str
    users: _FileFormat
    items: _FileFormat
    interactions: _FileFormat

    @property
    def formats(self) -> tuple[_FileFormat, _FileFormat, _FileFormat]:
        return (self.users, self.items, self.interactions)


_GL100K = _Layout(
    "GroupLens ml-100k",
    users=_FileFormat("users", "u.user", "|", "utf-8", ("user_id", "age", "gender", "occupation", "zip_code")),
    items=_FileFormat(
        "items", "u.item", "|", "latin-1",
        ("item_id", "title", "release_date", "video_release_date", "imdb_url") + tuple(f"genre:{g}" for g in GENRE_ORDER),
    ),
    interactions=_FileFormat("interactions", "u.data", "\t", "utf-8", INTERACTION_COLUMNS),
)  # fmt: skip
_GL1M = _Layout(
    "GroupLens ml-1m",
    users=_FileFormat("users", "users.dat", "::", "utf-8", ("user_id", "gender", "age", "occupation", "zip_code")),
    items=_FileFormat("items", "movies.dat", "::", "latin-1", ("item_id", "title", "genres")),
    interactions=_FileFormat("interactions", "ratings.dat", "::", "utf-8", INTERACTION_COLUMNS),
)


def _recbole_layout(stem: str) -> _Layout:
    return _Layout(
        "RecBole atomic files",
        users=_FileFormat("users", f"{stem}.user", "\t", "utf-8", None),
        items=_FileFormat("items", f"{stem}.item", "\t", "utf-8", None),
        interactions=_FileFormat("interactions", f"{stem}.inter", "\t", "utf-8", None),
    )


# RecBole column names that differ from the canonical ones.
_RECBOLE_ALIASES = {"movie_title": "title", "class": "genres", "genre": "genres"}
# A known typo in RecBole's ml-100k.item (item 267, GroupLens' "unknown" movie).
_RECBOLE_TITLE_FIXES = {"unkonwn": "unknown"}

_SEP_WORDS = {"\t": "tab", "|": "'|'", "::": "'::'"}
_INT_RE = r"\s*-?[0-9]{1,18}(?:\.0*)?\s*"  # RecBole types ratings and timestamps as float: "4.0" is fine
_NON_INT_CHARS = re.compile(r"[^0-9\- \t]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0 (but tab, LF, CR), DEL, C1
_STRAY_CR_RE = re.compile(r"\r(?!\n)")
_MOJIBAKE_RE = re.compile(r"[\xc2-\xf4][\xa0-\xbf]")  # UTF-8 bytes read as latin-1: 'Ã©' for 'é'
_TITLE_YEAR_RE = r"^(?P<title>.*?)\s*\((?P<year>[0-9]{4})\)\s*(?:\((?:V|TV)\)\s*)?$"


# --- problems -----------------------------------------------------------------------


class _Problems:
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
class _Parsed:
    fmt: _FileFormat
    path: Path
    sha256: str
    lines: list[str]  # every line of the file as read (1-based line n is lines[n - 1])
    columns: list[str]  # canonical column names of ``frame``
    frame: pd.DataFrame  # one str column per raw column, one row per well-formed line
    line_no: np.ndarray  # 1-based line number of each frame row
    problems: _Problems = field(default_factory=_Problems)
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
        self.problems = _Problems()


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


def _read_file(path: Path, fmt: _FileFormat) -> _Parsed:
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
        columns = [_RECBOLE_ALIASES.get(n, n) for n in names]
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
                return _Parsed(fmt, path, sha, lines, columns, frame, good + 1, _Problems())

    # Slow path: find the offending lines, parse the rest.
    problems = _Problems()
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
    return _Parsed(fmt, path, sha, lines, columns, frame, good + 1, problems)


# --- column checks ------------------------------------------------------------------


def _check_int(p: _Parsed, name: str) -> pd.Series:
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


def _int_column(p: _Parsed, name: str) -> pd.Series:
    """An int64 column of the (settled) frame, reusing the conversion done while checking."""
    if name in p.ints:
        return pd.Series(p.ints[name], index=p.frame.index)
    return _to_int(p.frame[name])


def _to_int(col: pd.Series) -> pd.Series:
    try:
        return col.astype("int64")
    except ValueError:  # "4.0" (RecBole float columns)
        return col.str.strip().str.replace(r"\.0*$", "", regex=True).astype("int64")


def _allowed_text(values: list[str], limit: int = 25) -> str:
    shown = ", ".join(values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def _check_field(p: _Parsed, spec_field: FieldSpec) -> None:
    """Integer syntax (int64 fields) and the allowed set (categorical fields) of one raw str column."""
    name = spec_field.name
    col = p.frame[name]
    if spec_field.dtype == "int64":
        ok = _check_int(p, name)
        if spec_field.allowed is not None:
            try:
                allowed_ints = {int(a) for a in spec_field.allowed}
            except ValueError as exc:
                raise ValueError(f"spec field {name} is int64 but lists non-integer values {spec_field.allowed}") from exc
            ints = pd.Series(-1, index=col.index, dtype="int64")
            ints[ok] = _to_int(col[ok])
            bad = ok & ~ints.isin(allowed_ints)
            allowed = _allowed_text(spec_field.allowed)
            p.flag(bad, name, lambda v: f"{str(v).strip()!r} is not an allowed value ({allowed})")
    elif spec_field.allowed is not None and spec_field.kind.value != "multi":
        bad = ~col.str.strip().isin(spec_field.allowed)
        allowed = _allowed_text(spec_field.allowed)
        p.flag(bad, name, lambda v: f"{v!r} is not an allowed value ({allowed})")


def _check_duplicates(p: _Parsed, key: str) -> None:
    """Flag rows whose key repeats an earlier row's key (among rows without other problems)."""
    bad_lines = p.problems.bad_lines() if p.problems else np.array([], dtype=np.int64)
    clean = ~np.isin(p.line_no, bad_lines)
    keys = pd.Series(pd.NA, index=p.frame.index, dtype="Int64")
    keys[clean] = _to_int(p.frame.loc[clean, key])
    dup = keys.duplicated(keep="first").to_numpy() & clean
    if dup.any():
        first_line = pd.Series(p.line_no[clean], index=keys[clean].to_numpy()).groupby(level=0).min()
        p.flag(dup, key, lambda v: f"duplicate {key} {v} (first on line {first_line[int(v)]})", values=keys)


def _require_columns(p: _Parsed, names: list[str]) -> None:
    for name in names:
        if name not in p.frame.columns:
            raise RawDataError(
                p.file, 1 if p.fmt.header else None, name,
                f"no column for spec field {name} (columns: {', '.join(p.columns)})", path=p.path,
            )  # fmt: skip


# --- titles, years, genres ------------------------------------------------------------


def _split_title(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """'Toy Story (1995) ' -> ('Toy Story', '1995'); without a year: (stripped title, NA)."""
    parts = raw.str.extract(_TITLE_YEAR_RE)
    title = parts["title"].where(parts["title"].notna(), raw).str.strip()
    return title, parts["year"]


def _year(values: pd.Series) -> pd.Series:
    """4-digit years as nullable Int64; anything else (empty, 'unkonwn', 'V') is NA."""
    four = values.where(values.str.fullmatch(r"\s*[0-9]{4}\s*").fillna(False).astype(bool))
    return pd.to_numeric(four.str.strip(), errors="coerce").astype("Int64")


def _genre_lists(p: _Parsed, tokens: pd.Series, spec_field: FieldSpec) -> pd.Series:
    """Lists of genres from '|'-joined strings: allowed values checked, GroupLens order, no duplicates."""
    split = tokens.str.split("|")
    exploded = split.explode()
    exploded = exploded[exploded.notna() & (exploded.str.strip() != "")].str.strip()
    if spec_field.allowed is not None:
        unknown = exploded[~exploded.isin(spec_field.allowed)]
        if len(unknown):
            first_bad = unknown.groupby(level=0).first()
            mask = np.zeros(len(p.frame), dtype=bool)
            mask[first_bad.index.to_numpy()] = True
            values = pd.Series("", index=p.frame.index, dtype=object)
            values[first_bad.index] = first_bad.to_numpy()
            allowed = _allowed_text(spec_field.allowed)
            p.flag(mask, spec_field.name, lambda v: f"genre {v!r} is not an allowed value ({allowed})", values=values)
    rank = {g: k for k, g in enumerate(GENRE_ORDER)}
    frame = pd.DataFrame({"row": exploded.index, "genre": exploded.to_numpy()})
    frame["rank"] = frame["genre"].map(rank).fillna(len(rank)).astype(int)
    frame["pos"] = np.arange(len(frame))
    frame = frame.sort_values(["row", "rank", "pos"]).drop_duplicates(["row", "genre"])
    grouped = frame.groupby("row")["genre"].agg(list)
    values = grouped.reindex(p.frame.index).to_numpy(dtype=object)
    for i in np.flatnonzero(pd.isna(values)).tolist():  # rows without any genre
        values[i] = []
    return pd.Series(values, index=p.frame.index, dtype=object)


# --- building the canonical tables -------------------------------------------------------


def _typed(p: _Parsed, fields: list[FieldSpec], ready: Collection[str] = ()) -> pd.DataFrame:
    """The canonical table: int64 fields converted, str fields stripped, ``ready`` columns as they are."""
    out = {}
    for f in fields:
        if f.name in ready:
            out[f.name] = p.frame[f.name]
        elif f.dtype == "int64":
            out[f.name] = _int_column(p, f.name)
        else:
            out[f.name] = p.frame[f.name].str.strip()
    return pd.DataFrame(out).reset_index(drop=True)


def _build_items(p: _Parsed, spec: DatasetSpec, layout: str) -> dict[str, pd.Series]:
    """Derived item columns (title, release_year, genres) by layout; row problems are flagged on p."""
    fields = {f.name: f for f in spec.fields_of("item")}
    genres_field = fields.get("genres")
    frame = p.frame
    derived: dict[str, pd.Series] = {}
    if layout == _GL100K.name:
        title, title_year = _split_title(frame["title"])
        date_year = frame["release_date"].str.extract(r"([0-9]{4})\s*$")[0]
        derived["title"] = title
        derived["release_year"] = _year(title_year.fillna(date_year).fillna(""))
        flags = frame[[f"genre:{g}" for g in GENRE_ORDER]]
        bad = ~flags.isin(["0", "1"])
        bad_rows = bad.any(axis=1)
        if bad_rows.any():
            first_bad = bad[bad_rows].idxmax(axis=1)  # the first bad flag of each bad row
            what = pd.Series(None, index=frame.index, dtype=object)
            what[first_bad.index] = [(c.split(":", 1)[1], flags.at[i, c]) for i, c in first_bad.items()]
            p.flag(bad_rows.to_numpy(), "genres", lambda v: f"flag for genre {v[0]} is {v[1]!r}, not 0 or 1", values=what)
        joined = pd.Series("", index=frame.index, dtype=object)
        for g in GENRE_ORDER:
            joined = joined + np.where(flags[f"genre:{g}"].to_numpy() == "1", g + "|", "")
        tokens = joined.str.rstrip("|")
    elif layout == _GL1M.name:
        title, title_year = _split_title(frame["title"])
        derived["title"] = title
        derived["release_year"] = _year(title_year.fillna(""))
        tokens = frame["genres"]
    else:  # RecBole: title without year, release_year column, space-separated genres
        raw_title = frame["title"].str.strip().replace(_RECBOLE_TITLE_FIXES)
        year_col = frame["release_year"] if "release_year" in frame else pd.Series("", index=frame.index)
        year = _year(year_col)
        # where the year column is not a year (RecBole's 'V' for "... (1995) (V)"), take it from the title
        split_title, title_year = _split_title(raw_title)
        from_title = year.isna() & title_year.notna()
        derived["title"] = raw_title.where(~from_title, split_title)
        derived["release_year"] = year.where(~from_title, _year(title_year.fillna("")))
        tokens = frame["genres"].str.strip().str.replace(r"\s+", "|", regex=True)
    if genres_field is not None:
        derived["genres"] = _genre_lists(p, tokens.fillna(""), genres_field)
    return derived


def _detect_layout(folder: Path, spec: DatasetSpec) -> _Layout:
    if not folder.is_dir():
        raise RawDataError(folder.name, None, None, f"raw data folder {folder} does not exist", path=folder)
    candidates: list[_Layout] = [_GL100K, _GL1M]
    inters = sorted(p.stem for p in folder.glob("*.inter"))
    short = spec.name.replace("movielens-", "ml-")
    stems = [s for s in inters if s == short] or inters
    if stems:
        candidates.append(_recbole_layout(stems[0]))
    else:
        candidates.append(_recbole_layout(short))
    present = [(sum((folder / f.name).is_file() for f in lay.formats), k, lay) for k, lay in enumerate(candidates)]
    for n, _, lay in present:
        if n == 3:
            return lay
    n, _, best = max(present, key=lambda t: (t[0], -t[1]))
    if n == 0:
        expected = "; or ".join(f"{', '.join(f.name for f in lay.formats)} ({lay.name})" for lay in candidates)
        raise RawDataError(
            folder.name, None, None, f"no raw files of {spec.name} in {folder}: expected {expected}", path=folder
        )
    missing = next(f for f in best.formats if not (folder / f.name).is_file())
    raise RawDataError(
        missing.name, None, None, f"missing file: expected {missing.name} in {folder} ({best.name} layout)",
        path=folder / missing.name,
    )  # fmt: skip


def load_movielens(spec: DatasetSpec, source: Path, quarantine: bool = False) -> RawTables:
    """Read a MovieLens folder in any of the three layouts into canonical tables (see the module doc)."""
    folder = Path(source)
    layout = _detect_layout(folder, spec)
    rejected: list[Rejected] = []
    files: dict[str, str] = {}

    # users
    p = _read_file(folder / layout.users.name, layout.users)
    files[p.file] = p.sha256
    user_fields = spec.fields_of("user")
    _require_columns(p, [f.name for f in user_fields])
    for f in user_fields:
        _check_field(p, f)
    _check_duplicates(p, spec.entities["user"].key)
    p.settle(quarantine, rejected)
    users = _typed(p, user_fields)

    # items
    p = _read_file(folder / layout.items.name, layout.items)
    files[p.file] = p.sha256
    item_fields = spec.fields_of("item")
    key = spec.entities["item"].key
    raw_needed = [key, "title"] + (["genres"] if layout.name != _GL100K.name else [])
    _require_columns(p, [c for c in raw_needed if c in {f.name for f in item_fields}])
    _check_field(p, spec.field(key))
    derived = _build_items(p, spec, layout.name)
    for f in item_fields:
        if f.name not in derived and f.name != key:
            _require_columns(p, [f.name])
            _check_field(p, f)
    _check_duplicates(p, key)
    for name, values in derived.items():  # derived columns travel with their rows through settle()
        p.frame[name] = values
    p.settle(quarantine, rejected)
    items = _typed(p, item_fields, set(derived))

    # interactions
    p = _read_file(folder / layout.interactions.name, layout.interactions)
    files[p.file] = p.sha256
    _require_columns(p, list(INTERACTION_COLUMNS))
    ok = {name: _check_int(p, name) for name in INTERACTION_COLUMNS}["rating"]
    ratings = pd.Series(np.int64(spec.rating.min), index=p.frame.index)
    ratings[ok] = p.ints["rating"] if "rating" in p.ints else _to_int(p.frame.loc[ok, "rating"])
    lo, hi = spec.rating.min, spec.rating.max
    p.flag(((ratings < lo) | (ratings > hi)).to_numpy(), "rating", lambda v: f"{str(v).strip()!r} is outside {lo}..{hi}")
    p.settle(quarantine, rejected)
    interactions = pd.DataFrame({c: _int_column(p, c) for c in INTERACTION_COLUMNS}).reset_index(drop=True)

    log.info(
        "%s (%s): %d users, %d items, %d interactions, %d rejected rows",
        folder, layout.name, len(users), len(items), len(interactions), len(rejected),
    )  # fmt: skip
    return RawTables(users, items, interactions, rejected, files, layout.name)


LOADERS: dict[str, Callable[..., RawTables]] = {"movielens": load_movielens}


def load_raw(spec: DatasetSpec, source: Path, quarantine: bool = False) -> RawTables:
    """Parse the raw files in ``source`` into canonical tables with the loader the spec names."""
    try:
        loader = LOADERS[spec.loader]
    except KeyError:
        raise ValueError(f"spec {spec.name} names loader {spec.loader!r}; known: {', '.join(sorted(LOADERS))}") from None
    return loader(spec, Path(source), quarantine=quarantine)
