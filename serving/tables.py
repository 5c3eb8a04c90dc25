"""Scoring files, read and written in the format their suffix names: parquet, CSV, TSV, JSON (an
array of records) or JSON lines. Light (pandas only): the CLI checks a file's suffix before the
model loads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.io import atomic_write

TABLE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".json": "json",
                 ".jsonl": "jsonl", ".ndjson": "jsonl"}
FORMAT_NAMES = ".parquet, .csv, .tsv, .json (an array of records) or .jsonl (a record a line)"
_SEPARATORS = {"csv": ",", "tsv": "\t"}
_ISO = "%Y-%m-%dT%H:%M:%S.%f%z"


class ScoringInputError(ValueError):
    """Bad batch-scoring input; the message names the file and the column."""


def table_format(path: Path, role: str) -> str:
    """The format of a scoring file by its suffix; another suffix is refused before any work (``role``:
    how the user named it, e.g. ``--output``), not read or written as parquet under another name."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ScoringInputError(f"{role} {path}: {f'no format for suffix {suffix!r}' if suffix else 'no suffix'}; "
                                f"name the file {FORMAT_NAMES}")
    return TABLE_FORMATS[suffix]


def check_scoring_files(input_path: Path, output_path: Path) -> None:
    """Before any work: both suffixes name a format, and the output is not a folder (the scores would
    be renamed onto it), nor the input itself (its rows would be replaced by their scores)."""
    if Path(output_path).resolve() == Path(input_path).resolve():
        raise ScoringInputError(f"--output {output_path} is the --input file: write the scores to a file of their "
                                "own (the input would be replaced)")
    if Path(output_path).is_dir():
        raise ScoringInputError(f"--output {output_path} is a folder: give the file to write ({FORMAT_NAMES}), "
                                f"e.g. {Path(output_path) / 'scores.parquet'}")
    table_format(output_path, "--output")
    table_format(input_path, "--input")


def read_table(path: Path) -> pd.DataFrame:
    """``--input``: the rows as the file holds them. Text formats keep their columns' text (a zip code
    ``"01234"`` stays text); ids and times are checked by the caller."""
    kind = table_format(path, "--input")
    if not path.is_file():
        raise ScoringInputError(f"{path}: no such file")
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        if kind in _SEPARATORS:
            return pd.read_csv(path, sep=_SEPARATORS[kind])
        return pd.read_json(path, orient="records", lines=kind == "jsonl", dtype=False, convert_dates=False)
    except Exception as exc:  # pyarrow and pandas raise several types for an unreadable file
        raise ScoringInputError(f"{path}: not a readable {kind} file ({' '.join(str(exc).split())}); "
                                f"give {FORMAT_NAMES}") from exc


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """``--output``, written atomically; text formats give timestamps as ISO-8601 and floats to 15
    significant digits (JSON's default, 10 decimals, would round a probability)."""
    kind = table_format(path, "--output")
    if kind == "parquet":
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    elif kind in _SEPARATORS:
        atomic_write(path, lambda tmp: frame.to_csv(tmp, sep=_SEPARATORS[kind], index=False, date_format=_ISO))
    else:
        text = frame.assign(**{c: frame[c].dt.strftime(_ISO) for c in frame.columns
                               if pd.api.types.is_datetime64_any_dtype(frame[c])})
        atomic_write(path, lambda tmp: text.to_json(tmp, orient="records", lines=kind == "jsonl", force_ascii=False,
                                                    double_precision=15))
