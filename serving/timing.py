"""Where a request's time goes: named laps, sent back as the standard ``Server-Timing`` header.

``ServerTiming`` (pure ASGI, no per-request task or body copy) starts a ``Laps`` per HTTP request
and, when the response starts, closes it with a ``serialize`` lap and a ``total``; the handler and
the predictor mark the stages between (``parse``, ``registry``, ``online``, ``encode``, ``forward``,
``response``). Each lap is the time since the previous mark, so the laps add up to ``total``.

    Server-Timing: parse;dur=0.21, registry;dur=0.01, online;dur=2.90, ..., total;dur=4.02

Browsers' developer tools read the header; ``benchmarks/bench_serving.py`` aggregates it into the
latency budget per stage.
"""

from __future__ import annotations

import time


class Laps:
    """Sequential named durations (ms) since ``start``: ``lap(name)`` closes the stage ``name``."""

    __slots__ = ("start", "last", "ms")

    def __init__(self, start: float | None = None) -> None:
        self.start = self.last = time.perf_counter() if start is None else start
        self.ms: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = self.ms.get(name, 0.0) + (now - self.last) * 1000.0
        self.last = now

    def header(self) -> str:
        total = (time.perf_counter() - self.start) * 1000.0
        return ", ".join([*(f"{k};dur={v:.3f}" for k, v in self.ms.items()), f"total;dur={total:.3f}"])


class _NoLaps:
    """The stand-in when nobody times the call (the CLI, batch scoring)."""

    __slots__ = ()

    def lap(self, name: str) -> None:
        pass


NO_LAPS = _NoLaps()


def parse_server_timing(value: str) -> dict[str, float]:
    """``"a;dur=1.5, b;dur=2"`` -> ``{"a": 1.5, "b": 2.0}`` (what the benchmark reads)."""
    out: dict[str, float] = {}
    for part in value.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            out[name] = float(rest[4:])
    return out


class ServerTiming:
    """ASGI middleware: a ``Laps`` in ``scope["state"]["laps"]`` (``request.state.laps``) per HTTP
    request, and its ``Server-Timing`` header on the response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        laps = Laps()
        scope.setdefault("state", {})["laps"] = laps

        async def timed_send(message) -> None:
            if message["type"] == "http.response.start":
                laps.lap("serialize")
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"server-timing", laps.header().encode("ascii"))]}
            await send(message)

        await self.app(scope, receive, timed_send)
