"""The nightly flow after a killed writer and while a batch waits (real Prefect, DuckDB, GX, Feast,
the small landing area): the online store serves the text of a user whose batch was committed by a
process killed mid-export, and the flow fails on every run while a batch waits on an earlier one."""

from __future__ import annotations

import pytest

from feature_repo.online import online_features, online_store_current
from flows.update_data import RejectedBatches, update_data
from tests.ingestion.batches import SPEC, clickprompt, landing_area


def test_the_online_store_follows_a_batch_whose_writer_was_killed_mid_export(paths, prefect_harness):
    landing_area(paths, paths.home / "raw")
    first = update_data(dataset=SPEC.name, max_batches=2)
    assert [b["status"] for b in first["batches"]] == ["accepted", "accepted"] and online_store_current(paths)

    killed = clickprompt(paths.home, "data", "ingest", "--dataset", SPEC.name,
                         fault="during:snapshot-export:user_text")  # user 5 committed, its text file not
    assert killed.returncode == 137, killed.stderr[-2000:]

    second = update_data(dataset=SPEC.name)  # nothing new to take: it reconciles instead
    assert second["batches"] == [] and second["online"]["mode"] == "full"
    assert online_store_current(paths)
    values = online_features(paths, [{"user_id": 5, "item_id": 4}])
    assert values["user_text"] == ["User ID is 5. Gender is female. Age is 31. Job is artist. Zipcode is 10001."]
    assert values["item_text"][0].startswith("Movie ID is 4. Title is Get Shorty.")


def test_the_nightly_flow_fails_while_a_batch_waits(paths, prefect_harness, tmp_path):
    batches = landing_area(paths, tmp_path / "raw")
    inter = batches[1].folder / "ml-100k.inter"
    good = inter.read_text()
    lines = good.splitlines()
    lines[1] = "\t".join(lines[1].split("\t")[:2] + ["9", lines[1].split("\t")[3]])  # batch 1: a rating of 9
    inter.write_text("\n".join(lines) + "\n")  # ... and batch 2's events need its user 4
    week1, week2 = batches[1].folder.name, batches[2].folder.name
    with pytest.raises(RejectedBatches, match=f"batch {week1} rejected: .*batch {week2} waits on batch {week1}"):
        update_data(dataset=SPEC.name)
    with pytest.raises(RejectedBatches, match=f"^batch {week2} waits on batch {week1}: ml-100k.inter line .* user 4 has no profile"):
        update_data(dataset=SPEC.name)  # nothing new, and still red
    inter.write_text(good)
    done = update_data(dataset=SPEC.name)
    assert [(b["batch_id"], b["status"], b["events"]) for b in done["batches"]] == [(week1, "accepted", 6),
                                                                                    (week2, "accepted", 7)]
