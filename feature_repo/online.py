"""The online store: materialize the latest feature versions into it (SQLite by default, Redis when
configured: ``core.backends``), and read them back.

Each materialization leaves a marker, ``<feast>/online_store.json``, naming the snapshot hash it
loaded from: ``online_store_current`` is False when the snapshots changed since (a process killed
after its batch commit, before the materialization), and the nightly flow loads it again."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from core.backends import Backends
from core.io import write_json_atomic
from core.settings import Paths
from core.snapshots import snapshot_hash
from core.spec import DatasetSpec
from feature_repo.feature_services import CLICKPROMPT_SERVICE
from feature_repo.online_engines import online_engine
from feature_repo.store import open_store

log = logging.getLogger("clickprompt.features")


def data_end(paths: Paths) -> datetime:
    """The latest time in the snapshots the views read (events and profile versions): the data's
    own clock. Materializing up to it loads every version, and the next incremental run starts there."""
    import duckdb

    files = [str(paths.snapshots / f"{t}.parquet") for t in ("interactions", "users", "items")]
    with duckdb.connect() as con:
        latest = max(con.execute(f"SELECT max(event_timestamp) FROM read_parquet('{f}')").fetchone()[0]
                     for f in files)
    return latest.astimezone(timezone.utc)


def materialize(spec: DatasetSpec, paths: Paths, end: datetime | None = None, store=None) -> dict:
    """Load every feature view's latest version (as of ``end``, default the data's latest time) into
    the online store, from the data set's earliest time."""
    store = store or open_store(paths)
    start = spec.time.min - timedelta(days=1)
    end = end or data_end(paths)
    with _banner_to_stderr():
        store.materialize(start_date=start, end_date=end)
    _mark_loaded(store, paths, end)
    views = [fv.name for fv in store.list_feature_views()]
    log.info("materialized %s for [%s, %s]", views, start.isoformat(), end.isoformat())
    return {"views": views, "start": start.isoformat(), "end": end.isoformat(), "mode": "full"}


def materialize_incremental(spec: DatasetSpec, paths: Paths, since: datetime | None = None,
                            end: datetime | None = None, store=None) -> dict:
    """Load what arrived since each view was last materialized, up to ``end`` (default the data's
    latest time). ``since``: the earliest valid-from of the versions that just arrived; a version
    older than the last materialized time (a late arrival) is loaded by an explicit window from
    it, which Feast's incremental run would skip. Never materialized yet: a full run."""
    store = store or open_store(paths)
    end = end or data_end(paths)
    views = store.list_feature_views()
    last = [fv.most_recent_end_time for fv in views]
    if not views or any(t is None for t in last):
        return materialize(spec, paths, end, store)
    start = min(last)
    with _banner_to_stderr():
        if since is not None and since < start:
            store.materialize(start_date=since, end_date=end)
            mode, start = "window (late versions)", since
        else:
            store.materialize_incremental(end_date=end)
            mode = "incremental"
    _mark_loaded(store, paths, end)
    log.info("materialized %s from %s to %s (%s)", [fv.name for fv in views], start.isoformat(), end.isoformat(), mode)
    return {"views": [fv.name for fv in views], "start": start.isoformat(), "end": end.isoformat(), "mode": mode}


_STDOUT_SWAP = threading.Lock()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colorama's Style / Fore codes in Feast's banner


class _Plain(io.TextIOBase):
    """A text stream that writes to ``target`` without ANSI colour codes (for logs and pipes)."""

    def __init__(self, target) -> None:
        self.target = target

    def write(self, text: str) -> int:
        self.target.write(_ANSI.sub("", text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()


def _coloured(stream) -> bool:
    """Colours only for a person at a terminal that wants them (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and getattr(stream, "isatty", lambda: False)()


@contextlib.contextmanager
def _banner_to_stderr() -> Iterator[None]:
    """Feast prints its "Materializing N feature views ..." banner to stdout: sent to stderr, with its
    progress bars, so a command's stdout holds only its own output (``--json`` stays parseable), and
    without its colour codes unless stderr is a terminal (a log file or Prefect's log shows plain
    text). The swap is process-wide (``sys.stdout``): one at a time, so two overlapping ones cannot
    leave stdout pointing at stderr."""
    target = sys.stderr if _coloured(sys.stderr) else _Plain(sys.stderr)
    with _STDOUT_SWAP, contextlib.redirect_stdout(target):
        yield


def _marker_file(paths: Paths):
    return paths.feast / "online_store.json"


def _mark_loaded(store, paths: Paths, end: datetime) -> None:
    """The engine's own "loaded" marker (``online_engines``) and, beside the registry, the snapshot
    hash it was loaded from (``online_store_current``)."""
    online_engine(paths).mark_loaded(store, end)
    write_json_atomic(_marker_file(paths), {"snapshot_hash": snapshot_hash(paths.snapshots), "end": end.isoformat()})


def online_store_current(paths: Paths, backends: Backends | None = None, store=None) -> bool:
    """Whether the online store is loaded (``online_store_ready``) from the snapshots there are now."""
    import json

    marker = _marker_file(paths)
    if not marker.exists() or not online_store_ready(paths, backends, store):
        return False
    return json.loads(marker.read_text(encoding="utf-8")).get("snapshot_hash") == snapshot_hash(paths.snapshots)


def online_store_ready(paths: Paths, backends: Backends | None = None, store=None) -> bool:
    """Whether the online store holds this home's materialized features: the marker the last
    materialization set (a table in the SQLite file, a key in Redis) is there (False when the store
    does not answer). The engine's adapter (``feature_repo.online_engines``) answers."""
    return online_engine(paths, backends).holds_features(store)


def online_features(
    paths: Paths, entity_rows: list[dict[str, Any]], service: str = CLICKPROMPT_SERVICE, store=None
) -> dict[str, list]:
    """Feature values for ``entity_rows`` (e.g. ``[{"user_id": 1, "item_id": 1}]``) from the online store."""
    store = store or open_store(paths)
    fs = store.get_feature_service(service)
    return store.get_online_features(features=fs, entity_rows=entity_rows).to_dict()
