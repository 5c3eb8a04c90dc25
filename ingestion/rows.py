"""Generic row-level reading of raw files: split a delimited file, check every column, and name the
file, 1-based line and field of each problem (``RawDataError``), or set bad rows aside (quarantine).

A data set's loader (``ingestion.loaders``) describes its files (``FileFormat``) and canonical
tables; everything here is independent of the data set. Parsing is vectorised: each file is split
by pandas' C parser (all columns as str) and checked column-wise; Python loops only run over the
offending rows to format messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

import numpy as np
import pandas as pd

from core.spec import DatasetSpec, FieldSpec

# --- public types -----------------------------------------------------------------


class RawDataError(ValueError):
    """A problem in a raw file: which file, 1-based line (None: the whole file), field (None: n/a), why."""

    def __init__(
        self, file: str, line: int | None = None, field: str | None = None, reason: str = "", *, path: Path | None = None,
        column: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.reason = reason
        self.path = path
        self.column = column  # the file's own name of the field's column, where the spec maps another
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f" line {self.line}"
        if self.field is not None:
            where += f", field {self.field}" + (f" (column {self.column!r})" if self.column not in (None, self.field) else "")
        return f"{where}: {self.reason}"

    def __reduce__(self):
        return (_rebuild_error, (self.file, self.line, self.field, self.reason, self.path, self.column))


def require_raw_folder(folder: Path, dataset: str) -> None:
    """``folder`` (a data set's raw files) exists, else RawDataError naming the fetch that makes it."""
    if not folder.is_dir():
        raise RawDataError(folder.name, None, None, f"raw data folder {folder} does not exist: fetch the files "
                           f"first (`clickprompt data fetch {dataset}`; your own: `--from FOLDER`)", path=folder)


def _rebuild_error(file, line, field, reason, path, column=None):  # pickle support for the keyword-only ones
    return RawDataError(file, line, field, reason, path=path, column=column)


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


_INT_RE = r"\s*-?[0-9]{1,18}(?:\.0*)?\s*"  # RecBole types ratings and timestamps as float: "4.0" is fine
_NON_INT_CHARS = re.compile(r"[^0-9\- \t]")

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
    renamed: dict[str, str] = field(default_factory=dict)  # spec field -> the file's column, where they differ

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
            raise RawDataError(self.file, line, fld, reason, path=self.path, column=self.renamed.get(fld))
        for line, (fld, reason) in sorted(self.problems.per_line().items()):
            rejected.append(Rejected(self.fmt.table, self.file, line, fld, reason, self.lines[line - 1]))
        keep = ~np.isin(self.line_no, self.problems.bad_lines())
        self.frame = self.frame.loc[keep].reset_index(drop=True)
        self.line_no = self.line_no[keep]
        self.ints = {name: values[keep] for name, values in self.ints.items()}
        self.problems = Problems()


# --- column checks ------------------------------------------------------------------


def check_int(p: Parsed, name: str, fraction_hint: str = "") -> pd.Series:
    """Flag values that are not integers; return the mask of good values. ``fraction_hint`` is added
    to the message of a value that is a number with a fraction ('4.5'): what to do about it.

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

    def reason(v) -> str:
        if not str(v).strip():
            return "missing value (expected an integer)"
        if fraction_hint and np.isfinite(pd.to_numeric(str(v).strip(), errors="coerce")):
            return f"{v!r} is not a whole number: {fraction_hint}"
        return f"{v!r} is not an integer"

    p.flag(~ok, name, reason)
    return pd.Series(ok, index=col.index)


def check_rating(p: Parsed, spec: DatasetSpec) -> pd.Series:
    """The ``rating`` column as the spec's dtype (int64, or float64 for fractional scales), every value
    checked: a number of that kind inside rating.min..max. Flagged rows hold rating.min."""
    scale = spec.rating
    lo, hi = scale.min, scale.max
    col = p.frame["rating"]
    if scale.dtype == "float64":
        numbers = pd.to_numeric(col.str.strip(), errors="coerce").to_numpy(dtype="float64")
        ok = np.isfinite(numbers)
        p.flag(~ok, "rating", lambda v: "missing value (expected a number)" if not str(v).strip()
               else f"{str(v).strip()!r} is not a finite number")
        ratings = pd.Series(np.where(ok, numbers, float(lo)), index=col.index)
    else:
        ok = check_int(p, "rating", fraction_hint=(
            f"spec {spec.name} has whole-number ratings ({lo}..{hi}); for a scale with fractions such as half "
            f"stars set `rating: {{min: ..., max: ..., dtype: float64}}` in {spec.name}.yaml")).to_numpy()
        ratings = pd.Series(np.int64(lo), index=col.index)
        ratings[ok] = p.ints["rating"][ok] if "rating" in p.ints else to_int(col[ok])
    p.flag(ok & ((ratings < lo) | (ratings > hi)).to_numpy(), "rating",
           lambda v: f"{str(v).strip()!r} is outside {lo}..{hi}")
    return ratings


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
    """Integer syntax (int64 fields), real numbers (numeric fields) and the allowed set (categorical
    fields) of one raw str column."""
    name = spec_field.name
    col = p.frame[name]
    if spec_field.kind.value == "numeric" and spec_field.dtype != "int64":  # cast to DOUBLE; it scales a vector
        numbers = pd.to_numeric(col.str.strip(), errors="coerce").to_numpy(dtype="float64")
        p.flag(~np.isfinite(numbers), name, lambda v: "missing value (expected a number)" if not str(v).strip()
               else f"{str(v).strip()!r} is not a finite number")
    elif spec_field.dtype == "int64":
        ok = check_int(p, name)
        if spec_field.kind.value == "id":
            ok = _check_id(p, spec_field, ok)
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


def _check_id(p: Parsed, f: FieldSpec, ok: pd.Series) -> pd.Series:
    """An id is a whole number (no '5.0') inside the spec's range (``range: [1, ...]``: no -5)."""
    col = p.frame[f.name]
    if f.name not in p.ints:  # the fast path saw only digits, signs and blanks
        fraction = ok & col.str.contains(".", regex=False)
        p.flag(fraction, f.name, lambda v: f"{str(v).strip()!r} is not a whole number (ids are integers)")
        ok = ok & ~fraction
    if f.range is not None:
        lo, hi = f.range
        shown = "..".join(str(int(b)) if float(b).is_integer() else str(b) for b in (lo, hi))
        ints = pd.Series(p.ints[f.name], index=col.index) if f.name in p.ints else pd.Series(0, index=col.index)
        if f.name not in p.ints:
            ints[ok] = to_int(col[ok])
        outside = ok & ((ints < lo) | (ints > hi))
        p.flag(outside, f.name, lambda v: f"{str(v).strip()!r} is outside the spec's range {shown} of {f.name}")
        ok = ok & ~outside
    return ok


def check_duplicate_events(p: Parsed, keys: pd.DataFrame) -> None:
    """Flag events repeating an earlier row's (user, item, time), naming that row's line. ``keys``:
    the typed key columns, aligned with ``p.frame`` (rows already flagged are not compared)."""
    bad_lines = p.problems.bad_lines() if p.problems else np.array([], dtype=np.int64)
    clean = ~np.isin(p.line_no, bad_lines)
    keys = keys.reset_index(drop=True)
    dup = keys.duplicated(keep=False).to_numpy() & clean
    if not dup.any():
        return
    rows = keys[dup].assign(_line=p.line_no[dup])
    first = rows.groupby(list(keys.columns), sort=False)["_line"].transform("min").to_numpy()
    later = rows["_line"].to_numpy() != first
    where = np.flatnonzero(dup)[later]
    said = pd.Series(None, index=keys.index, dtype=object)
    said.iloc[where] = [(", ".join(map(str, k)), line) for k, line in
                        zip(keys.iloc[where].itertuples(index=False), first[later])]
    names = ", ".join(keys.columns)
    p.flag(said.notna().to_numpy(), None, lambda v: f"duplicate event: ({names}) = ({v[0]}) as on line {v[1]}",
           values=said)


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
