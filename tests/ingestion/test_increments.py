"""Data that keeps arriving, on real MovieLens-100K replayed as an initial load + weekly batches:
each batch gated and committed on its own (real DuckDB and GX), the offline store holding exactly
the events up to the batch's end, a changed profile seen point in time (real Feast) and online,
a corrupted batch rejected whole, a re-run changing nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import duckdb
import pandas as pd
import pytest

from core.settings import Paths
from core.snapshots import read_snapshot_manifest
from core.spec import load_spec
from ingestion.increments import ingest_inbox, pending_batches, quality_history
from ingestion.loaders import load_raw
from ingestion.replay import parse_period, replay
from ingestion.warehouse import connect
from validation import gate
from validation.trends import drift_flags, trend_markdown

pytestmark = pytest.mark.slow

SPEC = load_spec("movielens-100k")
CHANGED_USER = 1  # in the initial load; its occupation changes with batch 2
NEW_JOB = "doctor"


def _snapshot_events(paths: Paths) -> pd.DataFrame:
    return pd.read_parquet(paths.snapshots / "interactions.parquet")


def _take_one(paths: Paths, run: str = "test"):
    return ingest_inbox(SPEC, paths.inbox(SPEC.name), paths.warehouse, paths.snapshots, gate, run, limit=1)


def _events_batch(paths: Paths, name: str, *rows: str):
    """A landing batch of events alone (RecBole's header, then ``rows``), taken: (its folder, its report)."""
    folder = paths.inbox(SPEC.name) / name
    folder.mkdir()
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    (folder / "ml-100k.inter").write_text("\n".join([header, *rows]) + "\n")
    [report] = _take_one(paths)
    return folder, report


@pytest.fixture(scope="module")
def lifecycle(real_ml100k_raw, tmp_path_factory):
    """A home whose landing area holds the replay (initial + 3 weeks); batch 2 also brings a
    changed profile of user 1 (a real profile, one field edited)."""
    paths = Paths(tmp_path_factory.mktemp("lifecycle"))
    written = replay(SPEC, real_ml100k_raw, paths.inbox(SPEC.name), parse_period("7d"), 3)
    raw = load_raw(SPEC, real_ml100k_raw)
    user = raw.users[raw.users.user_id == CHANGED_USER].iloc[0]
    path = written[2].folder / "ml-100k.user"
    columns = [f.name for f in SPEC.fields_of("user")]
    old = path.read_text() if path.exists() else "\t".join(f"{c}:token" for c in columns) + "\n"
    order = [c.split(":")[0] for c in old.splitlines()[0].split("\t")]
    values = {**user.to_dict(), "occupation": NEW_JOB}
    path.write_text(old + "\t".join(str(values[c]) for c in order) + "\n")
    return paths, written, raw, user


def test_replay_cuts_the_real_data_by_event_time(lifecycle):
    paths, written, raw, _ = lifecycle
    assert [b.folder.name[:4] for b in written] == ["0000", "0001", "0002", "0003"]
    assert sum(b.events for b in written) == len(raw.interactions) == 100_000
    assert all(written[i].end - written[i].start == timedelta(days=7) for i in (1, 2, 3))
    assert sum(b.users for b in written) == len(raw.users) and sum(b.items for b in written) == len(raw.items)
    assert written[1].users > 0  # users keep joining: some arrive with the weekly batches
    meta = json.loads((written[1].folder / "batch.json").read_text())
    assert meta["valid_from"] == written[1].start.isoformat()
    with pytest.raises(ValueError, match="already holds batches") as again:
        replay(SPEC, paths.raw("x"), paths.inbox(SPEC.name), parse_period("7d"), 3)
    assert f"batches {written[0].folder.name}..{written[-1].folder.name}: `clickprompt data update`" in str(again.value)
    assert "to replay afresh, move that folder aside" in str(again.value)


def test_each_batch_leaves_exactly_the_events_up_to_its_end(lifecycle):
    paths, written, raw, _ = lifecycle
    all_ts = pd.to_datetime(raw.interactions.timestamp, unit="s", utc=True)
    for batch in written[:2]:
        [report] = _take_one(paths)
        assert report.status == "accepted", report.reason
        events = _snapshot_events(paths)
        assert len(events) == int((all_ts < batch.end).sum())
        assert events.event_timestamp.max() < batch.end
        assert report.events == batch.events and report.expectations > 0 and report.failed_expectations == 0
    pending = [folder.name for folder, _, _ in pending_batches(paths.inbox(SPEC.name), paths.warehouse)]
    assert pending == [written[2].folder.name, written[3].folder.name]


def test_rerunning_a_taken_batch_changes_nothing(lifecycle):
    paths, written, _, _ = lifecycle
    before = read_snapshot_manifest(paths.snapshots)["snapshot_hash"]
    with duckdb.connect(str(paths.warehouse)) as con:  # forget nothing: the log says it was taken
        taken = con.execute("SELECT batch_id FROM batch_log WHERE status = 'accepted' ORDER BY 1").fetchall()
    assert [t[0] for t in taken] == [written[0].folder.name, written[1].folder.name]
    # the same batch copied in again under its own name is taken already; nothing pending before batch 2
    assert pending_batches(paths.inbox(SPEC.name), paths.warehouse)[0][0].name == written[2].folder.name
    assert read_snapshot_manifest(paths.snapshots)["snapshot_hash"] == before


def test_a_corrupted_batch_is_rejected_whole_and_names_file_line_field(lifecycle, tmp_path):
    paths, written, _, _ = lifecycle
    before = read_snapshot_manifest(paths.snapshots)["snapshot_hash"]
    n_before = len(_snapshot_events(paths))
    bad = paths.inbox(SPEC.name) / "0001-x-bad-delivery"  # arrives after batch 1, before batch 2
    bad.mkdir()
    lines = (written[2].folder / "ml-100k.inter").read_text().splitlines()
    lines[5] = lines[5].rsplit("\t", 2)[0] + "\t9\t" + lines[5].rsplit("\t", 1)[1]  # rating 9
    (bad / "ml-100k.inter").write_text("\n".join(lines[:50]) + "\n")
    [report] = _take_one(paths)
    assert report.batch_id == bad.name and report.status == "rejected"
    assert report.reason.startswith("ml-100k.inter line 6, field rating: '9' is outside 1..5")
    assert read_snapshot_manifest(paths.snapshots)["snapshot_hash"] == before
    assert len(_snapshot_events(paths)) == n_before
    # events of users whose profile has not arrived: rejected too, naming the row
    orphan, report = _events_batch(paths, "0001-y-early-events", "99999\t1\t4\t890000000")
    assert report.status == "rejected" and "line 2, field user_id: user 99999 has no profile" in report.reason
    assert read_snapshot_manifest(paths.snapshots)["snapshot_hash"] == before
    # a row only the GX gate rejects (an event in 2100): named by file and line too
    future, report = _events_batch(paths, "0001-z-future-event", "1\t1\t4\t890000000", "1\t2\t4\t4102444800")
    assert report.status == "rejected" and "column event_timestamp" in report.reason
    assert "at ml-100k.inter line 3" in report.reason
    assert read_snapshot_manifest(paths.snapshots)["snapshot_hash"] == before
    # rejected batches are not retried while their files are unchanged
    assert pending_batches(paths.inbox(SPEC.name), paths.warehouse)[0][0].name == written[2].folder.name
    history = quality_history(paths.warehouse)
    assert set(history.loc[history.status == "rejected", "batch_id"]) == {bad.name, orphan.name, future.name}


def test_a_changed_profile_is_seen_point_in_time_and_online(lifecycle):
    from feature_repo.online import materialize, materialize_incremental, online_features
    from feature_repo.store import apply
    from feature_repo.training_sets import build_training_sets, load_training_sets

    paths, written, raw, user = lifecycle
    apply(SPEC, paths)
    materialize(SPEC, paths)  # the online store as of the first two batches
    row = {"user_id": CHANGED_USER, "item_id": 1}
    assert online_features(paths, [row])["occupation"] == [user.occupation]
    [report] = _take_one(paths)  # batch 2: a week of events and user 1's new occupation
    assert report.batch_id == written[2].folder.name and report.status == "accepted", report.reason
    assert report.user_versions >= 1
    apply(SPEC, paths)
    out = materialize_incremental(SPEC, paths, since=datetime.fromisoformat(report.valid_from))
    assert out["mode"] == "incremental"
    assert online_features(paths, [row])["occupation"] == [NEW_JOB]
    with duckdb.connect(str(paths.warehouse)) as con:
        versions = con.execute("SELECT occupation, event_timestamp FROM users WHERE user_id = ? ORDER BY 2",
                               [CHANGED_USER]).fetchall()
        texts = con.execute("SELECT count(*) FROM user_text WHERE user_id = ?", [CHANGED_USER]).fetchone()[0]
    assert [v[0] for v in versions] == [user.occupation, NEW_JOB] and texts == 2  # only the new text was added
    assert versions[1][1] == written[2].start
    frames, _ = load_training_sets(build_training_sets(SPEC, paths))
    mine = pd.concat(frames.values())
    mine = mine[mine.user_id == CHANGED_USER]
    before = mine[mine.event_timestamp < written[2].start]
    after = mine[mine.event_timestamp >= written[2].start]
    assert len(before) and (before.occupation == user.occupation).all()
    assert (after.occupation == NEW_JOB).all() and (after.user_text.str.contains(f"Job is {NEW_JOB}.")).all()


def test_data_quality_records_and_trend(lifecycle):
    paths, written, _, _ = lifecycle
    history = quality_history(paths.warehouse)
    flagged = drift_flags(history)
    accepted = flagged[flagged.status == "accepted"]
    assert list(accepted.batch_id) == [b.folder.name for b in written[:3]]
    assert (accepted.label_rate.between(0.4, 0.7)).all() and (accepted.events > 0).all()
    assert accepted.iloc[0].new_user_share == 1.0  # the initial load: every user is new
    # ... so it is no baseline for the shares of new users / items: the first weekly batch is not
    # flagged for having fewer new ones than the initial load
    assert "new_" not in accepted.iloc[1]["flags"]
    assert accepted.new_user_share.between(0, 1).all() and accepted.new_item_share.between(0, 1).all()
    rejected = flagged[flagged.status == "rejected"]
    with connect(paths.warehouse, read_only=True) as con:  # each rejected batch is flagged with the log's reason
        reasons = dict(con.execute("SELECT batch_id, reason FROM batch_log WHERE status = 'rejected'").fetchall())
    assert len(rejected) and all(reasons[b] for b in rejected.batch_id)
    assert rejected["flags"].tolist() == [f"rejected: {reasons[b]}" for b in rejected.batch_id]
    text = trend_markdown(flagged, SPEC.name)
    assert f"| {written[1].folder.name} | accepted |" in text and "| rejected |" in text
    first_reason = " ".join(reasons[rejected.batch_id.iloc[0]].split()).replace("|", "\\|")[:60]
    assert f"| rejected: {first_reason}" in text
