"""The provider seam's HTTP plumbing: the one request method every client's API calls go through
(faked at the HTTP boundary with aioresponses), and the shared session against a raw socket
server on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from structlog.testing import capture_logs
from yarl import URL

from marketd.clock import FakeClock
from marketd.config import parse_config
from marketd.errors import (
    AuthError,
    NotFound,
    PermanentError,
    RateLimited,
    TransientError,
)
from marketd.providers.base import Provider, ProviderContext, new_session, retry_after_seconds
from marketd.store import SQLiteStore, Store
from tests.support import CountingBudget

URL_ = "https://api.example.test/v1/things"
CREDENTIAL = "EXAMPLE_CLIENT_ID / EXAMPLE_CLIENT_SECRET"


class RenewingClient(Provider):
    """The smallest client with a renewable credential: it mints ``token-1``, ``token-2``, …
    and mints anew whenever the base says the current one was refused."""

    name = "example"
    credential = CREDENTIAL
    renewal_event = "example_token_refused"

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(ctx)
        self.minted = 0
        self.refused: list[str] = []

    async def _access_token(self, refused: str | None = None) -> str:
        if refused is not None:
            self.refused.append(refused)
        if self.minted == 0 or refused is not None:
            self.minted += 1
        return f"token-{self.minted}"

    def _auth_headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


class FixedKeyClient(Provider):
    """A client whose credential cannot be renewed (the base's default: no token)."""

    name = "example"
    credential = "EXAMPLE_KEY"

    def _auth_headers(self, token: str | None) -> dict[str, str]:
        return {"x-api-key": "the-key"}


Make = Callable[..., Any]


@pytest.fixture
def budget() -> CountingBudget:
    return CountingBudget(provider="example")


@pytest.fixture
def make(session: aiohttp.ClientSession, budget: CountingBudget, store: Store,
         clock: FakeClock) -> Make:
    config = parse_config({}, env={}).providers["stockx"]

    def build(cls: type[Provider] = RenewingClient) -> Any:
        return cls(ProviderContext(config, session, budget, store, clock))
    return build


def sent(http: aioresponses) -> list[dict[str, Any]]:
    """The request kwargs of every request to URL_, in order."""
    return [call.kwargs for call in http.requests.get(("GET", URL(URL_)), [])]


def auth_of(http: aioresponses) -> list[str]:
    return [kwargs["headers"]["Authorization"] for kwargs in sent(http)]


async def test_401_renews_the_token_once_then_succeeds(http: aioresponses, make: Make,
                                                       budget: CountingBudget) -> None:
    """A 401 renews the token (the refused one is never sent again) and the same request goes
    out once more, spending a budget token of its own; its JSON is the answer."""
    http.get(URL_, status=401, payload={"message": "expired"})
    http.get(URL_, payload={"ok": [1, 2]})
    client = make()
    with capture_logs() as logs:
        assert await client._request("GET", URL_, what="things") == {"ok": [1, 2]}
    assert auth_of(http) == ["Bearer token-1", "Bearer token-2"]
    assert client.refused == ["token-1"]
    assert budget.spent == 2
    [event] = [e for e in logs if e["event"] == "example_token_refused"]
    assert event["status"] == 401 and event["endpoint"] == "things"


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_twice_is_an_auth_error(http: aioresponses, make: Make,
                                              budget: CountingBudget, status: int) -> None:
    """Refused again after the renewal: AuthError naming the credential, and no third try."""
    http.get(URL_, status=status, payload={"message": "no"})
    http.get(URL_, status=status, payload={"message": "no"})
    with pytest.raises(AuthError) as info:
        await make()._request("GET", URL_, what="things")
    assert (info.value.status, info.value.credential) == (status, CREDENTIAL)
    assert auth_of(http) == ["Bearer token-1", "Bearer token-2"]
    assert budget.spent == 2


async def test_a_fixed_credential_is_not_renewed(http: aioresponses, make: Make,
                                                 budget: CountingBudget) -> None:
    """A client with nothing to renew gets AuthError from the first 401, one request sent."""
    http.get(URL_, status=401, payload={"message": "bad key"})
    with pytest.raises(AuthError) as info:
        await make(FixedKeyClient)._request("GET", URL_, what="things")
    assert info.value.credential == "EXAMPLE_KEY"
    assert [kwargs["headers"] for kwargs in sent(http)] == [{"x-api-key": "the-key"}]
    assert budget.spent == 1


async def test_429_is_rate_limited_with_retry_after(http: aioresponses, make: Make,
                                                    clock: FakeClock) -> None:
    """429 is RateLimited, not renewed; an HTTP-date Retry-After is read against the
    client's clock."""
    when = datetime.fromtimestamp(clock.now() + 120, UTC)
    http.get(URL_, status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(RateLimited) as info:
        await make()._request("GET", URL_, what="things")
    assert info.value.retry_after_s == 120.0
    assert len(sent(http)) == 1


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
async def test_5xx_and_408_are_transient(http: aioresponses, make: Make, status: int) -> None:
    """408 and 5xx are TransientError carrying the status."""
    http.get(URL_, status=status, body="<html>down</html>")
    with pytest.raises(TransientError) as info:
        await make()._request("GET", URL_, what="things")
    assert info.value.status == status
    assert len(sent(http)) == 1


async def test_timeout_is_transient(http: aioresponses, make: Make) -> None:
    """A request that times out is TransientError, saying after how long."""
    http.get(URL_, exception=TimeoutError())
    with pytest.raises(TransientError, match=r"timed out after 30 s"):
        await make()._request("GET", URL_, what="things")


async def test_network_error_is_transient(http: aioresponses, make: Make) -> None:
    http.get(URL_, exception=aiohttp.ClientConnectionError("reset"))
    with pytest.raises(TransientError, match="network error: ClientConnectionError: reset"):
        await make()._request("GET", URL_, what="things")


async def test_bad_json_is_transient(http: aioresponses, make: Make) -> None:
    """A 200 whose body is cut short is TransientError naming the endpoint."""
    http.get(URL_, body='{"ok": [1, 2', content_type="application/json")
    with pytest.raises(TransientError, match=r"bad JSON from things \(HTTP 200, 12 bytes\)") \
            as info:
        await make()._request("GET", URL_, what="things")
    assert info.value.status == 200


async def test_404_is_not_found_naming_the_subject(http: aioresponses, make: Make) -> None:
    http.get(URL_, status=404, body="")
    with pytest.raises(NotFound, match="not found on example: DD1391-100"):
        await make()._request("GET", URL_, what="things", subject="DD1391-100")


async def test_other_4xx_is_permanent(http: aioresponses, make: Make) -> None:
    http.get(URL_, status=400, payload={"message": "bad currency"})
    with pytest.raises(PermanentError) as info:
        await make()._request("GET", URL_, what="things")
    assert info.value.status == 400


async def test_uncounted_calls_spend_nothing(http: aioresponses, make: Make,
                                             budget: CountingBudget) -> None:
    http.get(URL_, payload=[])
    assert await make()._request("GET", URL_, what="things", counted=False) == []
    assert budget.spent == 0


# ---- the shared session ---------------------------------------------------------------------


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
    store = await SQLiteStore.open(str(tmp_path / "t.db"), clock)
    session = new_session("marketd-test")
    try:
        config = parse_config({}, env={}).providers["stockx"]
        budget = CountingBudget()
        provider = Provider(ProviderContext(config, session, budget, store, clock))
        url = f"http://127.0.0.1:{port}/v2/x"
        assert (await provider._send("GET", url)).status == 200
        with pytest.raises(TransientError,
                           match="network error: ServerDisconnectedError: Server disconnected"):
            await provider._send("GET", url)
        assert (seen, budget.spent) == (2, 2)
    finally:
        await session.close()
        await store.close()
        server.close()
        await server.wait_closed()


async def test_a_refused_connection_is_transient(store: Store, clock: FakeClock) -> None:
    """Nothing listening: a TransientError naming aiohttp's own connector error."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        session = new_session("marketd-test")
        try:
            config = parse_config({}, env={}).providers["stockx"]
            provider = Provider(ProviderContext(config, session, CountingBudget(), store, clock))
            with pytest.raises(TransientError, match="network error: ClientConnectorError"):
                await provider._send("GET", f"http://127.0.0.1:{port}/")
        finally:
            await session.close()


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0), ("0", 0.0), ("1e12", 86400.0), ("inf", None), ("nan", None), ("-5", 0.0),
    ("soon", None), ("Thu, 01 Jan 2026 00:01:00 GMT", 60.0),
    ("Wed, 31 Dec 2025 23:00:00 GMT", 0.0),
])
def test_retry_after_is_finite_and_bounded(value: str, expected: float | None,
                                           clock: FakeClock) -> None:
    """Retry-After is honoured as seconds (a date counted from the caller's clock), capped at
    a day; nonsense falls back to the default."""
    assert retry_after_seconds({"Retry-After": value}, now=clock.now()) == expected
