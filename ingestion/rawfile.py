"""Reading one raw file of a built-in layout (``FileFormat``): decode it, find the lines with
control characters, undecodable bytes or a wrong field count, and split the rest with pandas' C
parser (all columns as str). Line numbers are physical: the n-th line of the file is line n, blank
lines included (they are skipped, never renumbered).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ingestion.rows import FileFormat, Parsed, Problems, RawDataError

_SEP_WORDS = {"\t": "tab", "|": "'|'", "::": "'::'"}
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0 (but tab, LF, CR), DEL, C1
_STRAY_CR_RE = re.compile(r"\r(?!\n)")
_MOJIBAKE_RE = re.compile(r"[\xc2-\xf4][\xa0-\xbf]")  # UTF-8 bytes read as latin-1: 'Ã©' for 'é'


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
    """One raw file of a built-in layout, decoded and split into rows with each row's physical line.

    Longer than the project's ~80 lines on purpose: one pass over the bytes keeps the decoding
    problems, the line index and the rows in step; split into helpers, each would carry that
    shared state back and forth."""
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
