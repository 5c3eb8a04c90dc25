"""Physical line numbers for a delimited file read by DuckDB (``ingestion.tabular``).

DuckDB's reader returns rows without their line numbers, skips blank lines and keeps a quoted
newline inside its field, so "header + row index" drifts from the file's lines. Here the file's
bytes are scanned once with numpy: a newline outside double quotes ends a record (a doubled quote
inside a quoted field toggles twice, so quote parity is enough), empty records are dropped as
DuckDB drops them, and each remaining record gets the physical line it starts on (line 1 is the
file's first line, whatever it holds).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ingestion.rows import RawDataError

LF, CR, QUOTE = 10, 13, 34


class FileLines:
    """What the line numbers of one file refer to: its newline positions and record terminators."""

    def __init__(self, path: Path, encoding: str = "utf-8", data: bytes | None = None) -> None:
        self.path, self.encoding = path, encoding
        self.data = path.read_bytes() if data is None else data
        codes = np.frombuffer(self.data, dtype=np.uint8)
        self.newlines = np.flatnonzero(codes == LF)
        quotes = np.flatnonzero(codes == QUOTE)
        outside = np.searchsorted(quotes, self.newlines) % 2 == 0  # an even number of quotes before it
        self.ends = self.newlines[outside]  # newlines that end a record
        self._codes = codes

    def line_at(self, byte: int) -> int:
        """1-based physical line of a 0-based byte offset."""
        return int(np.searchsorted(self.newlines, byte, side="left")) + 1

    def record_line_at(self, byte: int) -> int:
        """The line of the record DuckDB reports at ``byte``: it gives the position after the previous
        record (the line's first byte with CRLF, the one after it with LF, before any blank lines it
        skipped), so blank lines from there on are stepped over."""
        line, text = self.line_at(byte), self.lines()
        while line < len(text) and not text[line - 1].strip("\r"):
            line += 1
        return line

    def check_line_ends(self, name: str) -> None:
        """Every record ends the same way (LF or CRLF), or the first one that differs is named."""
        if not len(self.ends):
            return
        crlf = self.ends > 0
        crlf[crlf] = self._codes[self.ends[crlf] - 1] == CR
        if crlf.all() or not crlf.any():
            return
        k = int(np.argmax(crlf != crlf[0]))
        word = {True: "CRLF (Windows)", False: "LF"}
        raise RawDataError(name, self.line_at(int(self.ends[k])), None,
                           f"mixed line endings: this line ends with {word[bool(crlf[k])]}, line "
                           f"{self.line_at(int(self.ends[0]))} with {word[bool(crlf[0])]}; save the file with one "
                           "kind of line end", path=self.path)

    def record_lines(self, header: bool) -> np.ndarray:
        """Physical line each data record starts on, in file order (blank lines skipped, the header too)."""
        starts = np.concatenate([[0], self.ends + 1])
        stops = np.concatenate([self.ends, [len(self.data)]])
        length = stops - starts
        if not len(self.data):
            return np.array([], dtype=np.int64)
        crlf_blank = (length == 1) & (self._codes[np.minimum(starts, len(self.data) - 1)] == CR)
        keep = (length > 0) & ~crlf_blank
        first = np.searchsorted(self.newlines, starts[keep], side="left") + 1
        return first[1:] if header else first

    def lines(self) -> Sequence[str]:
        return _Lines(self)


class _Lines(Sequence):
    """The text of each physical line (line n is item n - 1), decoded only when asked for."""

    def __init__(self, fl: FileLines) -> None:
        self.fl = fl
        self.n = len(fl.newlines) + (0 if fl.data.endswith(b"\n") else 1)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if not isinstance(i, int) or not 0 <= i < self.n:
            return ""
        start = 0 if i == 0 else int(self.fl.newlines[i - 1]) + 1
        stop = int(self.fl.newlines[i]) if i < len(self.fl.newlines) else len(self.fl.data)
        return self.fl.data[start:stop].rstrip(b"\r").decode(self.fl.encoding, errors="replace")

    def __iter__(self) -> Iterator[str]:
        return iter(self[i] for i in range(self.n))
