"""init-spec drafts what its own gate accepts (issue 23, item 7): real MovieLens-100K, re-exported in
two layouts of our own making, is drafted and ingested without edits through the CLI (real DuckDB,
GX gates, warehouse)."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

import cli
from core.spec import load_spec
from ingestion.draft_spec import draft_spec, spec_yaml
from ingestion.loaders import load_raw


@pytest.fixture(scope="module")
def ml100k_tables(real_ml100k_raw: Path):
    return load_raw(load_spec("movielens-100k"), real_ml100k_raw)


def export_csv_tables(raw, folder: Path) -> dict[str, Path]:
    """Layout A: three CSV files with headers; genres '|'-joined; release_year missing for one film; the
    events carry a column of their own (the device), which no profile file holds."""
    folder.mkdir(parents=True)
    devices = raw.interactions.timestamp.mod(3).map({0: "web", 1: "ios", 2: "android"})
    raw.interactions.assign(device=devices).to_csv(folder / "ratings.csv", index=False)
    raw.users.to_csv(folder / "users.csv", index=False)
    items = raw.items.assign(genres=raw.items.genres.map("|".join))
    items.to_csv(folder / "items.csv", index=False)
    return {"events": folder / "ratings.csv", "users": folder / "users.csv", "items": folder / "items.csv"}


def export_click_log(raw, folder: Path) -> dict[str, Path]:
    """Layout B: one TSV click log with names that say nothing (member, film, outcome, at), a float 0/1
    click, ISO times and the film's fields on every event; a TSV of members (sex, job)."""
    folder.mkdir(parents=True)
    ev = raw.interactions.merge(raw.items, on="item_id", how="left")
    log = pd.DataFrame({
        "member": ev.user_id, "film": ev.item_id, "outcome": (ev.rating >= 4).astype(float),
        "at": [datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") for t in ev.timestamp],
        "title": ev.title, "year": ev.release_year, "genres": ev.genres.map("|".join),
    })
    log.to_csv(folder / "clicks.tsv", sep="\t", index=False)
    raw.users.rename(columns={"user_id": "member", "gender": "sex", "occupation": "job"})[
        ["member", "sex", "job"]].to_csv(folder / "members.tsv", sep="\t", index=False)
    return {"events": folder / "clicks.tsv", "users": folder / "members.tsv"}


@pytest.mark.parametrize("layout", [export_csv_tables, export_click_log])
def test_init_spec_drafts_a_spec_that_ingests_real_movielens_without_edits(paths, ml100k_tables, capsys, layout):
    files = layout(ml100k_tables, paths.home / "export")
    argv = ["data", "init-spec", "--name", "films", "--events", str(files["events"])]
    for table in ("users", "items"):
        if table in files:
            argv += [f"--{table}", str(files[table])]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert cli.main(["data", "fetch", "films", "--from", str(files["events"].parent)]) == 0
    code = cli.main(["data", "ingest", "--dataset", "films"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "ingested films" in out and "interactions=100000" in out
    spec = load_spec("films")
    year = spec.field("release_year" if layout is export_csv_tables else "year")
    assert year.kind.value == "text"  # one film has no year: not an id (ids may not be missing), nor int64
    assert spec.field("title").kind.value == "text"  # "Birdcage, The": commas, but not a list of values
    if layout is export_csv_tables:  # users and items have files: the events' own column is noted, not drafted
        assert "device" not in {f.name for f in spec.fields}
        assert "# events column 'device': not drafted: users and items each have a file" in \
            (paths.home / "specs" / "films.yaml").read_text()
    if layout is export_click_log:
        assert (spec.rating.min, spec.rating.max, spec.label.threshold) == (0, 1, 1)  # the float 0/1 column
        assert spec.source.events.columns["rating"] == "outcome"


def test_values_the_text_gate_would_reject_are_flagged_in_the_draft(tmp_path):
    events = tmp_path / "events.csv"
    rows = [{"user_id": u, "item_id": u % 7 + 1, "rating": u % 5 + 1, "timestamp": 1_700_000_000 + u,
             "shelf": ["top", "middle\nrow", "bottom", "nan"][u % 4]} for u in range(1, 200)]
    pd.DataFrame(rows).to_csv(events, index=False)
    spec, notes = draft_spec("shop", events)
    text = spec_yaml(spec, notes)
    assert ("# events column 'shelf': 4 distinct values: categorical; 2 values the text gate would reject "
            "(a tab, newline or double space, or a missing-value word): 'middle\\nrow', 'nan'") in text


def test_init_spec_names_the_first_line_of_mixed_line_endings(paths, capsys):
    events = paths.home / "events.csv"
    events.write_bytes(b"user_id,item_id,rating,timestamp\r\n1,2,3,1700000000\r\n2,3,4,1700000001\n")
    assert cli.main(["data", "init-spec", "--name", "x", "--events", str(events)]) == 2
    assert capsys.readouterr().err == ("error: events.csv line 3: mixed line endings: this line ends with LF, line 1 "
                                       "with CRLF (Windows); save the file with one kind of line end\n")


def test_prices_are_drafted_numeric_and_string_keys_are_refused(tmp_path):
    """A column of real numbers is a numeric field (it was drafted as an id); keys that are not whole
    numbers are refused at draft time with what to do (the draft used to fail later, at ingest)."""
    rows = [{"user_id": u, "item_id": u % 7 + 1, "rating": u % 5 + 1, "timestamp": 1_700_000_000 + u,
             "price": round(3.5 + 0.37 * u, 2)} for u in range(1, 200)]
    pd.DataFrame(rows).to_csv(tmp_path / "events.csv", index=False)
    spec, notes = draft_spec("shop", tmp_path / "events.csv")
    price = next(f for f in spec["fields"] if f["name"] == "price")
    assert price["kind"] == "numeric" and "dtype" not in price
    assert any(n.startswith("events column 'price': real numbers (3.87..77.13): numeric") for n in notes)
    pd.DataFrame([{**r, "user_id": f"u{r['user_id']:03d}"} for r in rows]).to_csv(tmp_path / "named.csv", index=False)
    with pytest.raises(ValueError, match=r"named\.csv: the user key column 'user_id' holds 'u001': keys are whole "
                                         r"numbers; map your user ids to integers"):
        draft_spec("shop", tmp_path / "named.csv")


def test_half_star_ratings_are_drafted_as_float64_and_kept_exactly(paths, ml100k_tables, capsys):
    """MovieLens' later releases rate in half stars (0.5..5.0): the draft says dtype float64, and the
    warehouse keeps 3.5 as 3.5 (it used to refuse line 2 as 'not an integer')."""
    from ingestion.warehouse import connect

    raw, folder = ml100k_tables, paths.home / "export"
    folder.mkdir(parents=True)
    events = raw.interactions.assign(rating=raw.interactions.rating - 0.5 * (raw.interactions.timestamp % 2))
    events.to_csv(folder / "ratings.csv", index=False)
    raw.users.to_csv(folder / "users.csv", index=False)
    raw.items.assign(genres=raw.items.genres.map("|".join)).to_csv(folder / "items.csv", index=False)
    assert cli.main(["data", "init-spec", "--name", "films", "--events", str(folder / "ratings.csv"),
                     "--users", str(folder / "users.csv"), "--items", str(folder / "items.csv")]) == 0
    spec = load_spec("films")
    assert (spec.rating.min, spec.rating.max, spec.rating.dtype, spec.label.threshold) == (0.5, 5.0, "float64", 4)
    assert "# label: 'rating' read as the rating 0.5..5.0; click = rating >= 4 (fractional ratings: dtype " \
           "float64; check the threshold)" in (paths.home / "specs" / "films.yaml").read_text()
    assert cli.main(["data", "fetch", "films", "--from", str(folder)]) == 0
    assert cli.main(["data", "ingest", "--dataset", "films"]) == 0, capsys.readouterr().err
    with connect(paths.warehouse, read_only=True) as con:
        held = con.execute("SELECT rating, label FROM interactions").df()
    assert len(held) == 100_000
    assert sorted(held.rating.unique()) == [x / 2 for x in range(1, 11)]
    assert held.rating.sum() == pytest.approx(events.rating.sum())
    assert (held.label == (held.rating >= 4)).all() and held.label.sum() == (events.rating >= 4).sum()


def test_a_whole_star_warehouse_refuses_then_widens_for_half_stars(paths, capsys):
    """A fractional rating under a whole-number spec is refused on its line with what to change; once
    the spec says float64, the warehouse's INTEGER column is widened in the gated transaction and its
    earlier ratings are kept."""
    from ingestion.warehouse import connect

    def rating_type() -> str:
        with connect(paths.warehouse, read_only=True) as con:
            return con.execute("SELECT data_type FROM information_schema.columns WHERE table_name = "
                               "'interactions' AND column_name = 'rating'").fetchone()[0]

    export = paths.home / "export"
    export.mkdir()
    rows = [{"user_id": u, "item_id": u % 7 + 1, "rating": u % 5 + 1, "timestamp": 1_700_000_000 + u,
             "shelf": ["top", "bottom"][u % 2]} for u in range(1, 200)]
    pd.DataFrame(rows).to_csv(export / "events.csv", index=False)
    pd.DataFrame({"user_id": range(1, 200), "plan": ["free", "paid"] * 99 + ["free"]}).to_csv(
        export / "users.csv", index=False)
    assert cli.main(["data", "init-spec", "--name", "shop", "--events", str(export / "events.csv"),
                     "--users", str(export / "users.csv")]) == 0
    spec_file = paths.home / "specs" / "shop.yaml"
    text = spec_file.read_text()
    assert cli.main(["data", "fetch", "shop", "--from", str(export)]) == 0
    assert cli.main(["data", "ingest", "--dataset", "shop"]) == 0, capsys.readouterr().err
    assert rating_type() == "INTEGER"
    capsys.readouterr()

    later = paths.home / "later"
    later.mkdir()
    pd.DataFrame([{**rows[0], "rating": 4}, {**rows[1], "timestamp": 1_700_001_000, "rating": 3.5}]).to_csv(
        later / "events.csv", index=False)
    shutil.copy(export / "users.csv", later / "users.csv")
    assert cli.main(["data", "ingest", "--dataset", "shop", "--source", str(later)]) == 2
    assert capsys.readouterr().err == (
        "error: events.csv line 3, field rating: '3.5' is not a whole number: spec shop has whole-number ratings "
        "(1..5); for a scale with fractions such as half stars set `rating: {min: ..., max: ..., dtype: float64}` "
        "in shop.yaml\n")
    assert rating_type() == "INTEGER"

    spec_file.write_text(text.replace("rating:\n  min: 1\n  max: 5\n", "rating:\n  min: 1\n  max: 5\n  dtype: float64\n"))
    assert load_spec("shop").rating.dtype == "float64"
    assert cli.main(["data", "ingest", "--dataset", "shop", "--source", str(later)]) == 0
    assert ("note: the warehouse also holds 198 events that these files do not (an ingest adds and updates "
            "events, it never deletes them); to hold only these files' events, ingest them in a new project home "
            "(CLICKPROMPT_HOME=DIR)") in capsys.readouterr().out  # 199 + 1 new, 2 in these files
    assert rating_type() == "DOUBLE"
    with connect(paths.warehouse, read_only=True) as con:
        held = con.execute("SELECT user_id, rating, label FROM interactions ORDER BY event_timestamp").df()
    assert len(held) == 200 and held.rating.iloc[-1] == 3.5 and held.label.iloc[-1] == 0
    assert held.rating.iloc[:199].tolist() == [4.0] + [float(r["rating"]) for r in rows[1:]]  # line 2 restated user 1's


def test_a_nightly_batch_widens_the_rating_column_in_its_own_transaction(paths, capsys):
    """The landing-area path: the spec turns float64 after a whole-number load, and the next batch's
    4.5 is kept as 4.5 (its transaction widens the column; DuckDB would have rounded it to 5)."""
    from ingestion.warehouse import connect

    export = paths.home / "export"
    export.mkdir()
    rows = [{"user_id": u, "item_id": u % 7 + 1, "rating": u % 5 + 1, "timestamp": 1_700_000_000 + u}
            for u in range(1, 60)]
    pd.DataFrame(rows).to_csv(export / "events.csv", index=False)
    pd.DataFrame({"user_id": range(1, 60), "plan": ["free", "paid"] * 29 + ["free"]}).to_csv(export / "users.csv", index=False)
    pd.DataFrame({"item_id": range(1, 8), "shelf": ["top"] * 7}).to_csv(export / "items.csv", index=False)
    assert cli.main(["data", "init-spec", "--name", "shop", "--events", str(export / "events.csv"),
                     "--users", str(export / "users.csv"), "--items", str(export / "items.csv")]) == 0
    assert cli.main(["data", "fetch", "shop", "--from", str(export)]) == 0
    assert cli.main(["data", "ingest", "--dataset", "shop"]) == 0, capsys.readouterr().err
    spec_file = paths.home / "specs" / "shop.yaml"
    spec_file.write_text(spec_file.read_text().replace("rating:\n  min: 1\n  max: 5\n",
                                                       "rating:\n  min: 1\n  max: 5\n  dtype: float64\n"))
    batch = paths.inbox("shop") / "0001-week"
    batch.mkdir(parents=True)
    pd.DataFrame([{**rows[0], "timestamp": 1_700_100_000, "rating": 4.5}]).to_csv(batch / "events.csv", index=False)
    capsys.readouterr()
    assert cli.main(["data", "ingest", "--dataset", "shop"]) == 0, capsys.readouterr().err
    assert "batch 0001-week: 1 events" in capsys.readouterr().out
    with connect(paths.warehouse, read_only=True) as con:
        kind = con.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'interactions' "
                           "AND column_name = 'rating'").fetchone()[0]
        ratings = con.execute("SELECT rating FROM interactions ORDER BY event_timestamp").df().rating.tolist()
    assert kind == "DOUBLE" and ratings == [float(r["rating"]) for r in rows] + [4.5]


def test_a_file_of_events_passed_as_the_users_table_is_refused_at_draft_time(tmp_path):
    """tags.csv (userId, movieId, tag, timestamp) given as --users: its ids repeat, so it is no profile
    table; said at once, not as a duplicate-key error at the first ingest."""
    events = tmp_path / "ratings.csv"
    pd.DataFrame({"userId": [1, 2, 2, 3], "movieId": [5, 6, 7, 5], "rating": [4, 3, 5, 2],
                  "timestamp": [1_500_000_000 + k for k in range(4)]}).to_csv(events, index=False)
    pd.DataFrame({"userId": [2, 2, 3], "movieId": [6, 7, 5], "tag": ["funny", "dark", "long"],
                  "timestamp": [1_500_000_010 + k for k in range(3)]}).to_csv(tmp_path / "tags.csv", index=False)
    with pytest.raises(ValueError, match=r"tags\.csv: its user key column 'userId' repeats '2' \(1 repeated rows\): a "
                                         r"users file holds one row per user; pass the file of the users' own fields "
                                         r"as --users \(a file of events or tags is neither\)"):
        draft_spec("films", events, users=tmp_path / "tags.csv")
