"""A user's own data by spec alone: an export in a layout no loader knows (renamed columns, ISO
times, a click column, pipe-separated categories, no item table) goes through ingest, the gates,
Feast and a smoke training with nothing but a spec (the generic tabular loader)."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta, timezone

import duckdb
import pandas as pd
import pytest
import yaml

from core.spec import load_spec
from ingestion.rows import RawDataError
from ingestion.warehouse import ingest, validation_frames
from validation import gate
from validation.runner import run_suites

SPEC = {
    "name": "shop-clicks",
    "description": "a shop's click export: clicks.csv (events), people.csv (customers), no product table",
    "loader": "tabular",
    "entities": {"user": {"key": "user_id", "table": "users"}, "item": {"key": "item_id", "table": "items"}},
    "fields": [
        {"name": "user_id", "entity": "user", "kind": "id", "display": "Customer", "dtype": "int64"},
        {"name": "gender", "entity": "user", "kind": "categorical", "display": "Gender",
         "values": {"F": "female", "M": "male"}},
        {"name": "age", "entity": "user", "kind": "categorical", "display": "Age", "dtype": "int64", "range": [10, 100]},
        {"name": "item_id", "entity": "item", "kind": "id", "display": "Product", "dtype": "int64"},
        {"name": "category", "entity": "item", "kind": "multi", "display": "Category", "separator": "|",
         "values": ["Comedy", "Drama", "Action", "Kids"]},
    ],
    "label": {"source": "rating", "threshold": 1},  # the click column is read as a 0/1 rating
    "rating": {"min": 0, "max": 1},
    "time": {"min": "2024-01-01T00:00:00Z", "max": "2024-12-31T23:59:59Z"},
    "source": {
        "events": {"path": "clicks.csv", "time_column": "when", "time_format": "iso8601",
                   "columns": {"user_id": "customer", "item_id": "product", "rating": "clicked",
                               "category": "cat"}},
        "users": {"path": "people.csv", "columns": {"user_id": "cust_id", "gender": "sex", "age": "age_years"}},
    },
}
CATEGORIES = ["Comedy", "Drama", "Action", "Kids"]


def write_export(folder, n_users: int = 40, n_items: int = 24, per_user: int = 20, seed: int = 3) -> None:
    """Customers with a taste; products whose category changes once (a new profile version from the
    events); clicks that follow the taste (+ noise) over 10 weeks of 2024."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    users = [{"cust_id": u, "sex": rng.choice("FM"), "age_years": rng.randint(18, 70)} for u in range(1, n_users + 1)]
    pd.DataFrame(users).to_csv(folder / "people.csv", index=False)
    cats = {i: rng.sample(CATEGORIES, rng.randint(1, 2)) for i in range(1, n_items + 1)}
    cats[1] = ["Comedy"]  # until day 35, then Kids
    taste = {u: set(rng.sample(CATEGORIES, 2)) for u in range(1, n_users + 1)}
    start = datetime(2024, 3, 1, tzinfo=timezone.utc)
    rows = []
    for u in range(1, n_users + 1):
        for k in range(per_user):
            i = rng.randint(1, n_items)
            when = start + timedelta(days=rng.uniform(0, 70))
            cat = cats[i] if i != 1 or when < start + timedelta(days=35) else ["Kids"]  # product 1 is re-filed
            p = 0.8 if taste[u] & set(cat) else 0.2
            rows.append({"customer": u, "product": i, "clicked": int(rng.random() < p),
                         "when": when.isoformat().replace("+00:00", "Z"), "cat": "|".join(cat)})
    pd.DataFrame(rows).to_csv(folder / "clicks.csv", index=False)


@pytest.fixture
def own_data(paths):
    (paths.home / "specs").mkdir()
    (paths.home / "specs" / "shop-clicks.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False))
    write_export(paths.raw("shop-clicks"))
    return paths, load_spec("shop-clicks")  # found by name in the project home's specs/


def test_an_export_in_a_new_layout_ingests_validates_and_trains_by_spec_alone(own_data, tmp_path):
    from core.training_data import load_training_data
    from feature_repo.store import apply
    from feature_repo.training_sets import build_training_sets
    from models.train.config import load_config
    from models.train.run import run_training
    from tests.tiny_plm import tiny_bert

    paths, spec = own_data
    report = ingest(spec, paths.raw(spec.name), paths.warehouse, paths.snapshots, gate)
    assert report.rows_after["interactions"] == 800 and report.rows_after["users"] == 40
    assert report.rows_after["items"] == 25  # 24 products, one with a second version (re-filed as Kids)
    assert run_suites(spec, validation_frames(spec, paths.warehouse, paths.snapshots)).success
    apply(spec, paths)
    data = load_training_data(build_training_sets(spec, paths))
    frames = pd.concat(data.frames.values())
    first = frames[frames.item_id == 1].sort_values("event_timestamp")
    assert list(first.category.map(tuple).drop_duplicates()) == [("Comedy",), ("Kids",)]  # point in time
    assert first.item_text.iloc[-1] == "Product is 1. Category is Kids."
    assert frames.user_text.str.match(r"^Customer is \d+\. Gender is (female|male)\. Age is \d+\.$").all()
    assert set(frames.label) == {0, 1} and (frames.label == frames.rating).all()

    model, tok = tiny_bert()
    model.save_pretrained(paths.plms / "tiny-bert")
    tok.save_pretrained(paths.plms / "tiny-bert")
    cfg = load_config("smoke", {"plm": "tiny-bert", "max_len": 48, "baseline.batch_size": 64,
                                "finetune_ctr.batch_size": 64, "pretrain.batch_size": 32})
    out = run_training(cfg, data, ["baseline", "pretrain", "finetune-ctr-only"], tmp_path / "run",
                       paths.plm_source(cfg.plm))["stages"]
    for stage in ("baseline", "finetune-ctr-only"):
        assert 0.0 <= out[stage]["test"]["auc"] <= 1.0 and 0 < out[stage]["test"]["logloss"] < 2
    assert out["pretrain"]["valid"]["masked_tokens"] > 0


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "clicks.csv").write_text((f / "clicks.csv").read_text().replace("customer,", "client,", 1)),
     r"clicks.csv line 1, field customer: no column 'customer' for spec field user_id \(the file has: client"),
    (lambda f: (f / "clicks.csv").write_text((f / "clicks.csv").read_text().replace("Z,", "yesterday,", 1)
                                             .replace("2024", "x2024", 1)),
     r"clicks.csv line 2, field timestamp \(column 'when'\): '.*' is not an ISO 8601 time"),
    (lambda f: (f / "people.csv").write_text((f / "people.csv").read_text().replace(",", ";")),
     r"people.csv line 1: one column 'cust_id;sex;age_years' only: the separator is not ','\?"),
    (lambda f: (f / "clicks.csv").write_text((f / "clicks.csv").read_text() + "7,3,1,2024-03-05T10:00:00Z,Comedy,extra\n"),
     r"clicks.csv line 802: too many columns"),
    (lambda f: (f / "clicks.csv").write_text((f / "clicks.csv").read_text() + "7,3,2,2024-03-05T10:00:00Z,Comedy\n"),
     r"clicks.csv line 802, field rating \(column 'clicked'\): '2' is outside 0..1"),
    (lambda f: (f / "clicks.csv").write_text((f / "clicks.csv").read_text() + "7,3,1,2024-03-05T10:00:00Z,Horror\n"),
     r"clicks.csv line 802, field category \(column 'cat'\): value 'Horror' is not an allowed value"),
])
def test_bad_exports_name_file_line_and_field(own_data, damage, message):
    paths, spec = own_data
    damage(paths.raw(spec.name))
    with pytest.raises(RawDataError, match=message):
        ingest(spec, paths.raw(spec.name), paths.warehouse, paths.snapshots, gate)
    assert not paths.warehouse.exists() or not (paths.snapshots / "manifest.json").exists()


@pytest.mark.parametrize("spend, message", [
    ("n/a", r"people\.csv line 5, field spend: 'n/a' is not a finite number$"),
    ("inf", r"people\.csv line 5, field spend: 'inf' is not a finite number$"),
    ("", r"people\.csv line 5, field spend: missing value \(expected a number\)$"),
])
def test_a_numeric_field_takes_finite_numbers_only(paths, spend, message):
    """A numeric field is cast to DOUBLE in the warehouse and multiplies an embedding: a value that is
    not a finite number is named by file, line and field (it used to fail the cast with a DuckDB traceback)."""
    fields = [*SPEC["fields"], {"name": "spend", "entity": "user", "kind": "numeric", "display": "Spend"}]
    users = {**SPEC["source"]["users"], "columns": {**SPEC["source"]["users"]["columns"], "spend": "spend"}}
    spec_doc = {**SPEC, "name": "shop-spend", "fields": fields, "source": {**SPEC["source"], "users": users}}
    (paths.home / "specs").mkdir()
    (paths.home / "specs" / "shop-spend.yaml").write_text(yaml.safe_dump(spec_doc, sort_keys=False))
    spec, folder = load_spec("shop-spend"), paths.raw("shop-spend")
    write_export(folder)
    people = pd.read_csv(folder / "people.csv", dtype=str)
    people["spend"] = [f"{12.5 * k:.2f}" for k in range(len(people))]
    people.loc[3, "spend"] = spend  # line 5: the header is line 1
    people.to_csv(folder / "people.csv", index=False)
    with pytest.raises(RawDataError, match=message):
        ingest(spec, folder, paths.warehouse, paths.snapshots, gate)
    people.loc[3, "spend"] = " 7.25 "
    people.to_csv(folder / "people.csv", index=False)
    ingest(spec, folder, paths.warehouse, paths.snapshots, gate)
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        assert con.execute("SELECT spend FROM users WHERE user_id = 4").fetchone() == (7.25,)


def test_a_batch_without_the_specs_files_is_rejected_and_replay_is_refused(own_data):
    """A landing-area batch of an export holding none of the spec's files (empty, or another layout)
    is rejected naming what was expected, not taken as an empty batch (it was used up silently);
    replay, which writes MovieLens files, refuses a tabular data set instead of writing batches its
    loader cannot read."""
    from ingestion.increments import ingest_inbox
    from ingestion.replay import replay

    paths, spec = own_data
    ingest(spec, paths.raw(spec.name), paths.warehouse, paths.snapshots, gate)
    inbox = paths.inbox(spec.name)
    (inbox / "0001-empty").mkdir(parents=True)
    (inbox / "0002-recbole").mkdir()
    (inbox / "0002-recbole" / "shop.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    reports = ingest_inbox(spec, inbox, paths.warehouse, paths.snapshots, gate, "test")
    assert [(r.batch_id, r.status) for r in reports] == [("0001-empty", "rejected"), ("0002-recbole", "rejected")]
    assert all(f"no files of shop-clicks in {inbox / r.batch_id}: expected at least one of clicks.csv, people.csv"
               in r.reason for r in reports)
    with pytest.raises(ValueError, match=r"replay writes MovieLens \(RecBole\) files and shop-clicks is read by "
                                         r"loader 'tabular'"):
        replay(spec, paths.raw(spec.name), paths.home / "inbox2", timedelta(days=7), 2)
    assert not (paths.home / "inbox2").exists()


def test_an_event_of_a_user_missing_from_the_users_file_is_named(own_data):
    """A whole load checks its events against its profile files, as a batch does against the warehouse
    (the first ingest used to take such events, leaving them without user features)."""
    paths, spec = own_data
    folder = paths.raw(spec.name)
    (folder / "clicks.csv").write_text((folder / "clicks.csv").read_text() + "777,3,1,2024-03-05T10:00:00Z,Comedy\n")
    with pytest.raises(RawDataError, match=r"^clicks\.csv line 802, field user_id \(column 'customer'\): user 777 has no profile in "
                                           r"people\.csv \(its row is missing or was rejected\): add or mend its row there, or drop its events$"):
        ingest(spec, folder, paths.warehouse, paths.snapshots, gate)
    report = ingest(spec, folder, paths.warehouse, paths.snapshots, gate, quarantine=True)
    assert report.rows_after["interactions"] == 800 and report.rejected == 1


def test_quarantine_keeps_the_good_rows_of_an_export(own_data):
    paths, spec = own_data
    folder = paths.raw(spec.name)
    (folder / "clicks.csv").write_text((folder / "clicks.csv").read_text() + "7,3,5,2024-03-05T10:00:00Z,Comedy\n")
    report = ingest(spec, folder, paths.warehouse, paths.snapshots, gate, quarantine=True)
    assert report.rows_after["interactions"] == 800 and report.rejected == 1


def test_quarantine_sets_aside_lines_of_the_wrong_field_count_too(own_data):
    """A line DuckDB cannot split into the file's columns (one field too many, one too few) is set
    aside with its line and text like any bad row; the lines after it keep their own numbers."""
    paths, spec = own_data
    folder = paths.raw(spec.name)
    lines = (folder / "clicks.csv").read_text().splitlines()
    long, short = lines[4] + ",extra", lines[9].rsplit(",", 1)[0]
    bad_rating = "7,3,5,2024-03-05T10:00:00Z,Comedy"  # a value error after them: its line number must hold
    (folder / "clicks.csv").write_text("\n".join([*lines[:4], long, *lines[5:9], short, *lines[10:], bad_rating]) + "\n")
    with pytest.raises(RawDataError, match=r"clicks\.csv line 5: too many columns: .* \(2 such line\(s\); separator "
                                           r"','; --quarantine sets them aside\)"):
        ingest(spec, folder, paths.warehouse, paths.snapshots, gate)
    report = ingest(spec, folder, paths.warehouse, paths.snapshots, gate, quarantine=True)
    assert report.rows_after["interactions"] == 798 and report.rejected == 3
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        held = con.execute("SELECT line, field, reason, raw FROM quarantine ORDER BY line").fetchall()
    assert [(line, raw) for line, _, _, raw in held] == [(5, long), (10, short), (802, bad_rating)]
    assert held[0][2].startswith("too many columns") and held[1][2].startswith("missing columns")
    assert held[2][1:3] == ("rating", "'5' is outside 0..1")


def test_quarantine_never_sets_aside_what_it_cannot_bound(tmp_path):
    """An unclosed quote folds every later line into one record, and a header-less file whose first
    line is bad makes DuckDB reject all the good ones: quarantine would lose or keep the wrong rows,
    so both are refused, naming the line."""
    from core.spec import TableSource
    from ingestion.tabular import read_table

    good = [f"{k},{k + 1},1" for k in range(1, 30_001)]  # past the sniffer's sample, which would refuse the file
    (tmp_path / "quote.csv").write_text("a,b,c\n" + "\n".join([*good[:25_000], '7,"8,3', *good[25_000:]]) + "\n")
    with pytest.raises(RawDataError, match=r"^quote\.csv line 25002, field b: unquoted value: .*\(1 such line\(s\); separator ','\)$"):
        read_table(tmp_path / "quote.csv", TableSource(path="quote.csv"), "interactions", quarantine=True)
    (tmp_path / "headless.csv").write_text("\n".join(["1,2,3,9", *good[:39]]) + "\n")
    with pytest.raises(RawDataError, match=r"^headless\.csv line 2, field column3: missing columns: .*: 39 lines of this kind and 1 "
                                           r"others; the field count read from the file's first lines is likely not "
                                           r"its own: mend the file rather than set most of it aside$"):
        read_table(tmp_path / "headless.csv", TableSource(path="headless.csv", header=False), "interactions",
                   quarantine=True)


def test_a_spec_without_its_source_block_is_refused(tmp_path):
    bad = {**SPEC, "source": None}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="loader tabular needs a source block"):
        load_spec(tmp_path / "bad.yaml")
    string_keys = {**SPEC, "fields": [{**SPEC["fields"][0], "dtype": "string"}, *SPEC["fields"][1:]]}
    (tmp_path / "str.yaml").write_text(yaml.safe_dump(string_keys))
    with pytest.raises(ValueError, match="the key user_id of entity user must be dtype int64"):
        load_spec(tmp_path / "str.yaml")


@pytest.mark.parametrize(("rating", "message"), [
    ({"min": 0.5, "max": 5}, "rating min 0.5 is not a whole number, and the ratings are dtype int64: set `dtype: "
                             "float64` in the spec's rating block for fractional ratings"),
    ({"min": 5, "max": 1}, "rating min 5 is above max 1"),
    ({"min": 1, "max": float("inf")}, "rating max inf is not a finite number"),
    ({"min": float("nan"), "max": 5, "dtype": "float64"}, "rating min nan is not a finite number"),
    ({"min": 1, "max": 5, "dtype": "float32"}, "rating.dtype: Input should be 'int64' or 'float64'"),
])
def test_a_rating_scale_that_cannot_hold_is_refused(tmp_path, rating, message):
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump({**SPEC, "name": "shop", "rating": rating}))
    with pytest.raises(ValueError, match=re.escape(message)):
        load_spec(tmp_path / "shop.yaml")
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump({**SPEC, "name": "shop", "rating": {"min": 1.0, "max": 5.0}}))
    assert (load_spec(tmp_path / "shop.yaml").rating.max, load_spec(tmp_path / "shop.yaml").rating.dtype) == (5, "int64")
    assert isinstance(load_spec(tmp_path / "shop.yaml").rating.max, int)


def test_spec_mistakes_are_named_on_one_line(paths):
    """Bad YAML names its line; an unknown key its path and the nearest known key of that block; a
    spec whose name differs from its file name is refused where it is found (later steps look it up
    by that name)."""
    specs = paths.home / "specs"
    specs.mkdir()
    (specs / "broken.yaml").write_text("name: broken\nentities: [user, item\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: not valid YAML: while parsing a flow sequence .* line 2, "
                                         r"column 11 expected ',' or '\]'"):
        load_spec("broken")
    typo = {**SPEC, "name": "typo", "source": {**SPEC["source"], "events": {
        **{k: v for k, v in SPEC["source"]["events"].items() if k != "time_column"},
        "time_colum": SPEC["source"]["events"]["time_column"]}}}
    typo["fields"] = [{**SPEC["fields"][0], "kinde": "id"}, *SPEC["fields"][1:]]
    (specs / "typo.yaml").write_text(yaml.safe_dump(typo))
    with pytest.raises(ValueError) as info:
        load_spec("typo")
    message = str(info.value)
    assert "\n" not in message and "https://" not in message
    assert "fields.0.kinde: unknown key (did you mean 'kind'?)" in message
    assert "source.events.time_colum: unknown key (did you mean 'time_column'?)" in message
    (specs / "renamed.yaml").write_text(yaml.safe_dump({**SPEC, "name": "other"}))
    with pytest.raises(ValueError, match=r"renamed\.yaml: the spec's name is 'other', its file 'renamed\.yaml'"):
        load_spec("renamed")
    (specs / "list.yaml").write_text("- name: list\n")
    with pytest.raises(ValueError, match=r"list\.yaml: a data set spec is a YAML mapping"):
        load_spec("list")


def test_init_spec_drafts_a_spec_that_ingests(paths, capsys):
    import cli

    folder = paths.home / "export"
    write_export(folder)
    assert cli.main(["data", "init-spec", "--name", "my-shop", "--events", str(folder / "clicks.csv"),
                     "--users", str(folder / "people.csv")]) == 0
    out = capsys.readouterr().out
    assert "label: 'clicked' read as the rating 0..1; click = rating >= 1 (a 0/1 click column)" in out
    assert "events column 'cat': several values per cell separated by '|': multi" in out
    spec = load_spec("my-shop")
    assert spec.source.events.columns == {"user_id": "customer", "item_id": "product", "rating": "clicked"}
    assert spec.source.events.time_column == "when" and spec.source.events.time_format == "iso8601"
    assert spec.field("cat").kind.value == "multi" and spec.field("sex").values == ["F", "M"]
    assert cli.main(["data", "fetch", "my-shop", "--from", str(folder)]) == 0  # a folder of one's own files
    assert cli.main(["data", "ingest", "--dataset", "my-shop"]) == 0
    assert "ingested my-shop" in capsys.readouterr().out
    assert cli.main(["data", "init-spec", "--name", "my-shop", "--events", str(folder / "clicks.csv")]) == 2
    assert "exists: pass --force" in capsys.readouterr().err


def test_init_spec_guesses_columns_whose_names_say_nothing_from_their_values(paths, capsys):
    import cli

    folder = paths.home / "films"
    folder.mkdir(parents=True)
    rng = random.Random(5)
    pd.DataFrame({"member": [rng.randint(1, 500) for _ in range(400)],
                  "film": [rng.randint(1, 900) for _ in range(400)],
                  "stars": [rng.randint(1, 5) for _ in range(400)],
                  "watched_ms": [1_700_000_000_000 + k * 60_000 for k in range(400)]}).to_parquet(folder / "events.parquet")
    pd.DataFrame({"film": range(1, 901), "name": [f"Film number {k}, The" for k in range(1, 901)],
                  "genres": [rng.choice(["Drama", "Comedy,Drama", "Action,War"]) for _ in range(900)]}
                 ).to_csv(folder / "films.tsv", sep="\t", index=False)
    pd.DataFrame({"member": range(1, 501), "country": [rng.choice(["FR", "DE", "NL"]) for _ in range(500)]}
                 ).to_csv(folder / "members.csv", index=False)
    assert cli.main(["data", "init-spec", "--name", "films", "--events", str(folder / "events.parquet"),
                     "--items", str(folder / "films.tsv"), "--users", str(folder / "members.csv")]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err, err
    assert "user: 'member' guessed from its values" in out and "time: 'watched_ms', format unix_ms" in out
    spec = load_spec("films")
    assert spec.source.events.columns == {"user_id": "member", "item_id": "film", "rating": "stars"}
    assert spec.field("genres").kind.value == "multi" and spec.field("genres").values == ["Action", "Comedy", "Drama", "War"]
    assert spec.field("name").kind.value == "text"  # "Film number 7, The": commas, but not a list of values
    assert cli.main(["data", "init-spec", "--name", "films2", "--events", str(folder / "events.parquet"),
                     "--time", "when"]) == 2
    assert "no column 'when'" in capsys.readouterr().err


def test_a_click_log_without_a_users_table_is_served_by_its_ids_and_text(paths, capsys):
    """A user known only by its id (a click log with no users table, MovieLens' later releases) has no
    Feast profile view - Feast defines none of zero features - but its id reaches the models through
    the entity rows and its text ('User ID is 3.') through its text view: drafted, ingested, applied,
    built point-in-time and looked up online without an edit (it used to be refused)."""
    import json

    import cli
    from core.training_data import load_training_data
    from feature_repo.training_sets import build_training_sets

    write_export(paths.home / "clicks")
    (paths.home / "clicks" / "people.csv").unlink()
    assert cli.main(["data", "init-spec", "--name", "clicks", "--events", str(paths.home / "clicks" / "clicks.csv"),
                     "--user-key", "customer", "--item-key", "product"]) == 0
    assert "warning" not in capsys.readouterr().err
    spec = load_spec("clicks")
    assert spec.profile_fields("user") == [] and [f.name for f in spec.profile_fields("item")] == ["cat"]
    assert cli.main(["data", "fetch", "clicks", "--from", str(paths.home / "clicks")]) == 0
    assert cli.main(["data", "ingest"]) == 0  # no --dataset: before any warehouse, the home's only own spec
    assert "ingested clicks into" in capsys.readouterr().out
    assert cli.main(["features", "apply"]) == 0
    assert "views ['item_profile', 'user_text', 'item_text'], services ['ctr_v1', 'clickprompt_v1']" in \
        capsys.readouterr().out
    frames = pd.concat(load_training_data(build_training_sets(spec, paths)).frames.values())
    assert len(frames) == 800 and frames.user_text.str.fullmatch(r"User ID is \d+\.").all()
    first = frames[frames.item_id == 1].sort_values("event_timestamp")
    assert list(first.cat.map(tuple).drop_duplicates()) == [("Comedy",), ("Kids",)]  # point in time
    assert cli.main(["features", "materialize"]) == 0
    capsys.readouterr()
    assert cli.main(["features", "online", "--user-id", "3", "--item-id", "1"]) == 0  # JSON always
    online = json.loads(capsys.readouterr().out)
    assert online["user_text"] == "User ID is 3." and online["cat"] == ["Kids"], online


def test_the_default_data_set_before_any_ingest_is_the_homes_only_own_spec(paths):
    from cli.common import dataset_of
    from core.names import DEFAULT_DATASET

    assert dataset_of(paths, None) == DEFAULT_DATASET  # no specs/ of its own: the embedded data set
    (paths.home / "specs").mkdir()
    (paths.home / "specs" / "shop-clicks.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False))
    assert dataset_of(paths, None) == "shop-clicks" and dataset_of(paths, "movielens-1m") == "movielens-1m"
    (paths.home / "specs" / "other.yaml").write_text(yaml.safe_dump({**SPEC, "name": "other"}, sort_keys=False))
    assert dataset_of(paths, None) == DEFAULT_DATASET  # two: which one is not guessed


def test_a_time_in_the_other_unix_unit_is_named_with_the_fix(tmp_path):
    """unix_ms over seconds read every event as January 1970 (and unix_s over milliseconds as the year
    49,000): each such line is named with the time_format to set, before the time-range gate."""
    from core.spec import TableSource
    from ingestion.tabular import parse_times, read_table

    (tmp_path / "e.csv").write_text("t\n1500000000000\n1500000000\n")
    for fmt, line, value, unit, fix in (("unix_ms", 3, "1500000000", "seconds", "unix_s"),
                                        ("unix_s", 2, "1500000000000", "milliseconds", "unix_ms")):
        p = read_table(tmp_path / "e.csv", TableSource(path="e.csv"), "interactions")
        parse_times(p, "t", fmt)
        assert p.problems.first() == (line, "t", f"'{value}' reads as {unit}, and the spec says time_format {fmt}: "
                                                 f"set `time_format: {fix}` in the spec's source block")
        assert list(p.problems.per_line()) == [line]


def test_fetching_files_before_their_spec_says_how_to_draft_one(paths, capsys):
    import cli

    write_export(paths.home / "export")
    assert cli.main(["data", "fetch", "shop", "--from", str(paths.home / "export")]) == 0
    out, err = capsys.readouterr()
    assert out == f"shop: raw files in {paths.raw('shop')}\n" and (paths.raw("shop") / "clicks.csv").is_file()
    assert err == ("note: there is no spec 'shop' yet (known: movielens-100k, movielens-1m): `clickprompt data "
                   "init-spec --name shop --events FILE` drafts one\n")
