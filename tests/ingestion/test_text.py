"""The "field is value." template: SQL rendering pinned to exact strings for real MovieLens rows."""

import duckdb
import pandas as pd
import pytest

from core.spec import load_spec
from core.template import field_spans, render_python, sample_text
from ingestion.text_sql import render_tables, text_sql
from ingestion.warehouse import schema_ddl

ML100K = load_spec("movielens-100k")
ML1M = load_spec("movielens-1m")

# Real rows: MovieLens-100K users 1 and 196, movies 1, 242 and 1682; ML-1M user 1 and movie 1.
USERS_100K = pd.DataFrame(
    {"user_id": [1, 196], "gender": ["M", "M"], "age": [24, 49], "occupation": ["technician", "writer"],
     "zip_code": ["85711", "55105"]}
)
ITEMS_100K = pd.DataFrame(
    {"item_id": [1, 242, 1682],
     "title": ["Toy Story", "Kolya", "Scream of Stone (Schrei aus Stein)"],
     "release_year": [1995, 1996, 1991],
     "genres": [["Animation", "Children's", "Comedy"], ["Comedy"], ["Drama"]]}
)
GOLDEN_USERS_100K = {
    1: "User ID is 1. Gender is male. Age is 24. Job is technician. Zipcode is 85711.",
    196: "User ID is 196. Gender is male. Age is 49. Job is writer. Zipcode is 55105.",
}
GOLDEN_ITEMS_100K = {
    1: "Movie ID is 1. Title is Toy Story. Release year is 1995. Film genre is Animation, Children's, Comedy.",
    242: "Movie ID is 242. Title is Kolya. Release year is 1996. Film genre is Comedy.",
    1682: "Movie ID is 1682. Title is Scream of Stone (Schrei aus Stein). Release year is 1991. Film genre is Drama.",
}


def _warehouse(spec, users: pd.DataFrame, items: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for ddl in schema_ddl(spec):
        con.execute(ddl)
    for table, frame in (("users", users), ("items", items)):
        con.register("f", frame.assign(event_timestamp=pd.Timestamp("1997-09-01", tz="UTC")))
        con.execute(f"INSERT INTO {table} SELECT * FROM f")
        con.unregister("f")
    render_tables(con, spec)
    return con


def _texts(con, table: str, key: str) -> dict[int, str]:
    return dict(con.execute(f"SELECT {key}, {table} FROM {table}").fetchall())


def test_sql_rendering_matches_golden_strings_ml100k():
    con = _warehouse(ML100K, USERS_100K, ITEMS_100K)
    assert _texts(con, "user_text", "user_id") == GOLDEN_USERS_100K
    assert _texts(con, "item_text", "item_id") == GOLDEN_ITEMS_100K


def test_sample_text_is_user_then_item_in_spec_order():
    texts = {"user_text": GOLDEN_USERS_100K[196], "item_text": GOLDEN_ITEMS_100K[242]}
    assert sample_text(ML100K, texts) == (
        "User ID is 196. Gender is male. Age is 49. Job is writer. Zipcode is 55105. "
        "Movie ID is 242. Title is Kolya. Release year is 1996. Film genre is Comedy."
    )


def test_ml1m_codes_are_rendered_as_the_readme_words():
    users = pd.DataFrame({"user_id": [1], "gender": ["F"], "age": [1], "occupation": [10], "zip_code": ["48067"]})
    items = pd.DataFrame({"item_id": [1193], "title": ["One Flew Over the Cuckoo's Nest"], "release_year": [1975],
                          "genres": [["Drama"]]})
    con = _warehouse(ML1M, users, items)
    assert _texts(con, "user_text", "user_id")[1] == (
        "User ID is 1. Gender is female. Age is under 18. Job is K-12 student. Zipcode is 48067."
    )
    assert _texts(con, "item_text", "item_id")[1193] == (
        "Movie ID is 1193. Title is One Flew Over the Cuckoo's Nest. Release year is 1975. Film genre is Drama."
    )


def test_null_values_are_left_out_and_sql_equals_python_reference():
    items = pd.DataFrame({"item_id": [267, 5], "title": ["unknown", "Copycat"], "release_year": [None, 1995],
                          "genres": [["unknown"], []]}).astype({"release_year": "Int64"})
    con = _warehouse(ML100K, USERS_100K, items)
    got = _texts(con, "item_text", "item_id")
    assert got[267] == "Movie ID is 267. Title is unknown. Film genre is unknown."
    assert got[5] == "Movie ID is 5. Title is Copycat. Release year is 1995."
    rows = items.astype(object).where(items.notna(), None).to_dict("records")
    assert {r["item_id"]: render_python(ML100K, "item", r) for r in rows} == got


def test_quotes_in_values_and_display_names_are_escaped():
    sql = text_sql(ML100K, "item")
    assert "'Movie ID is '" in sql and "'Children''s'" not in sql  # value maps only; genres pass through
    users = USERS_100K.assign(occupation=["technician", "writer"], zip_code=["O'Hare", "55105"])
    con = _warehouse(ML100K, users, ITEMS_100K)
    assert "Zipcode is O'Hare." in _texts(con, "user_text", "user_id")[1]


def test_field_spans_cover_each_value():
    row = {"item_id": 1, "title": "Toy Story", "release_year": 1995, "genres": ["Animation", "Comedy"]}
    text = render_python(ML100K, "item", row)
    spans = {name: text[a:b] for name, a, b in field_spans(ML100K, "item", row)}
    assert spans == {"item_id": "1", "title": "Toy Story", "release_year": "1995", "genres": "Animation, Comedy"}


@pytest.mark.parametrize("spec", [ML100K, ML1M])
def test_text_sql_selects_key_text_and_time(spec):
    sql = text_sql(spec, "user")
    assert sql.startswith('SELECT "user_id", concat_ws(') and sql.endswith("event_timestamp FROM users")
