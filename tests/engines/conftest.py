"""Engine tests: the scale-out paths (Spark, Redis, Dask) against the embedded default, each with the
real engine in local mode on loopback. Marked ``engines``: ``make test-engines`` installs the extras
and the system packages (Java, redis-server) and runs them; ``make test`` leaves them out.

An engine that is not installed skips its tests, except under ``CLICKPROMPT_REQUIRE_ENGINES=1``
(which ``make test-engines`` sets), where it fails them: CI never passes by skipping.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

pytestmark = pytest.mark.engines


def plain(values: dict) -> dict:
    """Feast's online values with list values (numpy arrays from some stores) as lists: comparable."""
    return {k: [x if isinstance(x, str) or not hasattr(x, "__len__") else list(x) for x in v] for k, v in values.items()}


def require(what: str, present: bool, how: str) -> None:
    """Skip (or, under CLICKPROMPT_REQUIRE_ENGINES=1, fail) when ``what`` is missing."""
    if present:
        return
    message = f"{what} is not installed ({how})"
    if os.environ.get("CLICKPROMPT_REQUIRE_ENGINES") == "1":
        pytest.fail(message + "; CLICKPROMPT_REQUIRE_ENGINES=1 asks for every engine")
    pytest.skip(message)


def require_module(module: str, extra: str) -> None:
    require(module, importlib.util.find_spec(module) is not None, f"pip install -e '.[{extra}]'")


def require_program(program: str, package: str) -> str:
    found = shutil.which(program)
    require(program, found is not None, f"apt-get install {package}, or `make engines`")
    return found or ""


from tests.flows.conftest import flow_home, prefect_harness  # noqa: E402,F401 - the flow tests' Prefect server
from tests.serving.conftest import trained_home  # noqa: E402,F401 - data -> Feast -> a served CTR-only model


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on 127.0.0.1 (no persistence), started and stopped by the tests."""

    def __init__(self, program: str, port: int) -> None:
        self.program, self.port, self.proc = program, port, None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "RedisServer":
        import subprocess
        import time

        import redis

        self.proc = subprocess.Popen([self.program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                if redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping():
                    return self
            except redis.exceptions.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def redis_server():
    require_module("redis", "redis")
    server = RedisServer(require_program("redis-server", "redis-server"), free_port()).start()
    try:
        yield server
    finally:
        server.stop()
