"""Split policies: which of the joined events are train, valid and test (``core.spec.SplitPolicy``).

    global-temporal    by event time over all events: the first 80% (default fractions) train, the
                       next 10% valid, the last 10% test; all events of one timestamp on one side of
                       a boundary. What production sees: the model is judged on the future.
    per-user-temporal  per user, events ordered by (time, item): the last floor(n * 0.1) are test,
                       the floor(n * 0.1) before them valid, the rest train (leave-last-out by time).
                       A user with fewer than 10 events has all of them in train.
    random             rows ordered by md5(user | item | time | seed): the first 80% train, 10% valid,
                       10% test (the ClickPrompt authors' 8:1:1; the seed is fixed, so one identity
                       is one split).

DuckDB assigns each event its split on the key columns alone (a small table), then streams each
split, sorted by (time, keys), from the joined parquet parts to its file under a memory limit (its
sort spills to disk beyond it): no pandas frame and no whole table in memory. The figures of every
split, including the share of valid / test rows whose user or item never occurs in train, come
from the key table in one query.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from core.spec import SPLIT_POLICIES
from core.training_data import RANDOM_SPLIT_SEED, SplitStats, fractions_problem


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _check(policy: str, fractions: tuple[float, float, float]) -> None:
    if policy not in SPLIT_POLICIES:
        raise ValueError(f"unknown split policy {policy!r}; known: {list(SPLIT_POLICIES)}")
    if problem := fractions_problem(fractions):
        raise ValueError(problem)


def _global_bounds(con: duckdb.DuckDBPyConnection, fractions: tuple[float, float, float]) -> tuple:
    """The event times where valid and test begin: the times at the 80% and 90% positions (default)
    of the time-ordered events, so all events of one timestamp land on the same side. One scan."""
    f_valid, f_test = float(fractions[0]), float(fractions[0] + fractions[1])
    rows = con.execute(
        "SELECT k, event_timestamp FROM (SELECT event_timestamp, row_number() OVER (ORDER BY event_timestamp) - 1 AS k, "
        "count(*) OVER () AS n FROM keyed) "
        "WHERE k = least(floor(n * ?), n - 1) OR k = least(floor(n * ?), n - 1)", [f_valid, f_test]).fetchall()
    at = dict(rows)  # one row when both positions fall on the same event
    return at[min(at)], at[max(at)]


def _assign_sql(con, policy: str, fractions: tuple[float, float, float], user: str, item: str) -> tuple[str, list]:
    """SELECT of (keys, time, label, _split) over ``keyed`` for ``policy``."""
    f_train, f_valid, f_test = (float(f) for f in fractions)
    if policy == "global-temporal":
        cut_valid, cut_test = _global_bounds(con, fractions)
        return ("SELECT *, CASE WHEN event_timestamp < ? THEN 'train' WHEN event_timestamp < ? THEN 'valid' "
                "ELSE 'test' END AS _split FROM keyed", [cut_valid, cut_test])
    if policy == "per-user-temporal":
        return (f"SELECT * EXCLUDE (k, n), CASE WHEN k >= n - floor(n * ?) THEN 'test' "
                f"WHEN k >= n - floor(n * ?) - floor(n * ?) THEN 'valid' ELSE 'train' END AS _split FROM ("
                f"SELECT *, row_number() OVER (PARTITION BY {user} ORDER BY event_timestamp, {item}) - 1 AS k, "
                f"count(*) OVER (PARTITION BY {user}) AS n FROM keyed)", [f_test, f_test, f_valid])
    order = (f"md5(concat_ws('|', {user}::VARCHAR, {item}::VARCHAR, epoch_us(event_timestamp)::VARCHAR, "
             f"'{RANDOM_SPLIT_SEED}'))")
    return (f"SELECT * EXCLUDE (k, n), CASE WHEN k < floor(n * ?) THEN 'train' WHEN k < floor(n * ?) THEN 'valid' "
            f"ELSE 'test' END AS _split FROM (SELECT *, row_number() OVER (ORDER BY {order}) - 1 AS k, "
            f"count(*) OVER () AS n FROM keyed)", [f_train, f_train + f_valid])


def _stats(con, user: str, item: str) -> dict[str, SplitStats]:
    found = {row[0]: row[1:] for row in con.execute(
        f"WITH tu AS (SELECT DISTINCT {user} AS u FROM assigned WHERE _split = 'train'), "
        f"ti AS (SELECT DISTINCT {item} AS i FROM assigned WHERE _split = 'train') "
        "SELECT _split, count(*), avg(label), min(event_timestamp), max(event_timestamp), "
        "avg(CASE WHEN tu.u IS NULL THEN 1.0 ELSE 0.0 END), avg(CASE WHEN ti.i IS NULL THEN 1.0 ELSE 0.0 END) "
        f"FROM assigned a LEFT JOIN tu ON a.{user} = tu.u LEFT JOIN ti ON a.{item} = ti.i GROUP BY 1").fetchall()}
    stats = {}
    for name in ("train", "valid", "test"):
        rows, rate, start, end, new_users, new_items = found.get(name, (0, None, None, None, 0.0, 0.0))
        stats[name] = SplitStats(rows=rows, label_rate=round(float(rate), 6) if rows else 0.0,
                                 start=start.isoformat() if rows else "", end=end.isoformat() if rows else "",
                                 unseen_users=round(float(new_users or 0.0), 6),
                                 unseen_items=round(float(new_items or 0.0), 6))
    return stats


def write_splits(parts: Path, policy: str, fractions: tuple[float, float, float], keys: list[str],
                 folder: Path, memory_limit: str = "2GB") -> dict[str, SplitStats]:
    """``folder/{train,valid,test}.parquet`` from the joined parts (``parts/*.parquet``) by ``policy``,
    each ordered by (time, *keys); the figures of each split."""
    _check(policy, fractions)
    user, item = (f'"{k}"' for k in keys)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET temp_directory = {_literal(folder / '.spill')}")
        con.execute(f"CREATE VIEW joined AS SELECT * FROM read_parquet({_literal(parts / '*.parquet')})")
        con.execute(f"CREATE TEMP TABLE keyed AS SELECT {user}, {item}, event_timestamp, label FROM joined")
        sql, args = _assign_sql(con, policy, fractions, user, item)
        con.execute(f"CREATE TEMP TABLE assigned AS {sql}", args)
        order = ", ".join(["event_timestamp", user, item])
        for name in ("train", "valid", "test"):
            con.execute(
                f"COPY (SELECT j.* FROM joined j SEMI JOIN (SELECT {user}, {item}, event_timestamp FROM assigned "
                f"WHERE _split = ?) a ON j.{user} = a.{user} AND j.{item} = a.{item} "
                f"AND j.event_timestamp = a.event_timestamp ORDER BY {order}) "
                f"TO {_literal(folder / (name + '.parquet'))} (FORMAT parquet, COMPRESSION zstd)", [name])
        stats = _stats(con, user, item)
    shutil.rmtree(folder / ".spill", ignore_errors=True)
    return stats
