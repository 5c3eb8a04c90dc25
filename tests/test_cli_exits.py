"""How a command ends when its user stops it.

Ctrl-C stops a command in bounded time (``cli.bounded_interrupt``): the first interrupt raises
KeyboardInterrupt as usual; a process that still does not stop (a flow engine retrying a Prefect
server that went away) exits 130 after the grace period, and a second Ctrl-C at once. Prefect's
temporary server is out of the terminal's Ctrl-C (``cli.common.prefect_ready``), so the crash is
recorded, and an exit at once stops it. Output into a closed pipe ends quietly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.settings import REPO_ROOT

HANGS_AFTER_INTERRUPT = """
import time
from cli import bounded_interrupt
with bounded_interrupt(grace_s=1.0):
    ready = False
    while True:  # swallows the interrupt and keeps waiting, as a retrying API client does
        try:
            if not ready:  # said inside the try: the interrupt that follows is caught here
                ready = print("ready", flush=True) or True
            while True:
                time.sleep(0.05)
        except KeyboardInterrupt:
            print("caught", flush=True)
"""


def _as_a_foreground_job() -> None:
    """A terminal's foreground job takes SIGINT; a test runner started in the background of a script
    (``make test &``) ignores it, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _watchdog(proc: subprocess.Popen, seconds: float) -> threading.Timer:
    """Kill ``proc`` after ``seconds``: a read from it then ends (and the test fails) instead of hanging."""
    timer = threading.Timer(seconds, proc.kill)
    timer.daemon = True
    timer.start()
    return timer


def _run_and_interrupt(code: str) -> tuple[int, float, str]:
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_as_a_foreground_job)
    _watchdog(proc, 60)
    assert proc.stdout.readline().strip() == "ready"
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    return proc.returncode, time.monotonic() - started, out + err


def test_a_command_that_does_not_stop_exits_130_after_the_grace_period():
    code, seconds, output = _run_and_interrupt(HANGS_AFTER_INTERRUPT)
    assert code == 130 and 0.9 <= seconds < 10, (code, seconds, output)
    assert "caught" in output and "interrupted: stopping (Ctrl-C again to exit at once; exiting anyway in 1 s)" \
        in output


STOPS_BY_ITSELF = """
import signal, time
from cli import bounded_interrupt
signal.signal(signal.SIGINT, signal.default_int_handler)
with bounded_interrupt(grace_s=1.0):
    try:
        print("ready", flush=True)
        time.sleep(30)
    except KeyboardInterrupt:
        print("caught", flush=True)
time.sleep(2)  # past the grace period: the cancelled exit must not fire
print("exited normally", flush=True)
"""


def test_a_command_that_stops_by_itself_keeps_its_own_exit():
    code, _, output = _run_and_interrupt(STOPS_BY_ITSELF)
    assert code == 0 and "exited normally" in output, (code, output)


def test_an_ignored_sigint_stays_ignored():
    """A background job of a script starts with SIGINT ignored: the command does not take it over."""
    code = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nfrom cli import bounded_interrupt\n"
            "with bounded_interrupt():\n    inside = signal.getsignal(signal.SIGINT)\n"
            "print(inside is signal.SIG_IGN, signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_an_interrupted_command_returns_130_with_one_line(monkeypatch, capsys):
    import cli
    import cli.data

    def interrupted(args, paths):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.data, "cmd_data_status", interrupted)
    before = signal.getsignal(signal.SIGINT)
    assert cli.main(["data", "status"]) == 130
    assert capsys.readouterr().err == ("interrupted (exit 130): every write is atomic, so nothing is half-written; "
                                       "run the command again to go on (training resumes from its last checkpoint)\n")
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back


def test_output_into_a_closed_pipe_ends_quietly():
    """`clickprompt ... | head -1`: the reader goes away; the command ends with 141, no traceback."""
    code = ("import sys, cli, cli.data\n"
            "cli.data.cmd_data_status = lambda args, paths: [print('row ' * 20) for _ in range(200000)] and 0\n"
            "sys.exit(cli.main(['data', 'status']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"row row")
    proc.stdout.close()  # as head does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err


@contextlib.contextmanager
def _in_own_group(args: list[str], home: Path, stdout=subprocess.PIPE, watchdog_s: float = 180):
    """``python <args>`` as a terminal's foreground job in its own process group, on a new project
    home, with Prefect's own temporary server (no ``PREFECT_*`` settings of the test session); the
    whole group killed when the test ends, whatever it left."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["CLICKPROMPT_HOME"] = str(home)
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=_as_a_foreground_job)
    _watchdog(proc, watchdog_s)
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.processes
def test_ctrl_c_in_a_terminal_stops_the_pipeline_and_prefect_records_the_crash(tmp_path, small_raw):
    """A terminal's Ctrl-C reaches its whole foreground process group: the command and Prefect's
    temporary server, a child of it. The server must outlive the interrupt so the flow engine can
    record the crash: no "Error logging to API", no run left "Running" in Prefect's records. The home
    is new (not created yet): Prefect's import must not warn that it could not create its folder."""
    import sqlite3

    home = tmp_path / "new-home"
    seen = []
    with _in_own_group(["-m", "cli", "pipeline", "--profile", "smoke", "--source", str(small_raw), "--no-register"],
                       home, stdout=subprocess.DEVNULL, watchdog_s=240) as proc:
        for line in proc.stderr:  # the ingest flow has read the raw files: flows are running
            seen.append(line)
            if "clickprompt.loaders:" in line:
                break
        os.killpg(proc.pid, signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    assert "interrupted (exit 130)" in output
    assert "Error logging to API" not in output and "failed to process item" not in output, output
    assert "Failed to create the Prefect home" not in output, output
    with sqlite3.connect(home / ".prefect" / "prefect.db") as db:
        flows = db.execute("select f.name, r.state_type from flow_run r join flow f on f.id = r.flow_id").fetchall()
        tasks = db.execute("select name, state_type from task_run").fetchall()
    assert ("train-pipeline", "CRASHED") in flows, flows
    assert not [row for row in flows + tasks if row[1] in ("RUNNING", "PENDING", "SCHEDULED")], (flows, tasks)


STARTS_PREFECTS_SERVER_THEN_HANGS = """
from core.settings import apply_environment_defaults
apply_environment_defaults()
from cli.common import prefect_ready
from prefect.server.api.server import SubprocessASGIServer
prefect_ready()
print(SubprocessASGIServer().server_process.pid, flush=True)
""" + HANGS_AFTER_INTERRUPT.replace("grace_s=1.0", "grace_s=30.0")


def _live_in_group(pgid: int) -> list[int]:
    """The processes of a process group that still run (a zombie, dead but not reaped yet, does not)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


def _assert_group_ends(pgid: int, seconds: float = 10) -> None:
    """Every process of the group (Prefect's server, stopped when told to) ends within ``seconds``."""
    deadline = time.monotonic() + seconds
    while _live_in_group(pgid):
        if time.monotonic() > deadline:
            raise AssertionError(f"Prefect's server still runs after the command exited: {_live_in_group(pgid)}")
        time.sleep(0.1)


@pytest.mark.processes
def test_a_second_ctrl_c_exits_at_once_and_stops_prefects_server(tmp_path):
    """The server is out of the terminal's Ctrl-C, and the exit at once skips the exit handlers that
    stop it: it must be stopped anyway, not left running."""
    with _in_own_group(["-c", STARTS_PREFECTS_SERVER_THEN_HANGS], tmp_path / "home") as proc:
        server = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "ready"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.stdout.readline().strip() == "caught"
        time.sleep(0.5)
        assert server in _live_in_group(proc.pid)  # the first Ctrl-C, sent to the whole group, left it running
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        _assert_group_ends(proc.pid)


def _server_port_in(pgid: int) -> int | None:
    """The port of Prefect's temporary server (uvicorn, launched by ``prefect_ready``) in the group."""
    for pid in _live_in_group(pgid):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "uvicorn" in args and "--port" in args:
            return int(args[args.index("--port") + 1])
    return None


@pytest.mark.processes
def test_ctrl_c_while_prefects_server_starts_leaves_no_server_behind(tmp_path, small_raw):
    """Ctrl-C lands while ``prefect_ready`` waits for the server it has just launched (Prefect polls
    its health for seconds): the command ends with its one line and 130, and the server, which
    Ctrl-C does not reach, is stopped with it rather than left running without its parent."""
    import socket

    with _in_own_group(["-m", "cli", "pipeline", "--profile", "smoke", "--source", str(small_raw), "--no-register"],
                       tmp_path / "home", stdout=subprocess.DEVNULL) as proc:
        deadline, port = time.monotonic() + 120, None
        while port is None and proc.poll() is None and time.monotonic() < deadline:
            port = _server_port_in(proc.pid)
            time.sleep(0.02)
        if port is None:
            proc.kill()
            raise AssertionError(f"Prefect's server never started: {proc.communicate()[1][-2000:]}")
        with socket.socket() as probe:  # launched, not answering yet: the window this test is about
            if probe.connect_ex(("127.0.0.1", port)) == 0:  # a machine fast enough to close it: nothing to test
                pytest.skip("Prefect's server answered before the interrupt could land in its start")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "interrupted (exit 130)" in err and "Traceback" not in err, err
        assert "clickprompt.loaders:" not in err, err  # it stopped before any flow ran
        _assert_group_ends(proc.pid)


def test_serve_on_a_taken_port_is_one_line_and_exit_3(paths, capsys):
    """Another server on the port: the CLI's own line (exit 3, busy), not uvicorn's "[Errno 98]" log."""
    import socket

    from cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 3
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"error: port {port} on 127.0.0.1 is in use (another server?): stop it, or serve "
                                    "on another with --port"), err
