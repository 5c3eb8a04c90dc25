"""The nightly flow after a killed writer and while a batch waits (real Prefect, DuckDB, GX, Feast,
the small landing area): the online store serves the text of a user whose batch was committed by a
process killed mid-export, and the flow fails on every run while a batch waits on an earlier one."""

from __future__ import annotations

import re

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
    with pytest.raises(RejectedBatches, match=rf"^batch {week1} is still rejected \(since .* UTC, its files unchanged\): "
                       f"ml-100k.inter line 2, field rating.*; batch {week2} waits on batch {week1}: ml-100k.inter "
                       "line .* user 4 has no profile"):
        update_data(dataset=SPEC.name)  # nothing new, and still red
    inter.write_text(good)
    done = update_data(dataset=SPEC.name)
    assert [(b["batch_id"], b["status"], b["events"]) for b in done["batches"]] == [(week1, "accepted", 6),
                                                                                    (week2, "accepted", 7)]


def test_a_rejected_batch_keeps_the_nightly_red_until_it_is_corrected_or_moved_out(paths, prefect_harness, tmp_path):
    """A rejected batch left in the inbox fails every nightly run, not only the first (a schedule that
    went green on the second night would hide it); moved out of the inbox, it is given up. An accepted
    batch edited afterwards holds every later one, and ``data status`` says so."""
    import shutil

    batches = landing_area(paths, tmp_path / "raw")
    week2 = batches[2].folder
    inter = week2 / "ml-100k.inter"
    good = inter.read_text()
    lines = good.splitlines()
    lines[1] = "\t".join(lines[1].split("\t")[:2] + ["9", lines[1].split("\t")[3]])  # a rating of 9
    inter.write_text("\n".join(lines) + "\n")
    with pytest.raises(RejectedBatches, match=f"^batch {week2.name} rejected: ml-100k.inter line 2, field rating"):
        update_data(dataset=SPEC.name)
    with pytest.raises(RejectedBatches) as again:  # the next night: nothing new, still red, and what to do
        update_data(dataset=SPEC.name)
    (problem,) = again.value.problems
    assert re.fullmatch(rf"batch {week2.name} is still rejected \(since \d{{4}}-\d\d-\d\d \d\d:\d\d UTC, its files "
                        r"unchanged\): ml-100k\.inter line 2, field rating: '9' .+ - correct its files and it is taken "
                        rf"again, or move {re.escape(str(week2))} out of the inbox to give it up", problem), problem
    assert again.value.summary["batches"] == [] and again.value.summary["trend"]["report"]

    cli_run = clickprompt(paths.home, "data", "update", "--dataset", SPEC.name)  # the CLI: exit 1, one line, no traceback
    assert cli_run.returncode == 1 and "Traceback" not in cli_run.stderr, cli_run.stderr[-3000:]
    assert cli_run.stderr.strip().splitlines()[-1] == problem
    assert "online store: unchanged" in cli_run.stdout
    status = clickprompt(paths.home, "data", "status").stdout
    assert f"batch {week2.name}: rejected, 0 events: ml-100k.inter line 2" in status
    assert "still in the inbox unchanged: every update names it" in status

    given_up = tmp_path / "given-up" / week2.name
    given_up.parent.mkdir()
    week2.rename(given_up)
    assert update_data(dataset=SPEC.name)["batches"] == []  # green again
    status = clickprompt(paths.home, "data", "status").stdout
    assert f"batch {week2.name}: rejected, 0 events: ml-100k.inter line 2, field rating: '9' " in status
    assert status.count("- given up (no longer in the inbox)") == 1, status

    # an accepted batch edited afterwards: the update stops at it, and status says it, not "pending"
    correction = paths.inbox(SPEC.name) / "9999-correction"
    shutil.copytree(given_up, correction)
    (correction / "ml-100k.inter").write_text(good)
    accepted = batches[1].folder / "ml-100k.inter"
    accepted.write_text(accepted.read_text().replace("\t4\t", "\t3\t", 1))
    status = clickprompt(paths.home, "data", "status").stdout
    assert f"batch {batches[1].folder.name}: accepted, 6 events - CHANGED since: its files differ" in status
    assert (f"batch 9999-correction: pending in {paths.inbox(SPEC.name)} (held: `clickprompt data update` refuses "
            f"to go on until batch {batches[1].folder.name}'s files are restored)") in status

