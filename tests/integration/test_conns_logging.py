"""Issue 16: accept() failures and shed connections are logged once per interval with a count,
never once per attempt. The clock is the test's own; the connections are real sockets to a
real aiohttp server with marketd's connection guard."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from marketd.conns import GUARD, AcceptErrors, ConnectionGuard, track
from tests.support import make_config

EVERY_S = 10.0


@dataclass
class Clock:
    now: float = 5.0  # a machine up for five seconds: shorter than the interval

    def __call__(self) -> float:
        return self.now


def _accept_failure() -> dict[str, Any]:
    exc = OSError(errno.EMFILE, "Too many open files")
    return {"message": "socket.accept() out of system resource", "exception": exc}


async def test_accept_errors_are_logged_once_per_interval_with_a_count() -> None:
    loop = asyncio.get_running_loop()
    others: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: others.append(context))
    clock = Clock()
    handler = AcceptErrors(loop, EVERY_S, clock=clock)
    handler.install()
    try:
        with capture_logs() as logs:
            for _ in range(7000):  # a second of a full file table
                loop.call_exception_handler(_accept_failure())
            lines = [e for e in logs if e["event"] == "accept_failing"]
            assert len(lines) == 1  # the first at once, whatever the uptime
            assert lines[0]["errors"] == 1
            clock.now += EVERY_S / 2
            loop.call_exception_handler(_accept_failure())
            assert len([e for e in logs if e["event"] == "accept_failing"]) == 1
            clock.now += EVERY_S / 2
            loop.call_exception_handler(_accept_failure())
            lines = [e for e in logs if e["event"] == "accept_failing"]
            assert [e["errors"] for e in lines] == [1, 7001]
            assert "Too many open files" in lines[1]["error"]
        assert handler.total == 7002
        # anything else goes to the handler that was there before
        loop.call_exception_handler({"message": "something else", "exception": ValueError()})
        assert [c["message"] for c in others] == ["something else"]
    finally:
        handler.uninstall()
        loop.set_exception_handler(previous)


@dataclass
class Served:
    guard: ConnectionGuard
    port: int
    clock: Clock
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A client that makes one request and then stays idle on its keep-alive socket."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        await asyncio.wait_for(reader.readexactly(2), 5)  # "ok"
        self.held.append((reader, writer))
        return reader, writer


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[track])
    app.router.add_get("/ok", ok)
    clock = Clock()
    guard = app[GUARD] = ConnectionGuard(
        make_config(tmp_path, server={"max_connections": 3}).server, every_s=EVERY_S,
        clock=clock)
    runner = web.AppRunner(app)
    await runner.setup()
    assert runner.server is not None
    guard.attach(runner.server)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    s = Served(guard, port, clock)
    try:
        yield s
    finally:
        for _, writer in s.held:
            writer.close()
        await runner.cleanup()


async def test_shed_connections_are_logged_once_per_interval_with_a_count(
        served: Served) -> None:
    assert served.guard.cap == 3
    with capture_logs() as logs:
        first = [await served.connect() for _ in range(3)]
        assert not [e for e in logs if e["event"] == "connections_shed"]
        for _ in range(9):  # each new client beyond the cap sheds the oldest idle one
            await served.connect()
        lines = [e for e in logs if e["event"] == "connections_shed"]
        assert len(lines) == 1, lines
        assert lines[0]["shed"] == 1 and lines[0]["cap"] == 3
        served.clock.now += EVERY_S
        await served.connect()
        lines = [e for e in logs if e["event"] == "connections_shed"]
        assert [e["shed"] for e in lines] == [1, 9]
        assert lines[1]["open"] <= 3
    assert served.guard.shed == 10
    # the oldest were closed (the server let go of them), the newest still answer
    for reader, _ in first:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    assert len(served.guard.conns) == 3
    await served.connect()
