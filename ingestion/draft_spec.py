"""Draft a data set spec from a user's files (``clickprompt data init-spec``): columns, types and
value sets read by DuckDB, guesses for the keys, the time column and format, the label rule, the
kind of every other field. The draft is meant to be read and edited (every guess is commented),
then checked by loading it (``core.spec.load_spec``) before the first ingest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import yaml

from ingestion.csvlines import FileLines

USER_KEYS = ("user_id", "userid", "user", "customer_id", "customer", "cust_id", "uid", "member_id", "account_id")
ITEM_KEYS = ("item_id", "itemid", "item", "product_id", "product", "sku", "movie_id", "movieid", "iid", "article_id")
TIME_HINTS = ("timestamp", "time", "ts", "date", "datetime", "event_time", "when", "created_at")
LABEL_HINTS = ("click", "clicked", "is_click", "label", "rating", "score", "converted", "purchase")
MULTI_SEPARATORS = ("|", ";", ",")
MAX_CATEGORIES = 50


def _read(path: Path, sample: int = 100_000) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A sample of the file (typed by DuckDB's sniffer) and how it reads (format, separator, header)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() != ".parquet":
        FileLines(path).check_line_ends(path.name)  # DuckDB's sniffer fails on mixed ends without a line
    try:
        return _sniffed(path, sample)
    except duckdb.Error as exc:
        raise ValueError(f"{path}: cannot be read as CSV, TSV or parquet: {str(exc).strip().splitlines()[0]}") from None


def _sniffed(path: Path, sample: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    with duckdb.connect() as con:
        if path.suffix.lower() == ".parquet":
            frame = con.execute(f"SELECT * FROM read_parquet(?) LIMIT {sample}", [str(path)]).df()
            return frame, {"format": "parquet"}
        sniff = con.execute("SELECT Delimiter, HasHeader FROM sniff_csv(?)", [str(path)]).fetchone()
        frame = con.execute(f"SELECT * FROM read_csv(?, delim = ?, header = ?) LIMIT {sample}",
                            [str(path), sniff[0], bool(sniff[1])]).df()
    fmt = "tsv" if sniff[0] == "\t" else "csv"
    source: dict[str, Any] = {"format": fmt}
    if sniff[0] not in (",", "\t"):
        source["separator"] = sniff[0]
    if not sniff[1]:
        source["header"] = False
    return frame, source


def _pick(columns: list[str], hints: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for h in hints:
        if h in lower:
            return lower[h]
    for h in hints:  # a column containing the hint: "purchase_ts", "customer_no"
        for low, c in lower.items():
            if h in low:
                return c
    return None


def _time_format(col: pd.Series) -> str:
    if pd.api.types.is_datetime64_any_dtype(col):
        return "iso8601"
    if pd.api.types.is_integer_dtype(col) or pd.api.types.is_float_dtype(col):
        return "unix_ms" if col.dropna().abs().median() > 1e11 else "unix_s"
    text = col.dropna().astype(str)
    return "date" if text.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all() else "iso8601"


# What the text gate (validation.suites) refuses in a rendered value: a tab, newline or double space,
# or a word a missing value renders as. Flagged in the draft's notes, for the user to clean.
_BAD_TEXT = re.compile(r"\s\s|[^\S ]")
_NULL_WORDS = {"None", "nan", "NaN", "null", "NULL", "<NA>", "NaT"}


def _integral(col: pd.Series) -> bool:
    values = col.dropna()
    return pd.api.types.is_integer_dtype(col) or (pd.api.types.is_float_dtype(col) and bool((values == values.round()).all()))


def _gate_note(text: pd.Series) -> str:
    """'; N values the text gate would reject ...: <first three>' or ''."""
    distinct = pd.Series(text.unique())
    bad = sorted(distinct[distinct.str.contains(_BAD_TEXT) | distinct.isin(_NULL_WORDS)])
    if not bad:
        return ""
    return (f"; {len(bad)} values the text gate would reject (a tab, newline or double space, or a missing-value "
            f"word): {', '.join(repr(v) for v in bad[:3])}{' ...' if len(bad) > 3 else ''}")


def _field(name: str, entity: str, col: pd.Series) -> tuple[dict, str]:
    """(field entry, the guess in words) for one column. A column with missing values is never an
    ``id`` (ids may not be missing) nor ``int64`` (an int64 value cannot be missing): its values
    are drafted as text, categorical when few."""
    display = re.sub(r"[_\s]+", " ", name).strip().capitalize()
    values = col.dropna()
    missing = len(col) - len(values)
    if _integral(col) and not missing:
        entry = {"name": name, "entity": entity, "kind": "categorical", "display": display, "dtype": "int64"}
        if len(values):
            entry["range"] = [int(values.min()), int(values.max())]
        return entry, "integers: categorical int64 with the range seen"
    if pd.api.types.is_float_dtype(col) and not missing and values.nunique() > MAX_CATEGORIES:
        return ({"name": name, "entity": entity, "kind": "numeric", "display": display},
                f"real numbers ({values.min():g}..{values.max():g}): numeric (the value scales a learned vector: "
                "rescale a column of large numbers in the export)")
    text = (values.astype("int64") if _integral(col) else values).astype(str).str.strip()
    why_missing = f"{missing} missing values, kept as missing; " if missing else ""
    for sep in MULTI_SEPARATORS:
        if len(text) and text.str.contains(sep, regex=False).mean() > 0.2:
            distinct = sorted({v.strip() for cell in text for v in cell.split(sep) if v.strip()})
            if len(distinct) > max(MAX_CATEGORIES, 0.1 * text.nunique()):
                continue  # parts as varied as the cells ("Birdcage, The"): not a list of values
            entry = {"name": name, "entity": entity, "kind": "multi", "display": display, "separator": sep}
            if len(distinct) <= MAX_CATEGORIES:
                entry["values"] = distinct
            return entry, (f"{why_missing}several values per cell separated by {sep!r}: multi"
                           + _gate_note(pd.Series(distinct, dtype=object)))
    distinct = sorted(text.unique())
    if len(distinct) <= MAX_CATEGORIES:
        return ({"name": name, "entity": entity, "kind": "categorical", "display": display, "values": distinct},
                f"{why_missing}{len(distinct)} distinct values: categorical" + _gate_note(text))
    if missing or text.str.len().mean() > 20 or text.str.contains(" ", regex=False).mean() > 0.5:
        what = "many distinct values" if missing else "words or long strings"
        return ({"name": name, "entity": entity, "kind": "text", "display": display},
                f"{why_missing}{what}: text" + _gate_note(text))
    return {"name": name, "entity": entity, "kind": "id", "display": display}, "many short distinct strings: id" \
        + _gate_note(text)


def _by_type(ev: pd.DataFrame, taken: set[str]) -> dict[str, str]:
    """Guesses from the values when no column name says: the time is a timestamp column or
    integers in the epoch range; the keys are the first integer columns with many distinct
    values; the label is a column of whole numbers (1.0 / 0.0 too) with at most 11 distinct values."""
    out: dict[str, str] = {}
    free = [c for c in ev.columns if c not in taken]
    ints = [c for c in free if pd.api.types.is_integer_dtype(ev[c])]
    integral = [c for c in free if _integral(ev[c]) and ev[c].notna().all()]  # 1.0 / 0.0 clicks too
    for c in free:
        col = ev[c]
        median = col.dropna().abs().median() if c in ints else None
        if pd.api.types.is_datetime64_any_dtype(col) or (pd.notna(median) and 1e8 < median < 1e14):
            out["time"] = c
            break
    rest = [c for c in integral if c != out.get("time")]
    labels = [c for c in rest if ev[c].nunique() <= 11]
    keys = [c for c in rest if c not in labels and c in ints]
    out.update(zip(("user", "item"), keys))
    if labels:
        out["label"] = labels[0]
    return out


def draft_spec(name: str, events: Path, users: Path | None = None, items: Path | None = None,
               raw_folder: Path | None = None, columns: dict[str, str] | None = None) -> tuple[dict, list[str]]:
    """(spec as a dict, notes on every guess). Paths in the source block are relative to
    ``raw_folder`` (default: the events file's folder). ``columns``: the user's own answers,
    {"user" | "item" | "time" | "label": column of the events file}, taken before any guess.

    Longer than ~80 lines on purpose: the guesses are made in order, each reading the ones before
    (keys, then time, then label, then the fields of what is left), and every one adds its note;
    the sequence reads best in one place."""
    raw_folder = raw_folder or events.parent
    ev, ev_source = _read(events)
    notes: list[str] = []
    given = {k: v for k, v in (columns or {}).items() if v}
    unknown = sorted(set(given.values()) - set(ev.columns))
    if unknown:
        raise ValueError(f"{events}: no column {unknown[0]!r} (columns: {list(ev.columns)})")
    free = [c for c in ev.columns if c not in given.values()]  # a column the user named is taken
    user_key = given.get("user") or _pick(free, USER_KEYS)
    item_key = given.get("item") or _pick([c for c in free if c != user_key], ITEM_KEYS)
    time_col = given.get("time") or _pick([c for c in free if c not in (user_key, item_key)], TIME_HINTS)
    label_col = given.get("label") or _pick([c for c in free if c not in (user_key, item_key, time_col)],
                                            LABEL_HINTS)
    guessed = _by_type(ev, {c for c in (user_key, item_key, time_col, label_col) if c})
    for what, current in (("user", user_key), ("item", item_key), ("time", time_col), ("label", label_col)):
        if current is None and what in guessed:
            notes.append(f"{what}: {guessed[what]!r} guessed from its values (no column name says; check it, "
                         f"or pass --{what if what in ('time', 'label') else what + '-key'})")
    user_key, item_key = user_key or guessed.get("user"), item_key or guessed.get("item")
    time_col, label_col = time_col or guessed.get("time"), label_col or guessed.get("label")
    missing = [what for what, c in (("user key (--user-key)", user_key), ("item key (--item-key)", item_key),
                                     ("time (--time)", time_col), ("rating or click (--label)", label_col))
               if c is None]
    if missing:
        raise ValueError(f"{events}: no column looks like the {', '.join(missing)} (columns: {list(ev.columns)}); "
                         "name them with the options shown, or write the spec by hand (README: bring your own data)")
    for what, key in (("user", user_key), ("item", item_key)):  # the warehouse's keys are integers
        if not (_integral(ev[key]) and ev[key].notna().all()):
            odd = ev[key][~ev[key].astype(str).str.fullmatch(r"\s*-?\d+(\.0+)?\s*")].head(1).tolist()
            raise ValueError(f"{events}: the {what} key column {key!r} holds {odd[0] if odd else 'missing values'!r}: "
                             f"keys are whole numbers; map your {what} ids to integers in the export (keep the "
                             f"lookup to read scores back), then draft again")
    fields = [{"name": "user_id", "entity": "user", "kind": "id", "display": "User ID", "dtype": "int64"}]
    item_fields = [{"name": "item_id", "entity": "item", "kind": "id", "display": "Item ID", "dtype": "int64"}]
    label = ev[label_col].dropna()
    if not (pd.api.types.is_numeric_dtype(label) or pd.api.types.is_bool_dtype(label)) or label.empty:
        raise ValueError(f"{events}: label column {label_col!r} is not numbers (a rating) or 0/1 clicks "
                         f"(values like {label.astype(str).unique()[:3].tolist()}): map it in your export, or "
                         "write the spec's label rule by hand")
    is_click = set(pd.unique(label)) <= {0, 1, True, False}
    fractional = not is_click and not _integral(label)  # half stars (0.5..5.0) and the like
    lo, hi = (0, 1) if is_click else (float(label.min()), float(label.max())) if fractional else (
        int(label.min()), int(label.max()))
    threshold = 1 if is_click else int(round(lo + 0.75 * (hi - lo)))
    notes.append(f"label: {label_col!r} read as the rating {lo}..{hi}; click = rating >= {threshold}"
                 + (" (a 0/1 click column)" if is_click else " (fractional ratings: dtype float64; check the "
                    "threshold)" if fractional else " (check the threshold)"))
    ts = ev[time_col]
    time_format = _time_format(ts)
    notes.append(f"time: {time_col!r}, format {time_format}")
    source: dict[str, Any] = {"events": {"path": str(events.relative_to(raw_folder)) if events.is_relative_to(raw_folder)
                                         else events.name, **ev_source, "time_column": time_col,
                                         "time_format": time_format,
                                         "columns": {"user_id": user_key, "item_id": item_key, "rating": label_col}}}
    tables = {"user": (users, user_key, fields), "item": (items, item_key, item_fields)}
    for entity, (path, key, target) in tables.items():
        if path is None:
            continue
        frame, src = _read(path)
        file_key = _pick(list(frame.columns), (key, *(USER_KEYS if entity == "user" else ITEM_KEYS)))
        if file_key is None:
            raise ValueError(f"{path}: no column looks like the {entity} key {key!r} (columns: {list(frame.columns)})")
        repeated = frame[file_key][frame[file_key].duplicated()]
        if len(repeated):  # a profile file holds one row per id: caught here, not at the first ingest
            raise ValueError(f"{path}: its {entity} key column {file_key!r} repeats {str(repeated.iloc[0])!r} ({len(repeated):,} "
                             f"repeated rows): a {entity}s file holds one row per {entity}; pass the file of the "
                             f"{entity}s' own fields as --{entity}s (a file of events or tags is neither)")
        mapping = {f"{entity}_id": file_key}
        for col in frame.columns:
            if col == file_key:
                continue
            entry, why = _field(col.lower(), entity, frame[col])
            if entry["name"] != col:
                mapping[entry["name"]] = col
            target.append(entry)
            notes.append(f"{entity} field {col!r}: {why}")
        source[f"{entity}s"] = {"path": path.name, **src, "columns": mapping}
    rest = [c for c in ev.columns if c not in (user_key, item_key, time_col, label_col)]
    for col in rest:  # fields carried by the events: the item's by default (check which entity they describe)
        if users is not None and items is not None:  # each entity's fields come from its own file then
            notes.append(f"events column {col!r}: not drafted: users and items each have a file, which is where "
                         f"their fields are read (a column describing the event itself has no place in a spec)")
            continue
        entity = "user" if users is None and items is not None else "item"
        entry, why = _field(col.lower(), entity, ev[col])
        (fields if entity == "user" else item_fields).append(entry)
        if entry["name"] != col:
            source["events"]["columns"][entry["name"]] = col
        notes.append(f"events column {col!r}: {why}, a field of the {entity} (check the entity)")
    start = pd.Timestamp(ts.min(), unit="s" if time_format == "unix_s" else ("ms" if time_format == "unix_ms" else None),
                         tz="UTC") if time_format.startswith("unix") else pd.to_datetime(ts.min(), utc=True)
    end = pd.Timestamp(ts.max(), unit="s" if time_format == "unix_s" else ("ms" if time_format == "unix_ms" else None),
                       tz="UTC") if time_format.startswith("unix") else pd.to_datetime(ts.max(), utc=True)
    spec = {
        "name": name, "description": f"drafted from {events.name} by clickprompt data init-spec: edit it",
        "loader": "tabular",
        "entities": {"user": {"key": "user_id", "table": "users"}, "item": {"key": "item_id", "table": "items"}},
        "fields": fields + item_fields,
        "label": {"source": "rating", "threshold": threshold},
        "rating": {"min": lo, "max": hi, **({"dtype": "float64"} if fractional else {})},
        "time": {"min": (start - pd.Timedelta(days=1)).floor("D").isoformat(),
                 "max": (end + pd.Timedelta(days=365)).ceil("D").isoformat()},
        "source": source,
    }
    return spec, notes


def spec_yaml(spec: dict, notes: list[str]) -> str:
    head = "".join(f"# {n}\n" for n in ["Drafted spec: read every guess below, then edit.", *notes])
    return head + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=110)
