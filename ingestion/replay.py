"""Replay a real data set as arrivals: an initial load plus one batch per period, in the landing area.

``replay(spec, raw_dir, inbox, every, batches)`` cuts the events by event time: the last
``batches`` periods of length ``every`` become one batch each, everything before them the initial
load (batch ``0000``). A user or item arrives with the batch of its first event (new users join
over time, as in MovieLens), its profile valid from the start of that period (the initial load's
from the data set's earliest time); users and items that never rate arrive with the initial load.
Batches are written in RecBole's atomic-file layout (one of the layouts the MovieLens loader
reads), with ``batch.json`` naming the period and the profiles' valid-from time; the raw files
the replay reads are never changed, and a landing area that already holds batches is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

from core.io import write_json_atomic, write_text_atomic
from core.spec import DatasetSpec, EntityName, Kind
from ingestion.increments import BATCH_FILE, batch_folders

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


@dataclass(frozen=True)
class ReplayBatch:
    folder: Path
    start: datetime | None  # first event time of the period (None: the initial load)
    end: datetime  # events before this time
    events: int
    users: int
    items: int


def parse_period(text: str) -> timedelta:
    """'7d', '12h', '30m' -> timedelta."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    try:
        value, unit = float(text[:-1]), units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"a period is a number and a unit d / h / m, e.g. 7d; got {text!r}") from None
    if value <= 0:
        raise ValueError(f"a period must be positive, got {text!r}")
    return timedelta(**{unit: value})


def _cell(value) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if pd.isna(value) else str(value)


def _write_atomic_table(path: Path, frame: pd.DataFrame, types: dict[str, str]) -> None:
    header = "\t".join(f"{c}:{types[c]}" for c in frame.columns)
    body = ["\t".join(_cell(v) for v in row) for row in frame.itertuples(index=False, name=None)]
    write_text_atomic(path, "\n".join([header, *body]) + "\n")


def _types(spec: DatasetSpec, entity: EntityName) -> dict[str, str]:
    return {f.name: "token_seq" if f.kind in (Kind.MULTI, Kind.TEXT) else "token" for f in spec.fields_of(entity)}


def _events_in(warehouse: Path) -> int:
    if not warehouse.exists():
        return 0
    from core.snapshots import has_table
    from ingestion.warehouse import connect

    with connect(warehouse, read_only=True) as con:
        return con.execute("SELECT count(*) FROM interactions").fetchone()[0] if has_table(con, "interactions") else 0


def replay(spec: DatasetSpec, raw_dir: Path, inbox: Path, every: timedelta, batches: int,
           warehouse: Path | None = None) -> list[ReplayBatch]:
    """Write the initial load and ``batches`` period batches of ``raw_dir``'s data set into ``inbox``;
    refused where ``warehouse`` (the home's, which the batches are for) already holds events."""
    from ingestion.loaders import load_raw

    if spec.loader != "movielens":  # the batches are written in a MovieLens layout, which only that loader reads
        raise ValueError(f"replay writes MovieLens (RecBole) files and {spec.name} is read by loader {spec.loader!r}: "
                         f"put each period's files, laid out as the spec's source block says, in a folder of "
                         f"{inbox} yourself (one folder per batch, in arrival order by name)")
    if batches < 1:
        raise ValueError(f"replay needs at least one batch after the initial load, got {batches}")
    if held := batch_folders(inbox):
        raise ValueError(f"{inbox} already holds batches {held[0].name}..{held[-1].name}: `clickprompt data update` "
                         "ingests those not ingested yet; to replay afresh, move that folder aside, and the "
                         "warehouse too where its batches were ingested (or use a new project home, "
                         "CLICKPROMPT_HOME=DIR)")
    if warehouse is not None and (n := _events_in(warehouse)):  # e.g. a `data ingest` first
        raise ValueError(f"the warehouse at {warehouse} already holds {n:,} events: replayed batches would bring "
                         "nothing new, every later week empty. Replay into a new project home (CLICKPROMPT_HOME=DIR), "
                         "or move the warehouse aside first")
    raw = load_raw(spec, raw_dir)
    events = raw.interactions.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    ts = pd.to_datetime(events["timestamp"], unit="s", utc=True)
    end = ts.max() + pd.Timedelta(seconds=1)
    cuts = [end - k * every for k in range(batches, -1, -1)]  # cuts[0]: end of the initial load
    if cuts[0] <= ts.min():
        raise ValueError(f"{batches} periods of {every} reach back before the first event ({ts.min()}): "
                         "fewer or shorter periods")
    part = pd.Series(0, index=events.index)
    for i in range(batches):
        part[(ts >= cuts[i]) & (ts < cuts[i + 1])] = i + 1
    keys = {"user": spec.entities["user"].key, "item": spec.entities["item"].key}
    tables = {"user": raw.users, "item": raw.items}
    first = {e: part.groupby(events[keys[e]]).min() for e in keys}  # the part of each id's first event
    stem = spec.name.replace("movielens-", "ml-")
    written = []
    for i in range(batches + 1):
        start = None if i == 0 else cuts[i - 1].to_pydatetime()
        stop = cuts[i].to_pydatetime()
        name = f"{i:04d}-initial-until-{stop:%Y-%m-%d}" if i == 0 else f"{i:04d}-{start:%Y-%m-%d}"
        folder = inbox / name
        folder.mkdir(parents=True)
        mine = events[part == i]
        counts = {}
        for entity, table in tables.items():
            arriving = table[keys[entity]].isin(first[entity].index[first[entity] == i])
            if i == 0:  # and the ids without any event
                arriving |= ~table[keys[entity]].isin(first[entity].index)
            rows = table[arriving]
            counts[entity] = len(rows)
            if len(rows):
                _write_atomic_table(folder / f"{stem}.{entity}", rows, _types(spec, entity))
        if len(mine):
            _write_atomic_table(folder / f"{stem}.inter", mine[list(INTERACTION_COLUMNS)],
                                {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"})
        valid_from = spec.time.min if i == 0 else start
        write_json_atomic(folder / BATCH_FILE, {"valid_from": valid_from.astimezone(timezone.utc).isoformat(),
                                                "events_from": None if start is None else start.isoformat(),
                                                "events_until": stop.isoformat(), "replayed_from": str(raw_dir)})
        written.append(ReplayBatch(folder, start, stop, len(mine), counts["user"], counts["item"]))
    return written
