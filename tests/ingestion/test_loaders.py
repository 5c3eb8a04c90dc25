"""Raw MovieLens files -> canonical DataFrames: three layouts, real values, every bad input named."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from core.spec import load_spec
from ingestion.loaders import GENRE_ORDER, LOADERS, RawDataError, RawTables, Rejected, load_raw

ML100K = load_spec("movielens-100k")
ML1M = load_spec("movielens-1m")

USER_DTYPES_100K = {"user_id": "int64", "gender": "object", "age": "int64", "occupation": "object", "zip_code": "object"}
ITEM_DTYPES = {"item_id": "int64", "title": "object", "release_year": "Int64", "genres": "object"}
INTER_DTYPES = {"user_id": "int64", "item_id": "int64", "rating": "int64", "timestamp": "int64"}


def dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {c: str(t) for c, t in frame.dtypes.items()}


def item(tables: RawTables, item_id: int) -> dict:
    row = tables.items.loc[tables.items.item_id == item_id]
    assert len(row) == 1, f"item {item_id}: {len(row)} rows"
    return row.iloc[0].to_dict()


def user(tables: RawTables, user_id: int) -> dict:
    row = tables.users.loc[tables.users.user_id == user_id]
    assert len(row) == 1
    return row.iloc[0].to_dict()


def replace_line(data: bytes, line: int, new: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[line - 1] = new
    return b"\n".join(lines)


# --- the three layouts ------------------------------------------------------------------


def test_grouplens_100k_layout(raw_files, write_raw):
    t = load_raw(ML100K, write_raw(raw_files["grouplens-100k"]))
    assert t.layout == "GroupLens ml-100k" and t.rejected == []
    assert list(t.users.columns) == [f.name for f in ML100K.fields_of("user")]
    assert list(t.items.columns) == [f.name for f in ML100K.fields_of("item")]
    assert dtypes(t.users) == USER_DTYPES_100K
    assert dtypes(t.items) == ITEM_DTYPES
    assert dtypes(t.interactions) == INTER_DTYPES
    assert user(t, 1) == {"user_id": 1, "gender": "M", "age": 24, "occupation": "technician", "zip_code": "85711"}
    assert user(t, 74)["zip_code"] == "T8H1N"  # Canadian postcode: zip codes are strings
    assert item(t, 1) == {"item_id": 1, "title": "Toy Story", "release_year": 1995,
                          "genres": ["Animation", "Children's", "Comedy"]}  # fmt: skip
    assert item(t, 543)["title"] == "Misérables, Les"  # latin-1 decoded
    # the year in the title wins over the release date (08-Mar-1996), as in the RecBole files
    assert item(t, 1633)["release_year"] == 1994 and item(t, 1633)["title"] == "Á köldum klaka (Cold Fever)"
    unknown = item(t, 267)  # GroupLens' "unknown" movie: no title year, no release date
    assert unknown["title"] == "unknown" and pd.isna(unknown["release_year"]) and unknown["genres"] == ["unknown"]
    assert item(t, 1412)["title"] == "Land Before Time III: The Time of the Great Giving"  # "(1995) (V)"
    assert item(t, 1412)["release_year"] == 1995
    assert item(t, 1635)["title"] == "Two Friends"  # trailing blank in the raw title
    assert t.interactions.iloc[0].tolist() == [196, 242, 3, 881250949]
    assert set(t.files) == {"u.user", "u.item", "u.data"} and all(len(h) == 64 for h in t.files.values())


def test_grouplens_1m_layout(raw_files, write_raw):
    t = load_raw(ML1M, write_raw(raw_files["grouplens-1m"]))
    assert t.layout == "GroupLens ml-1m" and t.rejected == []
    assert dtypes(t.users) == {**USER_DTYPES_100K, "occupation": "int64"}  # codes, per the ML-1M spec
    assert user(t, 1) == {"user_id": 1, "gender": "F", "age": 1, "occupation": 10, "zip_code": "48067"}
    assert user(t, 161)["zip_code"] == "98107-2117"
    assert item(t, 73) == {"item_id": 73, "title": "Misérables, Les", "release_year": 1995, "genres": ["Drama", "Musical"]}
    assert item(t, 1001)["title"] == "Associate, The (L'Associe)" and item(t, 1001)["release_year"] == 1982
    assert dtypes(t.interactions) == INTER_DTYPES and len(t.interactions) == 4


def test_recbole_layout(raw_files, write_raw):
    t = load_raw(ML100K, write_raw(raw_files["recbole"]))
    assert t.layout == "RecBole atomic files"
    assert dtypes(t.users) == USER_DTYPES_100K and dtypes(t.items) == ITEM_DTYPES
    assert item(t, 1)["genres"] == ["Animation", "Children's", "Comedy"]
    assert item(t, 267)["title"] == "unknown"  # RecBole's typo 'unkonwn' is GroupLens' 'unknown'
    assert pd.isna(item(t, 267)["release_year"])
    assert item(t, 1412)["title"] == "Land Before Time III: The Time of the Great Giving"  # year 'V' in RecBole
    assert item(t, 1412)["release_year"] == 1995


def test_same_movies_and_users_from_grouplens_fixture_and_real_recbole_files(raw_files, write_raw, ml100k_fetched):
    grouplens = load_raw(ML100K, write_raw(raw_files["grouplens-100k"]))
    recbole = load_raw(ML100K, ml100k_fetched.raw)
    ids = grouplens.items.item_id.tolist()
    real = recbole.items.set_index("item_id").loc[ids].reset_index()
    pd.testing.assert_frame_equal(grouplens.items, real)
    users = recbole.users.set_index("user_id").loc[grouplens.users.user_id].reset_index()
    pd.testing.assert_frame_equal(grouplens.users, users)
    inter = recbole.interactions.head(len(grouplens.interactions))
    pd.testing.assert_frame_equal(grouplens.interactions, inter)  # u.data and ml-100k.inter share their order


def test_genres_are_put_in_grouplens_order_and_deduplicated(raw_files, write_raw):
    files = raw_files["grouplens-1m"]
    files["movies.dat"] = b"5::Mixed (1990)::Western|Action|Comedy|Action\n6::None (1991)::\n"
    t = load_raw(ML1M, write_raw(files))
    assert item(t, 5)["genres"] == ["Action", "Comedy", "Western"]
    assert item(t, 6)["genres"] == []
    assert list(GENRE_ORDER[:3]) == ["unknown", "Action", "Adventure"]


def test_crlf_line_ends_and_blank_lines_are_accepted(raw_files, write_raw):
    files = raw_files["grouplens-100k"]
    files["u.data"] = files["u.data"].replace(b"\n", b"\r\n") + b"\r\n"
    t = load_raw(ML100K, write_raw(files))
    assert len(t.interactions) == 6 and t.interactions.timestamp.iloc[-1] == 884182806


# --- real data ----------------------------------------------------------------------------


def test_real_movielens_100k(ml100k_fetched):
    t = load_raw(ML100K, ml100k_fetched.raw)
    assert (len(t.users), len(t.items), len(t.interactions)) == (943, 1682, 100000)
    assert t.rejected == []
    assert user(t, 1) == {"user_id": 1, "gender": "M", "age": 24, "occupation": "technician", "zip_code": "85711"}
    assert item(t, 1) == {"item_id": 1, "title": "Toy Story", "release_year": 1995,
                          "genres": ["Animation", "Children's", "Comedy"]}  # fmt: skip
    assert item(t, 543)["title"] == "Misérables, Les"
    # surprises in the real data: one movie without a year, letters in zip codes
    assert t.items.release_year.isna().sum() == 1 and item(t, 267)["title"] == "unknown"
    assert (~t.users.zip_code.str.fullmatch(r"[0-9]{5}")).sum() > 0
    assert t.interactions.rating.between(1, 5).all()
    lo, hi = (int(x.timestamp()) for x in (ML100K.time.min, ML100K.time.max))
    assert t.interactions.timestamp.between(lo, hi).all()
    assert t.items.release_year.min() >= 1900 and t.items.release_year.max() <= 2000
    assert set(t.users.occupation) <= set(ML100K.field("occupation").allowed)


def test_real_movielens_1m_subset(ml1m_subset):
    t = load_raw(ML1M, ml1m_subset)
    assert (len(t.users), len(t.items), len(t.interactions)) == (6040, 3883, 299418)
    assert t.rejected == []
    assert item(t, 1)["title"] == "Toy Story" and item(t, 1)["release_year"] == 1995
    assert user(t, 1) == {"user_id": 1, "gender": "F", "age": 1, "occupation": 10, "zip_code": "48067"}
    assert item(t, 73)["title"] == "Misérables, Les"  # latin-1 bytes 'Mis\xe9rables'
    assert item(t, 649)["title"] == "Cold Fever (Á köldum klaka)"
    assert set(t.interactions.rating) == {3, 4, 5}  # this subset holds only ratings 3..5
    assert t.items.release_year.notna().all()


def test_a_million_ratings_parse_exactly(raw_files, write_raw):
    """Every value of a million generated ratings comes through (how fast: benchmarks/bench_data.py)."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    ratings = pd.DataFrame({"u": rng.integers(1, 6041, n), "i": rng.integers(1, 3953, n),
                            "r": rng.integers(1, 6, n), "t": rng.integers(956703932, 1046454590, n)})  # fmt: skip
    body = "\n".join(ratings.u.astype(str) + "::" + ratings.i.astype(str) + "::" + ratings.r.astype(str)
                     + "::" + ratings.t.astype(str)) + "\n"  # fmt: skip
    files = raw_files["grouplens-1m"]
    files["ratings.dat"] = body.encode()
    folder = write_raw(files)
    t = load_raw(ML1M, folder)
    assert len(t.interactions) == n and t.interactions.rating.sum() == ratings.r.sum()
    assert (t.interactions.user_id.to_numpy() == ratings.u.to_numpy()).all()
    assert (t.interactions.timestamp.to_numpy() == ratings.t.to_numpy()).all()


# --- bad input: the first problem raises, naming file, line and field ----------------------------

BAD_CASES = {
    # name: (layout, file, mutate(bytes) -> bytes, spec, expected message)
    "wrong field count": ("grouplens-100k", "u.data", lambda d: replace_line(d, 3, b"22\t377\t1"), ML100K,
                          "u.data line 3: wrong field count: expected 4 tab-separated fields, found 3"),
    "too many fields": ("grouplens-1m", "ratings.dat", lambda d: replace_line(d, 2, b"1::661::3::978302109::7"), ML1M,
                        "ratings.dat line 2: wrong field count: expected 4 '::'-separated fields, found 5"),
    "non-numeric id": ("grouplens-100k", "u.data", lambda d: replace_line(d, 2, b"186\tx302\t3\t891717742"), ML100K,
                       "u.data line 2, field item_id: 'x302' is not an integer"),
    "non-numeric timestamp": ("grouplens-100k", "u.data", lambda d: replace_line(d, 4, b"244\t51\t2\t88060692e"),
                              ML100K, "u.data line 4, field timestamp: '88060692e' is not an integer"),
    "non-numeric age": ("grouplens-100k", "u.user", lambda d: replace_line(d, 2, b"2|fifty|F|other|94043"), ML100K,
                        "u.user line 2, field age: 'fifty' is not an integer"),
    "missing value": ("grouplens-100k", "u.user", lambda d: replace_line(d, 2, b"|53|F|other|94043"), ML100K,
                      "u.user line 2, field user_id: missing value (expected an integer)"),
    "rating 9": ("grouplens-100k", "u.data", lambda d: replace_line(d, 5, b"166\t346\t9\t886397596"), ML100K,
                 "u.data line 5, field rating: '9' is outside 1..5"),
    "rating 0": ("grouplens-1m", "ratings.dat", lambda d: replace_line(d, 4, b"2::1357::0::978298709"), ML1M,
                 "ratings.dat line 4, field rating: '0' is outside 1..5"),
    "undecodable bytes": ("grouplens-1m", "users.dat", lambda d: replace_line(d, 3, b"3::M::25::15::5511\xff"), ML1M,
                          "users.dat line 3, field zip_code: undecodable bytes b'\\xff' (the file must be UTF-8)"),
    "undecodable utf-8 in recbole": ("recbole", "ml-100k.item", lambda d: d.replace("é".encode(), b"\xe9"), ML100K,
                                     "ml-100k.item line 4, field title: undecodable bytes b'\\xe9'"),
    "control character in latin-1": ("grouplens-1m", "movies.dat", lambda d: d.replace(b"Jumanji", b"Juman\x00ji"),
                                     ML1M, "movies.dat line 2, field title: control character U+0000"),
    "utf-8 in a latin-1 file": ("grouplens-100k", "u.item", lambda d: d.replace(b"\xe9", "é".encode()), ML100K,
                                "u.item line 4, field title: 'Ã©' looks like UTF-8 read as latin-1"),
    "unknown occupation": ("grouplens-100k", "u.user", lambda d: d.replace(b"writer", b"astronaut"), ML100K,
                           "u.user line 3, field occupation: 'astronaut' is not an allowed value (administrator, "),
    "unknown gender": ("recbole", "ml-100k.user", lambda d: d.replace(b"\tF\t", b"\tX\t"), ML100K,
                       "ml-100k.user line 3, field gender: 'X' is not an allowed value (M, F)"),
    "unknown age code": ("grouplens-1m", "users.dat", lambda d: d.replace(b"2::M::56::", b"2::M::57::"), ML1M,
                         "users.dat line 2, field age: '57' is not an allowed value (1, 18, 25, 35, 45, 50, 56)"),
    "unknown occupation code": ("grouplens-1m", "users.dat", lambda d: d.replace(b"::16::70072", b"::21::70072"),
                                ML1M, "users.dat line 2, field occupation: '21' is not an allowed value (0, 1, 2,"),
    "unknown genre": ("grouplens-1m", "movies.dat", lambda d: d.replace(b"Drama|Musical", b"Drama|Horrror"), ML1M,
                      "movies.dat line 3, field genres: genre 'Horrror' is not an allowed value (Action, "),
    "bad genre flag": ("grouplens-100k", "u.item", lambda d: replace_line(d, 2, d.split(b"\n")[1][:-1] + b"2"),
                       ML100K, "u.item line 2, field genres: flag for genre Western is '2', not 0 or 1"),
    "duplicate user": ("grouplens-100k", "u.user", lambda d: d + b"2|30|M|other|12345\n", ML100K,
                       "u.user line 5, field user_id: duplicate user_id 2 (first on line 2)"),
    "recbole header counts as line 1": ("recbole", "ml-100k.inter", lambda d: d.replace(b"196\t242\t3", b"196\t242\t6"),
                                        ML100K, "ml-100k.inter line 2, field rating: '6' is outside 1..5"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_raises_naming_file_line_and_field(raw_files, write_raw, case):
    layout, fname, mutate, spec, message = BAD_CASES[case]
    files = raw_files[layout]
    files[fname] = mutate(files[fname])
    with pytest.raises(RawDataError) as err:
        load_raw(spec, write_raw(files))
    assert str(err.value).startswith(message), str(err.value)
    assert err.value.file == fname and err.value.line == int(message.split(" line ")[1].split(",")[0].split(":")[0])


def test_error_attributes_and_pickling(raw_files, write_raw):
    files = raw_files["grouplens-100k"]
    files["u.data"] = replace_line(files["u.data"], 5, b"166\t346\t9\t886397596")
    with pytest.raises(RawDataError) as err:
        load_raw(ML100K, write_raw(files))
    e = err.value
    assert (e.file, e.line, e.field, e.reason) == ("u.data", 5, "rating", "'9' is outside 1..5")
    assert isinstance(e, ValueError)
    copy = pickle.loads(pickle.dumps(e))
    assert str(copy) == str(e) == "u.data line 5, field rating: '9' is outside 1..5"


def test_first_problem_is_the_earliest_line(raw_files, write_raw):
    files = raw_files["grouplens-100k"]
    files["u.data"] = replace_line(files["u.data"], 5, b"166\t346\t9\t886397596")
    files["u.data"] = replace_line(files["u.data"], 3, b"22\tabc\t1\t878887116")
    with pytest.raises(RawDataError, match=r"^u\.data line 3, field item_id"):
        load_raw(ML100K, write_raw(files))


@pytest.mark.parametrize(("layout", "fname", "spec"), [("grouplens-100k", "u.data", ML100K),
                                                       ("grouplens-1m", "movies.dat", ML1M),
                                                       ("recbole", "ml-100k.user", ML100K)])  # fmt: skip
def test_empty_file(raw_files, write_raw, layout, fname, spec):
    files = raw_files[layout]
    files[fname] = b"\n"
    with pytest.raises(RawDataError) as err:
        load_raw(spec, write_raw(files))
    assert str(err.value) == f"{fname}: file is empty" and err.value.line is None


def test_recbole_header_without_rows(raw_files, write_raw):
    files = raw_files["recbole"]
    files["ml-100k.inter"] = files["ml-100k.inter"].split(b"\n")[0] + b"\n"
    with pytest.raises(RawDataError, match=r"^ml-100k\.inter: file has a header line but no data rows"):
        load_raw(ML100K, write_raw(files))


def test_recbole_header_missing_a_spec_field(raw_files, write_raw):
    files = raw_files["recbole"]
    files["ml-100k.user"] = files["ml-100k.user"].replace(b"occupation:token", b"job:token")
    with pytest.raises(RawDataError, match=r"^ml-100k\.user line 1, field occupation: no column for spec field"):
        load_raw(ML100K, write_raw(files))


def test_missing_file_names_file_and_folder(raw_files, write_raw):
    files = raw_files["grouplens-100k"]
    del files["u.item"]
    folder = write_raw(files)
    with pytest.raises(RawDataError) as err:
        load_raw(ML100K, folder)
    assert str(err.value) == f"u.item: missing file: expected u.item in {folder} (GroupLens ml-100k layout)"
    assert err.value.line is None and err.value.field is None


def test_folder_without_any_raw_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RawDataError, match=r"no raw files of movielens-100k in .*: expected u\.user, u\.item, u\.data"):
        load_raw(ML100K, tmp_path / "empty")
    with pytest.raises(RawDataError, match="does not exist"):
        load_raw(ML100K, tmp_path / "nowhere")


# --- quarantine ---------------------------------------------------------------------------


def test_quarantine_keeps_good_rows_and_sets_bad_ones_aside(raw_files, write_raw):
    files = raw_files["grouplens-100k"]
    files["u.data"] = replace_line(files["u.data"], 2, b"186\tx302\t3\t891717742")
    files["u.data"] = replace_line(files["u.data"], 4, b"244\t51\t9\t880606923")
    files["u.data"] = replace_line(files["u.data"], 6, b"298\t474\t4")
    files["u.user"] = files["u.user"].replace(b"writer", b"wr\xffter")
    files["u.item"] = files["u.item"].replace(b"GoldenEye (1995)|", b"GoldenEye (1995)|\x07")
    t = load_raw(ML100K, write_raw(files), quarantine=True)
    assert t.interactions.user_id.tolist() == [196, 22, 166]
    assert sorted(t.users.user_id) == [1, 2, 74] and 2 not in set(t.items.item_id)
    got = [(r.table, r.file, r.line, r.field) for r in t.rejected]
    assert got == [
        ("users", "u.user", 3, "occupation"),
        ("items", "u.item", 2, "release_date"),
        ("interactions", "u.data", 2, "item_id"),
        ("interactions", "u.data", 4, "rating"),
        ("interactions", "u.data", 6, None),
    ]
    reasons = {r.line: r.reason for r in t.rejected if r.file == "u.data"}
    assert reasons == {2: "'x302' is not an integer", 4: "'9' is outside 1..5",
                       6: "wrong field count: expected 4 tab-separated fields, found 3"}  # fmt: skip
    assert t.rejected[2].raw == "186\tx302\t3\t891717742"
    assert all(isinstance(r, Rejected) for r in t.rejected)
    assert str(t.rejected[3]) == "u.data line 4, field rating: '9' is outside 1..5"
    assert dtypes(t.interactions) == INTER_DTYPES and dtypes(t.items) == ITEM_DTYPES


def test_quarantine_still_raises_on_whole_file_problems(raw_files, write_raw):
    files = raw_files["grouplens-1m"]
    files["ratings.dat"] = b""
    with pytest.raises(RawDataError, match=r"^ratings\.dat: file is empty"):
        load_raw(ML1M, write_raw(files), quarantine=True)


def test_loader_registry():
    assert LOADERS["movielens"] is not None
    with pytest.raises(ValueError, match="names loader 'nope'"):
        load_raw(ML100K.model_copy(update={"loader": "nope"}), ".")
