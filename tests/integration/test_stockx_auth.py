"""`marketd auth stockx`: the authorize URL, the local callback server and the code exchange.

The token endpoint is faked with aioresponses; the callback server is real (on loopback) and the
browser is a plain aiohttp request to it. The store is a real SQLite file.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from marketd.clock import FakeClock
from marketd.config import ProviderConfig, parse_config
from marketd.errors import AuthError
from marketd.providers.stockx_auth import (
    build_authorize_url,
    code_from_callback,
    run_auth_flow,
)
from marketd.store import Store

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "stockx"
TOKEN_URL = "https://accounts.stockx.com/oauth/token"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def make_config(**options: str) -> ProviderConfig:
    opts = {"client_id": "test-client-id", "client_secret": "test-client-secret", **options}
    return parse_config({"providers": {"stockx": opts}}, env={}).providers["stockx"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    with aioresponses(passthrough=["http://127.0.0.1"]) as mocked:
        yield mocked


class Browser:
    """Collects what the flow prints and plays the browser's redirect to the callback."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ready = asyncio.Event()

    def print(self, text: str) -> None:
        self.lines.append(text)
        self.ready.set()

    async def authorize_url(self) -> URL:
        await asyncio.wait_for(self.ready.wait(), 5)
        text = "\n".join(self.lines)
        return URL(next(w for w in text.split() if w.startswith("https://")))

    async def redirect(self, port: int, **query: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{port}/callback", params=query) as resp:
            return resp.status, await resp.text()


def test_authorize_url_has_the_documented_parameters() -> None:
    """The authorize URL asks for a code with scope offline_access openid and the gateway
    audience, on the configured auth host."""
    url = build_authorize_url("cid", "http://127.0.0.1:8788/callback", "s1",
                              auth_url="https://accounts.stockx.com/")
    assert url == ("https://accounts.stockx.com/authorize?response_type=code&client_id=cid"
                   "&redirect_uri=http%3A%2F%2F127.0.0.1%3A8788%2Fcallback"
                   "&scope=offline_access%20openid&audience=gateway.stockx.com&state=s1")


def test_callback_state_must_match() -> None:
    """A callback whose state differs from this run's is refused; a matching one gives the code."""
    assert code_from_callback({"code": "c1", "state": "good"}, "good") == "c1"
    with pytest.raises(AuthError, match="state"):
        code_from_callback({"code": "c1", "state": "evil"}, "good")


def test_callback_error_is_reported() -> None:
    """A callback carrying error=access_denied is an AuthError with StockX's description."""
    with pytest.raises(AuthError, match="user declined"):
        code_from_callback({"error": "access_denied", "error_description": "user declined",
                            "state": "s"}, "s")


async def test_flow_exchanges_the_code_and_stores_the_refresh_token(
        api: aioresponses, store: Store, clock: FakeClock) -> None:
    """The browser's redirect is exchanged for tokens; the refresh token (and the access token)
    are stored for the daemon."""
    api.post(TOKEN_URL, payload=load("token_code_exchange.json"))
    port, browser = free_port(), Browser()
    flow = asyncio.create_task(run_auth_flow(make_config(), store, port=port,
                                             print_fn=browser.print, clock=clock))
    url = await browser.authorize_url()
    assert url.query["redirect_uri"] == f"http://127.0.0.1:{port}/callback"
    status, text = await browser.redirect(port, code="the-code", state=url.query["state"])
    assert status == 200 and "close this tab" in text
    assert await flow == "refresh-token-new"
    assert await store.get_token("stockx", "refresh_token") == ("refresh-token-new", None)
    assert await store.get_token("stockx", "access_token") == \
        ("access-token-code", clock.now() + 43200)
    (call,) = api.requests[("POST", URL(TOKEN_URL))]
    data = dict(call.kwargs["data"])
    verifier = data.pop("code_verifier")  # PKCE (S256): the verifier of the URL's challenge
    assert data == {
        "grant_type": "authorization_code", "client_id": "test-client-id",
        "client_secret": "test-client-secret", "code": "the-code",
        "redirect_uri": f"http://127.0.0.1:{port}/callback"}
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    assert url.query["code_challenge"] == challenge.rstrip(b"=").decode()
    assert url.query["code_challenge_method"] == "S256"


async def test_flow_ignores_strays_and_takes_the_real_callback(
        api: aioresponses, store: Store) -> None:
    """Redirects with another state, or none (a stray tab, a scanner), get 400 and change
    nothing: no code is exchanged for them and the flow waits for the real one."""
    api.post(TOKEN_URL, payload=load("token_code_exchange.json"))
    port, browser = free_port(), Browser()
    flow = asyncio.create_task(run_auth_flow(make_config(), store, port=port,
                                             print_fn=browser.print))
    url = await browser.authorize_url()
    for stray in ({"code": "evil", "state": "forged"}, {}, {"error": "access_denied"}):
        status, _ = await browser.redirect(port, **stray)
        assert status == 400
    assert not flow.done() and api.requests == {}
    assert await store.get_token("stockx", "refresh_token") is None
    status, _ = await browser.redirect(port, code="the-code", state=url.query["state"])
    assert status == 200
    assert await flow == "refresh-token-new"


async def test_refused_code_exchange_is_auth_error(api: aioresponses, store: Store) -> None:
    """invalid_grant on the code exchange is an AuthError and nothing is stored."""
    api.post(TOKEN_URL, status=403, payload=load("error_invalid_grant.json"))
    port, browser = free_port(), Browser()
    flow = asyncio.create_task(run_auth_flow(make_config(), store, port=port,
                                             print_fn=browser.print))
    url = await browser.authorize_url()
    await browser.redirect(port, code="old-code", state=url.query["state"])
    with pytest.raises(AuthError, match="HTTP 403"):
        await flow
    assert await store.get_token("stockx", "refresh_token") is None


async def test_missing_client_credentials_fail_before_serving(store: Store) -> None:
    """Without STOCKX_CLIENT_ID/SECRET the flow fails at once, naming them."""
    with pytest.raises(AuthError) as info:
        await run_auth_flow(make_config(client_id="", client_secret=""), store,
                            port=free_port(), print_fn=lambda _: None)
    assert info.value.credential == "STOCKX_CLIENT_ID, STOCKX_CLIENT_SECRET"
