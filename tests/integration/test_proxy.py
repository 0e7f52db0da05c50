"""Behind nginx: X-Forwarded-Proto and X-Forwarded-For are believed from
server.trusted_proxies only, so the page's session cookie is Secure behind TLS and a client
cannot make itself look like HTTPS; under server.base_path every route answers with and
without the prefix and everything marketd sends a browser carries it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from bs4 import BeautifulSoup

from marketd.app import create_daemon
from marketd.clock import FakeClock
from marketd.config_data import ROUTE_ROOTS
from marketd.daemon import DAEMON
from marketd.errors import ConfigError
from marketd.models import Price
from marketd.store import Outcomes
from marketd.web import create_app
from tests.support import make_config, scripted_factory

HTTPS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
Make = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_client(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Make]:
    made: list[tuple[Any, TestClient[Any, Any]]] = []

    async def make(trusted: list[str], base_path: str = "") -> TestClient[Any, Any]:
        config = make_config(tmp_path / f"d{len(made)}", security={"cron_secret": "s"},
                             server={"port": 0, "trusted_proxies": trusted,
                                     "base_path": base_path})
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


def _links(html: str) -> list[str]:
    soup = BeautifulSoup(html, "html.parser")
    return [t.get("href") or t.get("action") for t in soup.select("a[href], form[action]")]


@pytest.mark.parametrize("path", ["/marketd/", "/"])  # nginx passing the path on, or not
async def test_under_a_base_path_the_page_links_within_it(make_client: Make, path: str) -> None:
    client = await make_client(["127.0.0.1"], "/marketd")
    resp = await client.get(path)
    assert resp.status == 200
    links = [link for link in _links(await resp.text()) if link.startswith("/")]
    assert links and all(link.startswith("/marketd/") for link in links), links
    cookie = SimpleCookie(resp.headers["Set-Cookie"])["marketd_session"]
    assert cookie["path"] == "/marketd/"
    # a form posted back (CSRF token from the page): the redirect stays under the prefix
    token = BeautifulSoup(await resp.text(), "html.parser").select_one(
        "#signin-form input[name=csrf]")["value"]  # type: ignore[index]
    post = await client.post("/marketd/signin", data={"csrf": token, "secret": "s"},
                             allow_redirects=False)
    assert post.status == 303 and post.headers["Location"] == "/marketd/"
    wrong = await client.post("/marketd/signin", data={"csrf": token, "secret": "x"})
    assert wrong.status == 403
    assert all(link.startswith("/marketd/") for link in _links(await wrong.text()))


async def test_under_a_base_path_every_route_answers_both_ways(make_client: Make) -> None:
    client = await make_client([], "/marketd")
    for path in ("/healthz", "/status", "/openapi.json", "/metrics", "/jobs"):
        plain, under = await client.get(path), await client.get("/marketd" + path)
        # the same answer both ways (/healthz: 503 both ways, no scheduler runs here)
        assert plain.status == under.status and under.status != 404, path
        assert (await plain.read()) and (await under.read())
    bare = await client.get("/marketd", allow_redirects=False)
    assert bare.status == 308 and bare.headers["Location"] == "/marketd/"
    assert (await client.get("/elsewhere/status")).status == 404
    # a page of /prices names its next page under the prefix, however it was asked
    daemon = client.server.app[DAEMON]  # type: ignore[union-attr]
    clock = daemon.clock
    await daemon.store.record(Outcomes(prices=[
        Price("stockx", f"S-{i}", "10", "GBP", 100 + i, None, None, clock.now())
        for i in range(3)]))
    for path in ("/prices?limit=2", "/marketd/prices?limit=2"):
        nxt = (await (await client.get(path)).json())["next"]
        assert nxt.startswith("/marketd/prices?") and "cursor=" in nxt, nxt
        rest = await (await client.get(nxt)).json()
        assert [p["sku"] for p in rest["prices"]] == ["S-2"] and rest["next"] is None


async def test_without_a_base_path_nothing_changes(make_client: Make) -> None:
    client = await make_client([])
    resp = await client.get("/")
    assert all(not link.startswith("/marketd") for link in _links(await resp.text()))
    assert SimpleCookie(resp.headers["Set-Cookie"])["marketd_session"]["path"] == "/"
    assert (await client.get("/marketd/status")).status == 404


def test_base_path_must_be_a_path(tmp_path: Path) -> None:
    for given, kept in (("/marketd", "/marketd"), ("/marketd/", "/marketd"), ("/", ""),
                        ("", ""), ("/a/b.c_d~e-f", "/a/b.c_d~e-f")):
        assert make_config(tmp_path, server={"base_path": given}).server.base_path == kept
    for bad in ("marketd", "/a b", "/a//b", "/a?b", "/ünï", 3, "/prices", "/api/x", "/status/"):
        with pytest.raises(ConfigError, match=r"server\.base_path"):
            make_config(tmp_path, server={"base_path": bad})


async def test_route_roots_are_the_first_segments_of_every_route(make_client: Make) -> None:
    """config_data.ROUTE_ROOTS (what a base_path may not start with) is exactly the first path
    segments of marketd's routes: a route added later is refused as a base_path too."""
    client = await make_client([])
    app = client.server.app  # type: ignore[union-attr]
    roots = {r.resource.canonical.split("/")[1] for r in app.router.routes()
             if r.resource is not None} - {""}
    assert roots == ROUTE_ROOTS
