"""As-of batch scoring (offline store) against training evaluation and online serving: no skew."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

import cli
from feature_repo.training_sets import latest_training_set, load_training_sets
from models.evaluate import evaluate
from serving.scoring import load_production, score_file, score_frame
from tests.serving.conftest import PROFILE_CHANGE

AFTER_ALL_VERSIONS = datetime(1998, 3, 1, tzinfo=timezone.utc)  # after user 2's second profile version
BEFORE_CHANGE = datetime(1997, 12, 1, tzinfo=timezone.utc)


def run_score(capsys, monkeypatch, home, *argv) -> tuple[int, str, str]:
    monkeypatch.setenv("CLICKPROMPT_HOME", str(home.home))
    code = cli.main(["score", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_scoring_reproduces_the_training_evaluation(trained_home):
    """The shared scoring function on the run's own test split gives the test AUC / LogLoss it recorded."""
    lm = load_production(trained_home.paths)
    frames, _ = load_training_sets(latest_training_set(trained_home.paths))
    test = frames["test"]
    scores = score_frame(lm, test)
    recorded = trained_home.summary["finetune-ctr-only"]["test"]
    got = evaluate(test["label"].to_numpy(), scores.probability)
    assert got["auc"] == pytest.approx(recorded["auc"], abs=1e-9)
    assert got["logloss"] == pytest.approx(recorded["logloss"], abs=1e-6)
    assert not scores.unknown_user.any() and not scores.unknown_item.any()


def test_online_predict_equals_as_of_batch_score(server, trained_home, tmp_path, capsys, monkeypatch):
    """Training/serving skew: the same pair, at a time after the latest feature version, scores the
    same online (Feast online store, HTTP) and offline (point-in-time join, `clickprompt score`)."""
    pairs = [(1, 1), (2, 3), (2, 7), (15, 20), (41, 25), (9999, 4), (3, 9999)]
    entities = pd.DataFrame({"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs],
                             "event_timestamp": [AFTER_ALL_VERSIONS] * len(pairs)})
    entities.to_parquet(tmp_path / "entities.parquet")
    code, out, err = run_score(capsys, monkeypatch, trained_home.paths, "--input", str(tmp_path / "entities.parquet"),
                               "--output", str(tmp_path / "scores.parquet"), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["rows"], summary["model_version"], summary["feature_service"]) == (7, 1, "ctr_v1")
    assert (summary["unknown_users"], summary["unknown_items"]) == (2, 2)  # 41 and 9999; 25 and 9999
    assert (summary["rows_without_user_features"], summary["rows_without_item_features"]) == (1, 1)
    offline = pd.read_parquet(tmp_path / "scores.parquet")
    online = server.client.post("/predict/batch", json={"requests": [{"user_id": u, "item_id": i} for u, i in pairs]})
    online = online.json()["predictions"]
    assert list(offline["model_version"]) == [p["model_version"] for p in online] == [1] * len(pairs)
    np.testing.assert_allclose(offline["click_probability"].to_numpy(),
                               [p["click_probability"] for p in online], rtol=0, atol=1e-6)


def test_csv_in_csv_out_scores_as_parquet_does(trained_home, tmp_path, capsys, monkeypatch):
    """`score --input x.csv --output y.csv` (ISO-8601 times in the text) gives the parquet path's scores."""
    entities = pd.DataFrame({"user_id": [1, 2, 9999], "item_id": [1, 7, 4], "event_timestamp": [AFTER_ALL_VERSIONS] * 3})
    entities.to_parquet(tmp_path / "e.parquet")
    entities.assign(event_timestamp=entities.event_timestamp.map(lambda t: t.isoformat())).to_csv(
        tmp_path / "e.csv", index=False)
    for src, out in (("e.parquet", "s.parquet"), ("e.csv", "s.csv")):
        code, _, err = run_score(capsys, monkeypatch, trained_home.paths, "--input", str(tmp_path / src),
                                 "--output", str(tmp_path / out))
        assert code == 0, err
    parquet, text = pd.read_parquet(tmp_path / "s.parquet"), pd.read_csv(tmp_path / "s.csv")
    assert list(text.columns) == list(parquet.columns) and list(text.user_id) == [1, 2, 9999]
    np.testing.assert_allclose(text.click_probability, parquet.click_probability, rtol=0, atol=1e-9)
    assert (pd.to_datetime(text.event_timestamp, utc=True) == parquet.event_timestamp.dt.tz_convert("UTC")).all()


def test_json_and_json_lines_in_and_out_score_as_parquet_does(trained_home, tmp_path, capsys, monkeypatch):
    """`.json` (an array of records) and `.jsonl` (a record a line), read and written by suffix: the
    scores to the last digit, the caller's own columns as they were (text that looks like a number
    stays text), timestamps as ISO-8601."""
    entities = pd.DataFrame({"user_id": [1, 2, 9999], "item_id": [1, 7, 4], "event_timestamp": [AFTER_ALL_VERSIONS] * 3,
                             "ref": ["01234", "1e3", "café"]})
    entities.to_parquet(tmp_path / "e.parquet")
    records = [{"user_id": int(u), "item_id": int(i), "event_timestamp": AFTER_ALL_VERSIONS.isoformat(), "ref": r}
               for u, i, r in zip(entities.user_id, entities.item_id, entities.ref)]
    (tmp_path / "e.json").write_text(json.dumps(records), encoding="utf-8")
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    for src, out in (("e.parquet", "s.parquet"), ("e.json", "s.json"), ("e.jsonl", "s.jsonl"), ("e.parquet", "p.jsonl")):
        code, _, err = run_score(capsys, monkeypatch, trained_home.paths, "--input", str(tmp_path / src),
                                 "--output", str(tmp_path / out))
        assert code == 0, err
    parquet = pd.read_parquet(tmp_path / "s.parquet")
    as_json = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    as_lines = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text(encoding="utf-8").splitlines()]
    from_parquet = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    assert as_json == as_lines and [r["user_id"] for r in as_json] == [1, 2, 9999]
    assert list(as_json[0]) == list(from_parquet[0]) == list(parquet.columns)
    assert [r["ref"] for r in as_json] == [r["ref"] for r in from_parquet] == ["01234", "1e3", "café"]
    for rows in (as_json, from_parquet):  # 15 significant digits: the float32 score exactly
        np.testing.assert_allclose([r["click_probability"] for r in rows], parquet.click_probability, rtol=1e-14)
        assert all(pd.Timestamp(r["event_timestamp"]) == AFTER_ALL_VERSIONS for r in rows)
    assert from_parquet[0]["event_timestamp"] == "1998-03-01T00:00:00.000000+0000"


def test_a_file_of_no_known_format_is_refused_before_any_work(trained_home, tmp_path, capsys, monkeypatch):
    """`--output scores.txt` was written as parquet under that name: now refused, with the formats to use."""
    src = tmp_path / "entities.parquet"
    pd.DataFrame({"user_id": [1], "item_id": [1], "event_timestamp": ["1998-01-01"]}).to_parquet(src)
    for flag, given in (("--output", "scores.txt"), ("--output", "scores"), ("--input", "entities.xlsx")):
        argv = {"--input": str(src), "--output": str(tmp_path / "s.parquet"), flag: str(tmp_path / given)}
        code, _, err = run_score(capsys, monkeypatch, trained_home.paths, *[x for kv in argv.items() for x in kv])
        assert code == 2 and f"{flag} {tmp_path / given}: " in err and ".jsonl (a record a line)" in err, err
        assert err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entities.parquet"]  # nothing written


def test_as_of_scoring_uses_the_feature_version_valid_at_each_row(trained_home, tmp_path):
    """User 2 changed job on PROFILE_CHANGE: a row before it is scored with the old profile."""
    rows = pd.DataFrame({
        "request_id": ["a", "b", "c"],
        "user_id": [2, 2, 1],
        "item_id": [3, 3, 1],
        "event_timestamp": [AFTER_ALL_VERSIONS.isoformat(), BEFORE_CHANGE.isoformat(), "1997-12-01T00:00:00"],
    })
    rows.to_parquet(tmp_path / "in.parquet")
    summary = score_file(trained_home.paths, tmp_path / "in.parquet", tmp_path / "out.parquet")
    assert summary["rows"] == 3 and summary["model_version"] == 1
    out = pd.read_parquet(tmp_path / "out.parquet")
    # the input rows come back unchanged, in order, with the two new columns
    pd.testing.assert_frame_equal(out[rows.columns.tolist()], rows)
    assert list(out.columns) == [*rows.columns, "click_probability", "model_version"]
    after, before = out["click_probability"].iloc[0], out["click_probability"].iloc[1]
    assert after != pytest.approx(before, abs=1e-6)  # float32 scores: batch size changes the last bits

    # the "before" score is exactly the model on user 2's first profile version
    lm = load_production(trained_home.paths)
    frames, _ = load_training_sets(latest_training_set(trained_home.paths))
    old_profile = pd.concat(frames.values()).query("user_id == 2").iloc[[0]]
    assert old_profile["occupation"].item() == "other" and PROFILE_CHANGE > old_profile["event_timestamp"].item()
    item3 = pd.concat(frames.values()).query("item_id == 3").iloc[[0]]
    row = old_profile.drop(columns=["item_id", "title", "release_year", "genres"]).reset_index(drop=True)
    row = row.join(item3[["item_id", "title", "release_year", "genres"]].reset_index(drop=True))
    assert score_frame(lm, row).probability[0] == pytest.approx(before, abs=1e-6)
    assert not list(tmp_path.glob(".out.parquet.tmp*"))


@pytest.mark.parametrize(
    ("frame", "column", "message"),
    [
        (pd.DataFrame({"user_id": [1], "event_timestamp": ["1998-01-01"]}), "item_id", "missing column"),
        (pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "event_timestamp": ["1998-01-01", "yesterday"]}),
         "event_timestamp", "data row 2 value 'yesterday' is not an ISO-8601 timestamp"),
        (pd.DataFrame({"user_id": [1], "item_id": [1], "event_timestamp": [19980101]}),
         "event_timestamp", "is not a timestamp"),
        (pd.DataFrame({"user_id": ["7", "abc"], "item_id": [1, 2], "event_timestamp": ["1998-01-01"] * 2}),
         "user_id", "data row 2 value 'abc' is not an integer id"),
        # ids are whole numbers, as ingest has them: '196.0' is refused, not read as 196
        (pd.DataFrame({"user_id": ["7", "196.0"], "item_id": [1, 2], "event_timestamp": ["1998-01-01"] * 2}),
         "user_id", "data row 2 value '196.0' is not an integer id"),
        (pd.DataFrame({"user_id": [1, 2], "item_id": [196.0, 242.0], "event_timestamp": ["1998-01-01"] * 2}),
         "item_id", "data row 1 value 196.0 is a float (the column is float64) and ids are integers"),
        (pd.DataFrame({"user_id": pd.array([1, 2**63], dtype="uint64"), "item_id": [1, 2],
                       "event_timestamp": ["1998-01-01"] * 2}),
         "user_id", f"data row 2 value {2**63} is not an integer id (ids are whole numbers the stores' int64 holds)"),
        (pd.DataFrame({"user_id": ["1", "99999999999999999999"], "item_id": [1, 2],
                       "event_timestamp": ["1998-01-01"] * 2}),
         "user_id", "data row 2 value '99999999999999999999' is not an integer id (ids are whole numbers the "
         "stores' int64 holds)"),
        (pd.DataFrame({"user_id": [1, None], "item_id": [1, 2], "event_timestamp": ["1998-01-01"] * 2}),
         "user_id", "1 null value(s), first at data row 2"),
    ],
)
def test_bad_input_names_the_file_and_column(trained_home, tmp_path, capsys, monkeypatch, frame, column, message):
    src = tmp_path / "entities.parquet"
    frame.to_parquet(src)
    code, _, err = run_score(capsys, monkeypatch, trained_home.paths, "--input", str(src),
                             "--output", str(tmp_path / "scores.parquet"))
    assert code == 2
    assert str(src) in err and column in err and message in err, err
    assert not (tmp_path / "scores.parquet").exists()


def test_an_output_that_is_a_folder_is_refused_before_any_work(trained_home, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in" / "entities.parquet"
    src.parent.mkdir()
    pd.DataFrame({"user_id": [1], "item_id": [1], "event_timestamp": ["1998-01-01"]}).to_parquet(src)
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_score(capsys, monkeypatch, trained_home.paths, "--input", str(src), "--output", str(out))
    assert code == 2 and f"--output {out} is a folder" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"] and not list(out.iterdir())  # nothing written
    # a file in a folder that does not exist yet: the folder is made, as for any output
    code, _, err = run_score(capsys, monkeypatch, trained_home.paths, "--input", str(src), "--output",
                             str(out / "new" / "scores.parquet"))
    assert code == 0 and len(pd.read_parquet(out / "new" / "scores.parquet")) == 1, err
    # the input itself (by another spelling of its path): refused, the input kept
    before = src.read_bytes()
    same = tmp_path / "in" / ".." / "in" / "entities.parquet"
    code, _, err = run_score(capsys, monkeypatch, trained_home.paths, "--input", str(src), "--output", str(same))
    assert code == 2 and f"--output {same} is the --input file" in err and src.read_bytes() == before, err


def test_unreadable_input_is_named(trained_home, tmp_path, capsys, monkeypatch):
    src = tmp_path / "entities.parquet"
    src.write_text("user_id,item_id\n1,2\n")
    code, _, err = run_score(capsys, monkeypatch, trained_home.paths, "--input", str(src),
                             "--output", str(tmp_path / "scores.parquet"))
    assert code == 2 and f"{src}: not a readable parquet file" in err and "give .parquet, .csv, .tsv, .json" in err
    code, _, err = run_score(capsys, monkeypatch, trained_home.paths, "--input", str(tmp_path / "none.parquet"),
                             "--output", str(tmp_path / "scores.parquet"))
    assert code == 2 and "none.parquet: no such file" in err
