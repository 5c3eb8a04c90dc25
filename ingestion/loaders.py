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

Row-level reading and checking is ``ingestion.rows``'s (generic); this module describes the
MovieLens layouts and builds their canonical tables. Range and pattern rules of the spec (age
1..100, zip code pattern, event time window) are the quality gate's job (Great Expectations), not
the parser's; the rating range is checked here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from core.spec import DatasetSpec, FieldSpec
from ingestion.rawfile import read_file
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
    require_columns,
    require_raw_folder,
    typed_table,
)

__all__ = ["GENRE_ORDER", "LOADERS", "RawDataError", "RawTables", "Rejected", "load_movielens", "load_raw"]

log = logging.getLogger("clickprompt.loaders")

GENRE_ORDER: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


@dataclass(frozen=True)
class _Layout:
    name: str
    users: FileFormat
    items: FileFormat
    interactions: FileFormat

    @property
    def formats(self) -> tuple[FileFormat, FileFormat, FileFormat]:
        return (self.users, self.items, self.interactions)


_GL100K = _Layout(
    "GroupLens ml-100k",
    users=FileFormat("users", "u.user", "|", "utf-8", ("user_id", "age", "gender", "occupation", "zip_code")),
    items=FileFormat(
        "items", "u.item", "|", "latin-1",
        ("item_id", "title", "release_date", "video_release_date", "imdb_url") + tuple(f"genre:{g}" for g in GENRE_ORDER),
    ),
    interactions=FileFormat("interactions", "u.data", "\t", "utf-8", INTERACTION_COLUMNS),
)  # fmt: skip
_GL1M = _Layout(
    "GroupLens ml-1m",
    users=FileFormat("users", "users.dat", "::", "utf-8", ("user_id", "gender", "age", "occupation", "zip_code")),
    items=FileFormat("items", "movies.dat", "::", "latin-1", ("item_id", "title", "genres")),
    interactions=FileFormat("interactions", "ratings.dat", "::", "utf-8", INTERACTION_COLUMNS),
)


def _recbole_layout(stem: str) -> _Layout:
    return _Layout(
        "RecBole atomic files",
        users=FileFormat("users", f"{stem}.user", "\t", "utf-8", None, _RECBOLE_ALIASES),
        items=FileFormat("items", f"{stem}.item", "\t", "utf-8", None, _RECBOLE_ALIASES),
        interactions=FileFormat("interactions", f"{stem}.inter", "\t", "utf-8", None, _RECBOLE_ALIASES),
    )


# RecBole column names that differ from the canonical ones.
_RECBOLE_ALIASES = (("movie_title", "title"), ("class", "genres"), ("genre", "genres"))
# A known typo in RecBole's ml-100k.item (item 267, GroupLens' "unknown" movie).
_RECBOLE_TITLE_FIXES = {"unkonwn": "unknown"}

_TITLE_YEAR_RE = r"^(?P<title>.*?)\s*\((?P<year>[0-9]{4})\)\s*(?:\((?:V|TV)\)\s*)?$"

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


def _genre_lists(p: Parsed, tokens: pd.Series, spec_field: FieldSpec) -> pd.Series:
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
            allowed = allowed_text(spec_field.allowed)
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


def _build_items(p: Parsed, spec: DatasetSpec, layout: str) -> dict[str, pd.Series]:
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


def _detect_layout(folder: Path, spec: DatasetSpec, partial: bool = False) -> _Layout:
    """The layout whose files ``folder`` holds (all three; with ``partial`` at least one)."""
    require_raw_folder(folder, spec.name)
    candidates: list[_Layout] = [_GL100K, _GL1M]
    inters = sorted(p.stem for p in folder.glob("*.inter"))
    short = spec.name.replace("movielens-", "ml-")
    stems = [s for s in inters if s == short] or inters
    if stems:
        candidates.append(_recbole_layout(stems[0]))
    else:
        stems = sorted(p.stem for p in [*folder.glob("*.user"), *folder.glob("*.item")])
        candidates.append(_recbole_layout(stems[0] if stems else short))
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
    if partial:
        return best
    missing = next(f for f in best.formats if not (folder / f.name).is_file())
    raise RawDataError(
        missing.name, None, None, f"missing file: expected {missing.name} in {folder} ({best.name} layout)",
        path=folder / missing.name,
    )  # fmt: skip


def load_movielens(spec: DatasetSpec, source: Path, quarantine: bool = False, partial: bool = False) -> RawTables:
    """Read a MovieLens folder in any of the three layouts into canonical tables (see the module doc).

    ``partial``: a batch of arrivals, which may bring only some of the three files (new events,
    new profile versions, or both); a file it lacks gives an empty table.
    """
    folder = Path(source)
    layout = _detect_layout(folder, spec, partial)
    rejected: list[Rejected] = []
    files: dict[str, str] = {}
    lines: dict[str, tuple[str, np.ndarray]] = {}
    user_fields, item_fields = spec.fields_of("user"), spec.fields_of("item")

    users = empty_table(user_fields)
    if (folder / layout.users.name).is_file() or not partial:
        p = read_file(folder / layout.users.name, layout.users)
        files[p.file] = p.sha256
        require_columns(p, [f.name for f in user_fields])
        for f in user_fields:
            check_field(p, f)
        check_duplicates(p, spec.entities["user"].key)
        p.settle(quarantine, rejected)
        users, lines["users"] = typed_table(p, user_fields), (p.file, p.line_no.copy())

    items = empty_table(item_fields)
    if (folder / layout.items.name).is_file() or not partial:
        p = read_file(folder / layout.items.name, layout.items)
        files[p.file] = p.sha256
        key = spec.entities["item"].key
        raw_needed = [key, "title"] + (["genres"] if layout.name != _GL100K.name else [])
        require_columns(p, [c for c in raw_needed if c in {f.name for f in item_fields}])
        check_field(p, spec.field(key))
        derived = _build_items(p, spec, layout.name)
        for f in item_fields:
            if f.name not in derived and f.name != key:
                require_columns(p, [f.name])
                check_field(p, f)
        check_duplicates(p, key)
        for name, values in derived.items():  # derived columns travel with their rows through settle()
            p.frame[name] = values
        p.settle(quarantine, rejected)
        items, lines["items"] = typed_table(p, item_fields, set(derived)), (p.file, p.line_no.copy())

    interactions = pd.DataFrame({c: pd.Series(dtype="int64") for c in INTERACTION_COLUMNS})
    if (folder / layout.interactions.name).is_file() or not partial:
        p = read_file(folder / layout.interactions.name, layout.interactions)
        files[p.file] = p.sha256
        require_columns(p, list(INTERACTION_COLUMNS))
        keys = [spec.entities["user"].key, spec.entities["item"].key]
        for key in keys:  # ids: whole numbers inside the spec's range
            check_field(p, spec.field(key))
        ratings = check_rating(p, spec)
        check_int(p, "timestamp")
        check_duplicate_events(p, pd.DataFrame({c: p.ints[c] if c in p.ints else pd.to_numeric(
            p.frame[c].str.strip(), errors="coerce") for c in (*keys, "timestamp")}))
        p.frame["rating"] = ratings  # travels with its rows through settle()
        p.ints.pop("rating", None)
        p.settle(quarantine, rejected)
        interactions = pd.DataFrame({c: p.frame[c] if c == "rating" else int_column(p, c)
                                     for c in INTERACTION_COLUMNS}).reset_index(drop=True)
        lines["interactions"] = (p.file, p.line_no.copy())

    log.info(
        "%s (%s): %d users, %d items, %d interactions, %d rejected rows",
        folder, layout.name, len(users), len(items), len(interactions), len(rejected),
    )  # fmt: skip
    return RawTables(users, items, interactions, rejected, files, layout.name, lines)


def _tabular(spec: DatasetSpec, source: Path, quarantine: bool = False, partial: bool = False) -> RawTables:
    from ingestion.tabular import load_tabular

    return load_tabular(spec, source, quarantine, partial)


# spec.loader -> loader. "tabular" reads any CSV / TSV / parquet export as the spec's source block says.
LOADERS: dict[str, Callable[..., RawTables]] = {"movielens": load_movielens, "tabular": _tabular}


def load_raw(spec: DatasetSpec, source: Path, quarantine: bool = False, partial: bool = False) -> RawTables:
    """Parse the raw files in ``source`` into canonical tables with the loader the spec names
    (``partial``: a batch of arrivals, whose missing files give empty tables)."""
    try:
        loader = LOADERS[spec.loader]
    except KeyError:
        raise ValueError(f"spec {spec.name} names loader {spec.loader!r}; known: {', '.join(sorted(LOADERS))}") from None
    return loader(spec, Path(source), quarantine=quarantine, partial=partial)
