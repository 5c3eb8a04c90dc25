"""What the command groups share."""

from __future__ import annotations

import argparse
import contextvars
import json
import math
import signal
import threading
from pathlib import Path

from core.names import DEFAULT_DATASET, INT64_MAX, INT64_MIN
from core.settings import Paths


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def prefect_ready() -> None:
    """Before a command runs flows: the project's Prefect home created (Prefect creates only the last
    level of the folder) and, where Prefect would start its temporary server (no ``PREFECT_API_URL``),
    that server started now, out of the terminal's Ctrl-C. A terminal sends Ctrl-C's SIGINT to its
    whole foreground process group, and the server is a child in that group: it used to stop at once,
    and the flow engine then failed to report the run as crashed (a page of "Error logging to API" and
    events-worker errors, the run left "Running" in Prefect's records). The server is started from a
    thread that blocks SIGINT, a block its process inherits; this thread stays interruptible while the
    server starts. Prefect's client then finds the same server (one temporary server per process) and
    its exit handler stops it (``cli._exit_now`` where an exit skips the handlers)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_ENABLED

    PREFECT_HOME.value().mkdir(parents=True, exist_ok=True)
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value() or not hasattr(signal, "pthread_sigmask"):
        return  # a server of the user's; or Prefect's refusal, or its own start (no signal masks here), as before
    failed: list[BaseException] = []
    abandoned = threading.Event()

    def start() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            SubprocessASGIServer().start()
        except BaseException as exc:  # said in the calling thread
            failed.append(exc)
        if abandoned.is_set():  # the command was interrupted meanwhile: no server left behind
            SubprocessASGIServer().stop()

    # the caller's Prefect settings (a temporary_settings context) go with it: a thread starts without them
    starter = threading.Thread(target=contextvars.copy_context().run, args=(start,), name="prefect-server-start",
                               daemon=True)
    starter.start()
    try:
        starter.join()  # a Ctrl-C meanwhile stops the command here
    except BaseException:
        abandoned.set()
        raise
    if failed:
        raise failed[0]


def spec_of(paths: Paths, name: str | None, warehouse: Path | None = None):
    """The spec of ``dataset_of``'s data set."""
    from core.spec import load_spec

    return load_spec(dataset_of(paths, name, warehouse))


DATASET_HELP = (f"data set spec name (default: the one in the warehouse, else the home's only spec of its own, "
                f"else {DEFAULT_DATASET})")  # what dataset_of picks


def dataset_of(paths: Paths, name: str | None, warehouse: Path | None = None) -> str:
    """The data set named, or the one the warehouse holds (``warehouse``, default the home's), or
    before any ingest the home's only spec of its own (`data init-spec` wrote it); else the embedded one."""
    from ingestion.warehouse import warehouse_dataset

    if name or (name := warehouse_dataset(warehouse or paths.warehouse)):
        return name
    own = sorted((paths.home / "specs").glob("*.yaml"))
    return own[0].stem if len(own) == 1 else DEFAULT_DATASET


# --- bad input, refused before any work -----------------------------------------------------


class UserError(ValueError):
    """Input the user can fix: ``error: <message>`` on one line, exit 2 (``--debug``: the traceback)."""


def _number(text: str, kind: type, lo: float, hi: float, out_of_range: str):
    """``text`` as ``kind`` (int or float) within [lo, hi], else argparse's one-line usage error."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None
    if not ((kind is int or math.isfinite(value)) and lo <= value <= hi):  # an int may not fit a float
        raise argparse.ArgumentTypeError(f"{text} {out_of_range}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a count of batches, days, workers ...)."""
    return _number(text, int, 1, math.inf, "is not a count: give a whole number >= 1")


def non_negative_float(text: str) -> float:
    return _number(text, float, 0.0, math.inf, "must be a number >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, math.ulp(0.0), math.inf, "must be a number > 0")


def entity_id(text: str) -> int:
    """argparse type: a user / item id, a whole number the stores' int64 holds."""
    return _number(text, int, INT64_MIN, INT64_MAX,
                   f"is out of range: ids are 64-bit integers (at most {INT64_MAX})")


def port(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    return _number(text, int, 0, 65535, "is not a port: give 0-65535")


def fractions(text: str) -> tuple[float, float, float]:
    """argparse type: train,valid,test fractions, three numbers > 0 that add up to 1."""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give three numbers, e.g. 0.8,0.1,0.1") from None
    from core.training_data import fractions_problem  # the rule the split itself applies

    if not all(math.isfinite(v) for v in values) or fractions_problem(values):
        raise argparse.ArgumentTypeError(f"{text!r}: give three numbers > 0 that add up to 1, e.g. 0.8,0.1,0.1")
    return values


def require_feature_store(paths: Paths) -> None:
    """Commands that read Feast need the warehouse and an applied registry: say which step is missing."""
    from ingestion.warehouse import require_warehouse

    require_warehouse(paths.warehouse)
    if not paths.feast_registry.exists():
        raise UserError(f"no Feast registry at {paths.feast_registry}: run `clickprompt features apply` first")


def known_backbones() -> list[str]:
    from models.ctr import CTR_MODELS

    return sorted(CTR_MODELS)


def known_stages() -> tuple[str, ...]:
    """The training stages by name: the one import of the training package's stage list."""
    from models.train.stages import STAGES

    return tuple(str(s) for s in STAGES)


def known_plms() -> list[str]:
    from ingestion.fetch import PLMS

    return sorted(PLMS)


def add_profile(p, default: str | None, help: str) -> None:
    """A command's ``--profile``: a training profile, checked by ``check_names`` right after parsing."""
    p.add_argument("--profile", default=default, help=help)
    p.set_defaults(training_profile=True)


def check_names(args, paths: Paths) -> None:
    """Names a command would only look up after seconds of imports or minutes of work - training
    profile and method, backbone, stages, language model - checked right after parsing; every unknown
    one is named in one ``UserError`` line, with the known ones."""
    problems = []
    if getattr(args, "training_profile", False):
        from models.train.config import check_method, check_profile

        for flag, check in (("profile", check_profile), ("method", check_method)):
            value = getattr(args, flag, None)
            try:
                if value is not None:
                    check(value)
            except ValueError as exc:
                problems.append(f"--{flag}: {exc}")
    backbone = getattr(args, "backbone", None)
    if backbone and backbone not in (known := known_backbones()):
        problems.append(f"--backbone {backbone}: unknown CTR model; known: {', '.join(known)}")
    stages = getattr(args, "stages", None)
    if stages and stages != "all":
        known_s = known_stages()
        unknown = [s for s in stages.split(",") if s not in known_s]
        if unknown:
            problems.append(f"--stages: unknown stage{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(repr(u) for u in unknown)}; known: {', '.join(known_s)} (or all)")
    plm = getattr(args, "plm", None)
    if plm and plm not in known_plms() and not Path(paths.plm_source(plm)).is_dir():
        problems.append(f"--plm {plm}: not a known language model ({', '.join(known_plms())}), one fetched into "
                        f"{paths.plms}, nor a folder")
    if problems:
        raise UserError("; ".join(problems))
