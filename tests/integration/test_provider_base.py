"""The provider seam's HTTP plumbing, against a raw socket server on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from marketd.clock import FakeClock
from marketd.config import parse_config
from marketd.errors import TransientError
from marketd.providers.base import Provider, ProviderContext, new_session, retry_after_seconds
from marketd.store import Store
from tests.support import CountingBudget


async def test_a_dropped_keepalive_request_is_never_resent(tmp_path: Path,
                                                         clock: FakeClock) -> None:
    """When a kept-alive connection drops after a GET went out, the client does not quietly
    send it again (that call would be unrecorded): it is a TransientError, one request seen."""
    seen = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            seen += 1
            if seen == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
            else:
                break  # read the request, then drop the connection without an answer
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = await Store.open(str(tmp_path / "t.db"), clock)
    session = new_session("marketd-test")
    try:
        config = parse_config({}, env={}).providers["stockx"]
        budget = CountingBudget()
        provider = Provider(ProviderContext(config, session, budget, store, clock))
        url = f"http://127.0.0.1:{port}/v2/x"
        assert (await provider._send("GET", url)).status == 200
        with pytest.raises(TransientError):
            await provider._send("GET", url)
        assert (seen, budget.spent) == (2, 2)
    finally:
        await session.close()
        await store.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0), ("0", 0.0), ("1e12", 86400.0), ("inf", None), ("nan", None), ("-5", 0.0),
    ("soon", None),
])
def test_retry_after_is_finite_and_bounded(value: str, expected: float | None) -> None:
    """Retry-After is honoured as seconds, capped at a day; nonsense falls back to the default."""
    assert retry_after_seconds({"Retry-After": value}) == expected
