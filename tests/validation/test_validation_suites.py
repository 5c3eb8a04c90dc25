"""The spec-derived GX suites pass on good frames and name the suite, column and value of each bad row.

Frames are built by hand in the warehouse's shape (tz-aware UTC timestamps, list genres,
texts rendered by the template), so a failure here points at the suites, not at a loader.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import yaml

from core.spec import SPEC_DIR, DatasetSpec, load_spec

# Import the modules, not the package: under pytest, tests/validation shadows validation/ as a
# namespace package (tests/ is on sys.path), so validation/__init__.py does not run here.
from validation.runner import Failure, ValidationError, ValidationReport, run_suites
from validation.suites import build_suites, suite_names

NOW = datetime(2024, 1, 1, tzinfo=timezone.utc)
SUITES = ["users", "items", "interactions", "user_profile", "item_profile", "user_text", "item_text"]


def utc(*stamps: str, unit: str = "ns") -> pd.Series:
    return pd.Series(pd.to_datetime(list(stamps), utc=True, format="ISO8601")).astype(f"datetime64[{unit}, UTC]")


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return load_spec("movielens-100k")


def good_frames_100k() -> dict[str, pd.DataFrame]:
    users = pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "gender": ["M", "F", "M"],
            "age": [24, 53, 23],
            "occupation": ["technician", "other", "writer"],
            "zip_code": ["85711", "94043", "32067"],
            "event_timestamp": utc("1997-09-20", "1997-09-20", "1997-10-05"),
        }
    )
    items = pd.DataFrame(
        {
            "item_id": [1, 2, 3],
            "title": ["Toy Story", "GoldenEye", "Four Rooms"],
            "release_year": pd.array([1995, 1995, None], dtype="Int64"),
            "genres": [
                ["Animation", "Children's", "Comedy"],
                np.array(["Action", "Adventure", "Thriller"], dtype=object),  # as DuckDB hands lists
                ["Thriller"],
            ],
            "event_timestamp": utc("1997-09-20", "1997-09-20", "1997-09-20"),
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 2, 3, 3],
            "item_id": [1, 2, 1, 3, 2, 3],
            "rating": [5, 3, 4, 1, 2, 4],
            "label": [1, 0, 1, 0, 0, 1],
            "event_timestamp": utc(
                "1997-10-01 10:00", "1997-10-01 10:05", "1997-12-24", "1998-01-02", "1998-03-01", "1998-04-22"
            ),
        }
    )
    user_text = pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "user_text": [
                "User ID is 1. Gender is male. Age is 24. Job is technician. Zipcode is 85711.",
                "User ID is 2. Gender is female. Age is 53. Job is other. Zipcode is 94043.",
                "User ID is 3. Gender is male. Age is 23. Job is writer. Zipcode is 32067.",
            ],
            "event_timestamp": users["event_timestamp"].copy(),
        }
    )
    item_text = pd.DataFrame(
        {
            "item_id": [1, 2, 3],
            "item_text": [
                "Movie ID is 1. Title is Toy Story. Release year is 1995. Film genre is Animation, Children's, Comedy.",
                "Movie ID is 2. Title is GoldenEye. Release year is 1995. Film genre is Action, Adventure, Thriller.",
                "Movie ID is 3. Title is Four Rooms. Film genre is Thriller.",  # null release year left out
            ],
            "event_timestamp": items["event_timestamp"].copy(),
        }
    )
    # Feast views read parquet snapshots: same columns, microsecond timestamps.
    as_snapshot = lambda df: df.assign(event_timestamp=df["event_timestamp"].astype("datetime64[us, UTC]"))  # noqa: E731
    return {
        "users": users,
        "items": items,
        "interactions": interactions,
        "user_profile": as_snapshot(users),
        "item_profile": as_snapshot(items),
        "user_text": user_text,
        "item_text": item_text,
    }


def failures_of(report: ValidationReport) -> dict[str, list[Failure]]:
    return {s.name: s.failures for s in report.suites if not s.success}


def the_failure(failures: list[Failure], expectation: str, column: str) -> Failure:
    found = [f for f in failures if f.expectation == expectation and f.column == column]
    assert len(found) == 1, f"expected one {expectation} on {column}, got {failures}"
    return found[0]


# --- good data -----------------------------------------------------------------------------


def test_build_suites_names_one_suite_per_table_and_view(spec):
    suites = build_suites(spec, NOW)
    assert list(suites) == SUITES == suite_names(spec)
    assert all(s.name == name and s.expectations for name, s in suites.items())


def test_good_frames_pass_every_suite(spec):
    report = run_suites(spec, good_frames_100k(), now=NOW)
    assert report.success, report.format_text()
    assert [s.name for s in report.suites] == SUITES
    assert all(s.evaluated >= 10 for s in report.suites)


def test_default_now_is_the_current_time(spec):
    assert run_suites(spec, good_frames_100k()).success


def test_only_given_frames_are_validated(spec):
    frames = good_frames_100k()
    report = run_suites(spec, {"users": frames["users"], "item_text": frames["item_text"]}, now=NOW)
    assert [s.name for s in report.suites] == ["users", "item_text"]
    assert report.success


# --- one bad row per expectation family ------------------------------------------------------


def set_cell(frame: str, column: str, row: int, value):
    def mutate(frames):
        df = frames[frame]
        if isinstance(value, list):
            df[column] = df[column].astype(object)
            df.at[row, column] = value
        else:
            df.loc[row, column] = value

    return mutate


def duplicate_row(frame: str, row: int):
    def mutate(frames):
        df = frames[frame]
        frames[frame] = pd.concat([df, df.iloc[[row]]], ignore_index=True)

    return mutate


# (case, mutation, failing suite, expectation, its column, unexpected_count, the bad value among the examples)
BAD_ROWS = [
    ("id null", set_cell("users", "user_id", 1, None), "users",
     "expect_column_values_to_not_be_null", "user_id", 1, None),
    ("id out of range", set_cell("items", "item_id", 0, 2_000_000), "items",
     "expect_column_values_to_be_between", "item_id", 1, 2_000_000),
    ("rating 9", set_cell("interactions", "rating", 0, 9), "interactions",
     "expect_column_values_to_be_between", "rating", 1, 9),
    ("label 2", set_cell("interactions", "label", 1, 2), "interactions",
     "expect_column_values_to_be_in_set", "label", 1, 2),
    ("label inconsistent with rating", set_cell("interactions", "label", 0, 0), "interactions",
     "expect_column_values_to_be_in_set", "label", 1, 0),
    ("timestamp in the future", set_cell("interactions", "event_timestamp", 2, pd.Timestamp("2099-01-01", tz="UTC")),
     "interactions", "expect_column_values_to_be_between", "event_timestamp", 1, "2099-01-01T00:00:00+00:00"),
    ("timestamp before the data set", set_cell("users", "event_timestamp", 0, pd.Timestamp("1990-05-01", tz="UTC")),
     "users", "expect_column_values_to_be_between", "event_timestamp", 1, "1990-05-01T00:00:00+00:00"),
    ("unknown occupation", set_cell("user_profile", "occupation", 2, "astronaut"), "user_profile",
     "expect_column_values_to_be_in_set", "occupation", 1, "astronaut"),
    ("unknown genre element", set_cell("items", "genres", 2, ["Thriller", "Cyberpunk"]), "items",
     "expect_column_values_to_be_in_set", "genres", 1, "Cyberpunk"),
    ("malformed zip code", set_cell("users", "zip_code", 0, "85 711"), "users",
     "expect_column_values_to_match_regex", "zip_code", 1, "85 711"),
    ("duplicate (user, item, ts)", duplicate_row("interactions", 3), "interactions",
     "expect_compound_columns_to_be_unique", "user_id,item_id,event_timestamp", 2,
     {"user_id": 2, "item_id": 3, "event_timestamp": "1998-01-02T00:00:00+00:00"}),
    ("duplicate (key, ts) in a profile view", duplicate_row("item_profile", 0), "item_profile",
     "expect_compound_columns_to_be_unique", "item_id,event_timestamp", 2,
     {"item_id": 1, "event_timestamp": "1997-09-20T00:00:00+00:00"}),
    ("empty text", set_cell("user_text", "user_text", 1, ""), "user_text",
     "expect_column_value_lengths_to_be_between", "user_text", 1, ""),
]


@pytest.mark.parametrize(
    "mutate, suite, expectation, column, count, example",
    [case[1:] for case in BAD_ROWS],
    ids=[case[0] for case in BAD_ROWS],
)
def test_bad_row_fails_exactly_its_suite(spec, mutate, suite, expectation, column, count, example):
    frames = good_frames_100k()
    mutate(frames)
    report = run_suites(spec, frames, now=NOW)

    failed = failures_of(report)
    assert list(failed) == [suite], report.format_text()
    assert {f.column for f in failed[suite]} == {column}, report.format_text()
    matching = [f for f in failed[suite] if f.expectation == expectation]
    assert any(f.unexpected_count == count and example in f.examples for f in matching), report.format_text()


def test_null_id_also_fails_the_int64_type_check(spec):
    frames = good_frames_100k()
    set_cell("users", "user_id", 1, None)(frames)
    failures = failures_of(run_suites(spec, frames, now=NOW))["users"]
    assert the_failure(failures, "expect_column_values_to_be_of_type", "user_id").details == "observed float64"


def test_label_rule_failure_says_which_rule(spec):
    frames = good_frames_100k()
    frames["interactions"].loc[0, "label"] = 0  # rating 5
    frames["interactions"].loc[1, "label"] = 1  # rating 3
    failures = failures_of(run_suites(spec, frames, now=NOW))["interactions"]
    assert [(f.unexpected_count, f.examples, f.details) for f in failures] == [
        (1, [1], "label is 0 where rating < 4"),
        (1, [0], "label is 1 where rating >= 4"),
    ]


def test_label_2_fails_the_label_set_and_the_rule(spec):
    frames = good_frames_100k()
    frames["interactions"].loc[0, "label"] = 2  # rating 5
    failures = failures_of(run_suites(spec, frames, now=NOW))["interactions"]
    assert sorted(f.details for f in failures) == ["", "label is 1 where rating >= 4"]
    assert all(f.examples == [2] for f in failures)


def test_timestamp_after_now_fails_even_inside_the_spec_range(spec):
    frames = good_frames_100k()  # latest interaction: 1998-04-22, inside the spec's range
    report = run_suites(spec, {"interactions": frames["interactions"]}, now=datetime(1998, 3, 1))
    failure = the_failure(report.suite("interactions").failures, "expect_column_values_to_be_between", "event_timestamp")
    assert failure.examples == ["1998-04-22T00:00:00+00:00"]
    assert "1998-03-01T00:00:00+00:00" in failure.details


MALFORMED_ITEM_TEXTS = {
    "double space": "Movie ID is 3.  Title is Four Rooms. Film genre is Thriller.",
    "rendered None": "Movie ID is 3. Title is None. Film genre is Thriller.",
    "float year": "Movie ID is 3. Title is Four Rooms. Release year is 1995.0. Film genre is Thriller.",
    "fields out of order": "Movie ID is 3. Film genre is Thriller. Title is Four Rooms.",
    "no key first": "Title is Four Rooms. Movie ID is 3. Film genre is Thriller.",
    "no final period": "Movie ID is 3. Title is Four Rooms. Film genre is Thriller",
    "unknown genre word": "Movie ID is 3. Title is Four Rooms. Film genre is Thriller, Cyberpunk.",
    "trailing newline": "Movie ID is 3. Title is Four Rooms. Film genre is Thriller.\n",
}


@pytest.mark.parametrize("text", MALFORMED_ITEM_TEXTS.values(), ids=MALFORMED_ITEM_TEXTS.keys())
def test_malformed_text_fails_the_text_suite(spec, text):
    frames = good_frames_100k()
    frames["item_text"].loc[2, "item_text"] = text
    failed = failures_of(run_suites(spec, frames, now=NOW))
    assert list(failed) == ["item_text"]
    assert all(f.column == "item_text" and f.unexpected_count == 1 for f in failed["item_text"])
    assert all(f.examples == [text] for f in failed["item_text"])


def test_text_checks_name_their_reason(spec):
    frames = good_frames_100k()
    frames["item_text"].loc[2, "item_text"] = MALFORMED_ITEM_TEXTS["rendered None"]
    frames["item_text"].loc[1, "item_text"] = MALFORMED_ITEM_TEXTS["double space"].replace("3", "2")
    failures = failures_of(run_suites(spec, frames, now=NOW))["item_text"]
    by_reason = {f.details.split(" (")[0]: f for f in failures}
    assert by_reason["no rendered missing value"].examples == [MALFORMED_ITEM_TEXTS["rendered None"]]
    assert by_reason["no double, leading, trailing or non-space blanks"].unexpected_count == 1
    template = [f for f in failures if f.expectation == "expect_column_values_to_match_regex"]
    assert [f.unexpected_count for f in template] == [1]  # "Title is None." is well-formed: only the None check


# --- missing tables, columns, rows ---------------------------------------------------------------


def test_suite_named_without_frame_is_a_missing_table(spec):
    frames = good_frames_100k()
    report = run_suites(spec, {"users": frames["users"]}, now=NOW, suites=["users", "items"])
    assert [s.name for s in report.suites] == ["users", "items"]
    assert report.suite("users").success
    assert report.suite("items").failures == [
        Failure("missing table", None, None, [], "no frame named 'items' was given")
    ]


def test_unknown_frame_name_is_an_error(spec):
    with pytest.raises(ValueError, match="user"):
        run_suites(spec, {"user": good_frames_100k()["users"]})


def test_missing_column_and_empty_table(spec):
    frames = good_frames_100k()
    users = frames["users"].drop(columns=["occupation"])
    items = frames["items"].iloc[:0]
    report = run_suites(spec, {"users": users, "items": items}, now=NOW)
    users_failures = report.suite("users").failures
    assert {f.column for f in users_failures} == {"occupation"}
    assert any(f.expectation == "expect_column_to_exist" for f in users_failures)
    assert any("does not exist" in f.details for f in users_failures)  # GX's error, kept
    row_count = the_failure(report.suite("items").failures, "expect_table_row_count_to_be_between", None)
    assert row_count.details == "observed 0"


# --- report ------------------------------------------------------------------------------------------


def test_report_is_json_serialisable_and_readable(spec):
    frames = good_frames_100k()
    set_cell("interactions", "rating", 0, 9)(frames)
    duplicate_row("interactions", 3)(frames)
    set_cell("items", "genres", 2, ["Cyberpunk"])(frames)
    report = run_suites(spec, frames, now=NOW)

    data = json.loads(json.dumps(report.to_dict()))
    assert data["success"] is False
    interactions = next(s for s in data["suites"] if s["name"] == "interactions")
    assert {f["column"] for f in interactions["failures"]} == {"rating", "user_id,item_id,event_timestamp"}

    text = report.format_text()
    assert "PASS users" in text and "FAIL interactions" in text and "FAIL items" in text
    rating_line = next(line for line in text.splitlines() if "column rating" in line)
    assert "expect_column_values_to_be_between" in rating_line and "1 unexpected" in rating_line
    assert "[9]" in rating_line
    assert '"Cyberpunk"' in text


def test_validation_error_carries_the_report_and_its_failures(spec):
    frames = good_frames_100k()
    set_cell("users", "occupation", 0, "astronaut")(frames)
    report = run_suites(spec, frames, now=NOW)
    with pytest.raises(ValidationError) as caught:
        report.raise_if_failed()
    assert caught.value.report is report
    message = str(caught.value)
    assert "FAIL users" in message and "astronaut" in message and "occupation" in message
    assert "PASS" not in message
    assert run_suites(spec, good_frames_100k(), now=NOW).raise_if_failed().success


def test_failures_name_the_raw_file_and_lines_of_their_rows(spec):
    """With the loader's line numbers a failed row check says where its rows came from; a list
    column's bad element names its row's line; a frame without line numbers names none."""
    frames = good_frames_100k()
    set_cell("interactions", "rating", 2, 9)(frames)
    set_cell("items", "genres", 1, ["Action", "Cyberpunk"])(frames)
    frames["items"].index = [10, 11, 12]  # lines go by position, whatever the frame's index
    lines = {"interactions": ("ratings.csv", np.array([2, 3, 5, 6, 8, 9])),
             "items": ("movies.dat", np.array([7, 8, 9]))}
    report = run_suites(spec, frames, now=NOW, lines=lines)
    rating = next(f for f in report.suite("interactions").failures if f.column == "rating")
    assert rating.at == "ratings.csv line 5" and rating.examples == [9]
    genres = next(f for f in report.suite("items").failures if f.column == "genres")
    assert genres.at == "movies.dat line 8"
    assert "e.g. [9] at ratings.csv line 5" in report.format_text()
    unlocated = run_suites(spec, frames, now=NOW)
    assert {f.at for s in unlocated.suites for f in s.failures} == {""}


# --- other specs -----------------------------------------------------------------------------------------


def good_frames_1m() -> dict[str, pd.DataFrame]:
    """ML-1M codes: age and occupation are int codes rendered through the spec's value maps."""
    users = pd.DataFrame(
        {
            "user_id": [1, 2],
            "gender": ["F", "M"],
            "age": [1, 56],
            "occupation": [10, 16],
            "zip_code": ["48067", "70072"],
            "event_timestamp": utc("2000-12-31 22:00", "2000-12-31 21:00"),
        }
    )
    user_text = pd.DataFrame(
        {
            "user_id": [1, 2],
            "user_text": [
                "User ID is 1. Gender is female. Age is under 18. Job is K-12 student. Zipcode is 48067.",
                "User ID is 2. Gender is male. Age is 56+. Job is self-employed. Zipcode is 70072.",
            ],
            "event_timestamp": users["event_timestamp"].copy(),
        }
    )
    return {"users": users, "user_text": user_text}


def test_movielens_1m_int_codes_and_value_maps():
    spec = load_spec("movielens-1m")
    assert run_suites(spec, good_frames_1m(), now=NOW).success

    frames = good_frames_1m()
    frames["users"].loc[1, "occupation"] = 21  # codes run 0..20
    frames["user_text"].loc[0, "user_text"] = frames["user_text"].loc[0, "user_text"].replace("K-12 student", "10")
    failed = failures_of(run_suites(spec, frames, now=NOW))
    occupation = the_failure(failed["users"], "expect_column_values_to_be_in_set", "occupation")
    assert (occupation.unexpected_count, occupation.examples) == (1, [21])
    text = the_failure(failed["user_text"], "expect_column_values_to_match_regex", "user_text")
    assert "Job is 10." in text.examples[0]  # a raw code where the mapped words belong


def test_suites_follow_the_spec_not_movielens_names():
    raw = yaml.safe_load((SPEC_DIR / "movielens-100k.yaml").read_text())
    raw["entities"]["user"] = {"key": "customer_id", "table": "customers"}
    raw["fields"][0].update(name="customer_id", display="Customer")
    raw["label"]["source"] = "stars"
    spec = DatasetSpec.model_validate(raw)

    suites = build_suites(spec, NOW)
    assert list(suites)[:3] == ["customers", "items", "interactions"]
    columns = {e.column for e in suites["interactions"].expectations if hasattr(e, "column")}
    assert {"customer_id", "item_id", "stars", "label", "event_timestamp"} <= columns
    frames = good_frames_100k()
    customers = frames["users"].rename(columns={"user_id": "customer_id"})
    texts = frames["user_text"].rename(columns={"user_id": "customer_id"})
    texts["user_text"] = texts["user_text"].str.replace("User ID is", "Customer is")
    report = run_suites(spec, {"customers": customers, "user_text": texts}, now=NOW)
    assert report.success, report.format_text()
