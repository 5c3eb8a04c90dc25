"""``clickprompt``: one console script, subcommands per platform stage, one module per group.

    cli/data.py    data fetch | ingest, validate, text render, features ..., plm fetch
    cli/train.py   train, pipeline, bench (Prefect flows)
    cli/serve.py   registry ..., serve, predict, score

Every command calls the same flows and library functions as everything else. Heavy libraries
(Feast, GX, torch) are imported inside the handlers so ``--help`` is instant.
Exit codes: 0 ok, 1 a gate failed (validation, promotion) or batches wait, 2 bad input or usage: one
line ``error: ...`` on stderr, checked before any work where it can be (counts, backbone, stages,
language model); ``--debug`` adds the traceback. 3 busy: another process holds the warehouse or the
training run (``warehouse is busy (pid N since T)``). 130: interrupted (Ctrl-C), stopped within
``INTERRUPT_GRACE_S``.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import threading
import traceback
import warnings
from contextlib import contextmanager
from typing import Callable

from cli import data, features, serve, train
from cli.common import UserError, check_names
from core.settings import Paths, apply_environment_defaults

log = logging.getLogger("clickprompt")

INTERRUPT_GRACE_S = 10.0  # after a Ctrl-C, the longest a command takes to stop


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line (``error: ...``), exit 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """An unknown option is reported by the subcommand it was given to, so the hint is its --help."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            (getattr(parsed, "command_parser", None) or self).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


DESCRIPTION = ("CTR prediction with language models (ClickPrompt, ALT) as a data platform: data in, gates,\n"
               "Feast features, training flows, a model registry and a server. `clickprompt COMMAND --help`\n"
               "says more; the README walks through them in order.")
EPILOG = ("exit codes: 0 ok; 1 a gate failed (validation, promotion) or batches wait; 2 bad input or usage\n"
          "(one line `error: ...`; --debug adds the traceback); 3 busy (another process holds the warehouse\n"
          "or the training run); 130 interrupted (Ctrl-C; run the command again to go on)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="clickprompt", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(group, name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=help, description=help)
        p.set_defaults(func=func, command_parser=p)
        return p

    for group in (data, features, train, serve):
        group.add_commands(sub, add)
    return parser


def main(argv: list[str] | None = None) -> int:
    apply_environment_defaults()  # before any Prefect / Feast / GX / transformers import
    # Prefect, imported in a home that does not exist yet, warns that it could not create its folder
    # there (it creates only the last level); prefect_ready creates it, parents too, before a flow runs
    warnings.filterwarnings("ignore", message="Failed to create the Prefect home directory", category=UserWarning)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, one line already printed)
        return int(exc.code or 0)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # third-party (ibis, feast) noise
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("feast", "great_expectations", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from core.locks import Busy

    try:
        paths = Paths.default()
        check_names(args, paths)
        # bounded_interrupt: the console command's, not a caller's cli.main([...])
        with bounded_interrupt(enabled=argv is None), one_line_errors_on_the_terminal(enabled=not args.debug):
            code = args.func(args, paths)
            sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at exit
            return code
    except BrokenPipeError:
        if not _stdout_gone():  # a pipe of the command's own (a socket, a subprocess): a real error
            raise
        return 141  # `clickprompt ... | head`: the reader has gone (the shell's 128 + SIGPIPE), no traceback
    except KeyboardInterrupt:
        print("interrupted (exit 130): every write is atomic, so nothing is half-written; run the command "
              "again to go on (training resumes from its last checkpoint)", file=sys.stderr)
        return 130
    except Busy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except one_line_errors() as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # validation gate failures carry their report
        if _gate_failed(exc):
            print(f"validation failed:\n{exc}", file=sys.stderr)
            return 1
        raise


def one_line_errors() -> tuple[type[BaseException], ...]:
    """The errors a command reports on one line, ``error: ...`` (exit 2), without a traceback."""
    from ingestion.fetch import FetchError
    from ingestion.loaders import RawDataError
    from ingestion.warehouse import WarehouseError

    return UserError, RawDataError, WarehouseError, FetchError, FileNotFoundError, FileExistsError, ValueError


def _gate_failed(exc: BaseException) -> bool:
    """A validation gate's failure (exit 1, its report printed); by name: GX loads only where a gate runs."""
    return type(exc).__name__ == "ValidationError"


def _batches_held(exc: BaseException) -> bool:
    """The nightly flow's rejected / waiting batches (exit 1, one line each); by name, as for gates."""
    return type(exc).__name__ == "RejectedBatches"


class _NoTraceback(logging.Filter):
    """On the terminal's handlers: Prefect logs a failed flow or task run with its traceback, and for
    an error the command reports itself on one line (busy, bad input, a failed gate) that traceback
    is noise before the line. The record keeps its message (which names the error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _batches_held(exc):
            return False  # the command prints each held batch on a line of its own: not twice
        if exc is not None and _reported_on_one_line(exc):
            record.exc_info, record.exc_text = None, None
        return True


class _ToTheTerminal(logging.Filter):
    """On Prefect's run loggers: puts ``_NoTraceback`` on the root logger's stream handlers, where
    Prefect installs its console handler when its first flow starts. Prefect's own run log (its API
    handler, on these loggers, which handles a record before the root's handlers) keeps the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.addFilter(_NO_TRACEBACK)  # once: addFilter does not add a filter twice
        return True


_NO_TRACEBACK, _TO_THE_TERMINAL = _NoTraceback(), _ToTheTerminal()
_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def _reported_on_one_line(exc: BaseException) -> bool:
    from core.locks import Busy

    try:
        return isinstance(exc, (Busy, *one_line_errors())) or _gate_failed(exc) or _batches_held(exc)
    except Exception:  # a filter must never fail the log call: keep the traceback
        return False


@contextmanager
def one_line_errors_on_the_terminal(enabled: bool = True):
    """While a command runs (not under ``--debug``): no Prefect traceback on the terminal for an error
    the command reports on one line; Prefect's run log keeps it."""
    if not enabled:
        yield
        return
    for name in _RUN_LOGGERS:
        logging.getLogger(name).addFilter(_TO_THE_TERMINAL)
    try:
        yield
    finally:
        for name in _RUN_LOGGERS:
            logging.getLogger(name).removeFilter(_TO_THE_TERMINAL)
        for handler in logging.getLogger().handlers:
            handler.removeFilter(_NO_TRACEBACK)


def _stdout_gone() -> bool:
    """Whether stdout's reader has closed it (a pipe's write end then polls as an error); if so stdout
    is pointed at /dev/null, so nothing more fails at exit."""
    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        gone = any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no real stdout (a test's capture), or no poll here
        return False
    if gone:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return gone


def _exit_now() -> None:
    """Exit 130 at once. ``os._exit`` skips the exit handlers, among them the one that stops
    Prefect's temporary server, which a terminal's Ctrl-C no longer reaches (``prefect_ready``): it is
    told to stop here, without waiting for it."""
    try:
        server_module = sys.modules.get("prefect.server.api.server")  # never imported here: only if in use
        if server_module is not None:  # its temporary server is one per process, as Prefect's client gets it
            process = server_module.SubprocessASGIServer().server_process
            if process is not None:
                process.terminate()
    except Exception:  # Prefect's internals moved, or the process is gone: the exit comes first
        pass
    finally:
        os._exit(130)


@contextmanager
def bounded_interrupt(grace_s: float = INTERRUPT_GRACE_S, enabled: bool = True):
    """Ctrl-C stops a command within ``grace_s``. The first one raises KeyboardInterrupt as usual (a
    training step stops; Prefect records the run as crashed); if the process is still there after
    ``grace_s`` it exits (130): a flow engine still retrying a Prefect server that went away, say
    (the temporary one is kept out of the terminal's Ctrl-C: ``prefect_ready``). A second Ctrl-C exits at
    once. Every write of the project is atomic and training resumes from its last checkpoint, so an
    exit here leaves nothing half-written. Python's own handling stays for a caller's ``cli.main([...])``
    (``enabled`` False: a test runner must not be exited), outside the main thread, and where SIGINT is
    ignored (a background job of a script). A command that stops by itself cancels the exit."""
    previous = signal.getsignal(signal.SIGINT)
    if not enabled or threading.current_thread() is not threading.main_thread() or previous in (signal.SIG_IGN, None):
        yield
        return
    state: dict = {"timer": None}

    def on_interrupt(signum, frame):
        if state["timer"] is not None:
            _exit_now()
        print(f"\ninterrupted: stopping (Ctrl-C again to exit at once; exiting anyway in {grace_s:.0f} s)",
              file=sys.stderr, flush=True)
        state["timer"] = threading.Timer(grace_s, _exit_now)
        state["timer"].daemon = True
        state["timer"].start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    stopped_by_interrupt = False
    try:
        yield
    except KeyboardInterrupt:
        stopped_by_interrupt = True  # main returns 130 at once; the timer still bounds a hang at exit
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        if state["timer"] is not None and not stopped_by_interrupt:
            state["timer"].cancel()  # it handled the interrupt and ended by itself (or with its own error)


if __name__ == "__main__":
    sys.exit(main())
