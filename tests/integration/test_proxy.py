"""Behind nginx: X-Forwarded-Proto and X-Forwarded-For are believed from
server.trusted_proxies only, so the page's session cookie is Secure behind TLS and a client
cannot make itself look like HTTPS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from marketd.app import create_daemon
from marketd.clock import FakeClock
from marketd.errors import ConfigError
from marketd.web import create_app
from tests.support import make_config, scripted_factory

HTTPS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
Make = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_client(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Make]:
    made: list[tuple[Any, TestClient[Any, Any]]] = []

    async def make(trusted: list[str]) -> TestClient[Any, Any]:
        config = make_config(tmp_path / f"d{len(made)}", security={"cron_secret": "s"},
                             server={"port": 0, "trusted_proxies": trusted})
        daemon = await create_daemon(config, clock=clock, clients=dict.fromkeys(
            ("stockx", "alias", "ebay"), scripted_factory({})))
        client = TestClient(TestServer(create_app(daemon), host="127.0.0.1"))
        await client.start_server()
        made.append((daemon, client))
        return client

    yield make
    for daemon, client in made:
        await client.close()
        await daemon.close()


async def _cookie(client: TestClient[Any, Any], headers: dict[str, str]) -> Any:
    resp = await client.get("/", headers=headers)
    assert resp.status == 200
    return SimpleCookie(resp.headers["Set-Cookie"])["marketd_session"]


async def test_secure_cookie_behind_a_trusted_proxy(make_client: Make) -> None:
    trusted = await make_client(["127.0.0.1"])
    assert (await _cookie(trusted, HTTPS))["secure"]
    assert not (await _cookie(trusted, {}))["secure"]  # plain HTTP through the proxy


@pytest.mark.parametrize("trusted", [[], ["10.0.0.0/8"]])
async def test_forwarded_headers_from_anyone_else_are_ignored(make_client: Make,
                                                              trusted: list[str]) -> None:
    client = await make_client(trusted)
    assert not (await _cookie(client, HTTPS))["secure"]


def test_trusted_proxies_must_be_addresses(tmp_path: Path) -> None:
    assert make_config(tmp_path, server={"trusted_proxies": ["127.0.0.1", "::1", "10.0.0.0/8"]}
                       ).server.trusted_proxies == ("127.0.0.1", "::1", "10.0.0.0/8")
    for bad in ("127.0.0.1", ["nginx.local"], [1]):
        with pytest.raises(ConfigError, match=r"server\.trusted_proxies"):
            make_config(tmp_path, server={"trusted_proxies": bad})
