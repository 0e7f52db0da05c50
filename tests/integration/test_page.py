"""The status page: rendered HTML parsed (never grepped), sign-in, CSRF, actions and the
"why isn't this job running?" reasons, against a real loopback server, a real SQLite file, a
FakeClock and scripted providers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from bs4 import BeautifulSoup, Tag

from marketd.app import create_daemon
from marketd.clock import FakeClock, iso
from marketd.daemon import Daemon
from marketd.errors import AuthError, NotFound, RateLimited, TransientError
from marketd.models import JobSpec
from marketd.web import create_app
from tests.support import ScriptedProvider, make_config, raising, scripted_factory

SECRET = "page-cron-secret"
XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"


@dataclass
class Page:
    daemon: Daemon
    client: TestClient[Any, Any]
    registry: dict[str, ScriptedProvider]
    clock: FakeClock

    async def html(self, path: str = "/") -> BeautifulSoup:
        resp = await self.client.get(path)
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/html"
        return BeautifulSoup(await resp.text(), "html.parser")

    async def csrf(self) -> str:
        field = (await self.html()).find("input", {"name": "csrf"})
        assert isinstance(field, Tag)
        return str(field["value"])

    async def post(self, path: str, data: dict[str, Any] | list[tuple[str, str]],
                   *, status: int = 303) -> Any:
        resp = await self.client.post(path, data=data, allow_redirects=False)
        assert resp.status == status, await resp.text()
        return resp

    async def sign_in(self, secret: str = SECRET, *, status: int = 303) -> Any:
        return await self.post("/signin", {"csrf": await self.csrf(), "secret": secret},
                               status=status)

    async def act(self, action: str, status: int = 303, **fields: str) -> Any:
        return await self.post(f"/actions/{action}", {"csrf": await self.csrf(), **fields},
                               status=status)


MakePage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def make_page(tmp_path: Path, clock: FakeClock) -> AsyncIterator[MakePage]:
    made: list[Page] = []

    async def make(**sections: Any) -> Page:
        sections["scheduler"] = {"manual_wake_ms": 60000, **sections.get("scheduler", {})}
        config = make_config(tmp_path / f"d{len(made)}", **sections)
        registry: dict[str, ScriptedProvider] = {}
        factory = scripted_factory(registry)
        daemon = await create_daemon(config, clock=clock, clients=dict.fromkeys(
            ("stockx", "alias", "ebay"), factory))
        client = TestClient(TestServer(create_app(daemon), host="127.0.0.1"))
        page = Page(daemon, client, registry, clock)
        made.append(page)
        await client.start_server()
        return page

    yield make
    for p in made:
        await p.client.close()
        await p.daemon.close()


def spec(sku: str, size: str | None = "10", provider: str = "stockx",
         priority: int = 100) -> JobSpec:
    return JobSpec(provider, sku, size, priority=priority)


def counts(doc: BeautifulSoup, provider: str) -> dict[str, int]:
    row = doc.select_one(f'#job-counts tr[data-provider="{provider}"]')
    assert row is not None
    return {str(td["data-status"]): int(td.get_text()) for td in row.select("[data-status]")}


def job_rows(doc: BeautifulSoup) -> list[dict[str, str]]:
    out = []
    for tr in doc.select("#jobs tr[data-status]"):
        cells = [td.get_text(strip=True) for td in tr.find_all("td")]
        out.append({"provider": cells[0], "sku": cells[1], "status": cells[3],
                    "priority": cells[4], "error": cells[7], "why": cells[8]})
    return out


def flash(doc: BeautifulSoup) -> str:
    el = doc.select_one("#flash")
    return el.get_text(strip=True) if el else ""


async def test_page_shows_budgets_jobs_runs_prices_and_charts(make_page: MakePage) -> None:
    """Budgets per provider with every limit's window, job counts, runs, batches, prices."""
    p = await make_page(providers={"stockx": {"limits": ["1/second", "50/hour"]}})
    await p.daemon.enqueue([spec("DD1391-100", "9"), spec("AB1234-001", "8"),
                            spec("XY1", None, "alias"), spec("LATER-1", "7", "ebay")])
    await p.daemon.scheduler.run_once("test", ["stockx", "alias"])
    doc = await p.html()
    stockx = doc.select_one('#budgets [data-provider="stockx"]')
    assert stockx is not None
    assert stockx.select_one(".used").get_text() == "2"  # type: ignore[union-attr]
    assert stockx.select_one(".limit").get_text() == "50"  # type: ignore[union-attr]
    windows = [li.get_text() for li in stockx.select(".windows li")]
    assert windows == ["1/second: 1 used, 0 left", "50/hour: 2 used, 48 left"]
    assert "active" in stockx.select_one(".state").get_text()  # type: ignore[union-attr]
    # a 24-hour SVG chart per provider, with the limit line, plus the queue chart
    svg = stockx.find("svg")
    assert isinstance(svg, Tag) and len(svg.select("rect.bar")) == 24
    assert svg.select_one("line.limit") is not None
    assert "2 of 50 calls" in svg.select("rect.bar")[-1].get_text()
    assert doc.select_one("#queue svg.chart") is not None
    assert counts(doc, "stockx") == {"pending": 0, "running": 0, "completed": 2, "failed": 0}
    assert counts(doc, "ebay")["pending"] == 1
    assert [r["sku"] for r in job_rows(doc)] == ["LATER-1"]  # default view: not completed
    runs = doc.select("#runs tr")[1:]
    assert len(runs) == 1 and runs[0].find_all("td")[1].get_text() == "test"
    assert len(doc.select("#batches tr")) == 3  # header + stockx + alias
    prices = {tr.select_one(".sku").get_text(): tr.select_one(".age").get_text()  # type: ignore
              for tr in doc.select("#prices tr") if tr.select_one(".sku")}
    assert set(prices) == {"DD1391-100", "AB1234-001", "XY1"}
    # the scripted prices were fetched at epoch 1.0: their age shows in days
    assert all(age.endswith("h") and "d" in age for age in prices.values())


async def test_user_supplied_values_are_escaped(make_page: MakePage) -> None:
    """Markup in an error message is shown as text; hostile query values change nothing."""
    p = await make_page()
    await p.daemon.enqueue([spec("DD1391-100")])
    p.registry["stockx"].script.append(raising(NotFound("stockx", XSS)))
    await p.daemon.scheduler.run_once("test")
    resp = await p.client.get("/")
    raw = await resp.text()
    doc = BeautifulSoup(raw, "html.parser")
    rows = job_rows(doc)
    assert rows[0]["status"] == "failed" and rows[0]["error"] == f"stockx: {XSS}"
    assert len(doc.find_all("script")) == 1  # only the page's own refresh script
    assert doc.find("img") is None
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    # the page's script runs only with this response's nonce
    nonce = doc.find("script")["nonce"]  # type: ignore[index]
    assert f"'nonce-{nonce}'" in resp.headers["Content-Security-Policy"]
    for query in ("?provider=%3Cscript%3E&status=%22%3E%3Cb%3E&page=-1",
                  "?page=99999999999999999999", "?status=all&page=abc",
                  "?page=%C2%B2", "?page=0", "?provider=stockx\x00"):
        hostile = await p.client.get("/" + query)
        assert hostile.status == 200
        page = BeautifulSoup(await hostile.text(), "html.parser")
        assert len(page.find_all("script")) == 1 and page.find("b") is None


async def test_session_cookie_and_sign_in(make_page: MakePage) -> None:
    """Read-only until signed in; the cookie is HttpOnly and SameSite=Strict; sign-in swaps
    the session token; sign-out ends it."""
    p = await make_page(security={"cron_secret": SECRET})
    first = await p.client.get("/")
    cookie = SimpleCookie(first.headers["Set-Cookie"])["marketd_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    doc = BeautifulSoup(await first.text(), "html.parser")
    assert "sign in with the cron secret" in doc.select_one("#readonly").get_text()  # type: ignore
    assert doc.select_one("#trigger") is None and doc.select_one("#actions") is None
    resp = await p.sign_in()
    signed = SimpleCookie(resp.headers["Set-Cookie"])["marketd_session"]
    assert signed["httponly"] and signed["samesite"] == "Strict"
    assert signed.value != cookie.value and int(signed["max-age"]) > 0
    doc = await p.html()
    assert flash(doc) == "Signed in." and doc.select_one("#trigger") is not None
    assert doc.select_one("#readonly") is None
    # the pre-sign-in token grants nothing
    url = p.client.make_url("/")
    p.client.session.cookie_jar.update_cookies({"marketd_session": cookie.value}, url)
    await p.act("trigger", status=403)
    p.client.session.cookie_jar.update_cookies({"marketd_session": signed.value}, url)
    await p.post("/signout", {"csrf": await p.csrf()})
    assert (await p.html()).select_one("#trigger") is None
    await p.act("trigger", status=403)
    assert await p.daemon.store.recent_runs() == []


async def test_wrong_secret_is_refused(make_page: MakePage) -> None:
    """A wrong secret is a 403 page, and the page stays read-only."""
    p = await make_page(security={"cron_secret": SECRET})
    resp = await p.sign_in("not-the-secret", status=403)
    assert "not the cron secret" in BeautifulSoup(await resp.text(), "html.parser").get_text()
    assert (await p.html()).select_one("#trigger") is None
    await p.act("trigger", status=403)
    assert await p.daemon.store.recent_runs() == []


async def test_posts_without_a_valid_csrf_token_are_refused(make_page: MakePage) -> None:
    """Every form POST needs the session's CSRF token: missing, wrong or another session's."""
    p = await make_page(security={"cron_secret": SECRET})
    await p.sign_in()
    token = await p.csrf()
    # one character changed: never the token itself (a fixed "0" was the token 1 time in 16)
    wrong = token[:-1] + ("1" if token.endswith("0") else "0")
    for path in ("/actions/trigger", "/actions/reset-failed", "/actions/refresh", "/signin",
                 "/signout"):
        await p.post(path, {"secret": SECRET}, status=403)
        await p.post(path, {"csrf": wrong, "secret": SECRET}, status=403)
        await p.post(path, {"csrf": "ünïcode", "secret": SECRET}, status=403)  # not a 500
    # another visitor's token (their own cookie jar) does not fit this session
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as other, \
            other.get(p.client.make_url("/")) as resp:
        foreign = BeautifulSoup(await resp.text(), "html.parser")
    value = foreign.select_one('input[name="csrf"]')["value"]  # type: ignore[index]
    assert value != token
    await p.post("/actions/trigger", {"csrf": str(value)}, status=403)
    assert await p.daemon.store.recent_runs() == []


async def test_without_a_secret_actions_are_open_but_need_csrf(make_page: MakePage) -> None:
    p = await make_page()
    doc = await p.html()
    assert doc.select_one("#signin-form") is None and doc.select_one("#trigger") is not None
    await p.post("/actions/trigger", {}, status=403)
    await p.act("trigger")
    assert len(await p.daemon.store.recent_runs()) == 1


async def test_trigger_and_reset_failed_change_the_page(make_page: MakePage) -> None:
    """Trigger runs the scheduler; Reset Failed returns one provider's or all failed jobs."""
    p = await make_page(security={"cron_secret": SECRET})
    await p.daemon.enqueue([spec("DD1391-100"), spec("AB1234-001"), spec("XY1", None, "alias"),
                            spec("OK-1", "9", "ebay")])
    assert counts(await p.html(), "stockx")["pending"] == 2
    await p.sign_in()
    for name in ("stockx", "alias"):
        p.registry[name].default = raising(NotFound(name, "no such product"))
    await p.act("trigger")
    doc = await p.html()
    assert flash(doc).startswith("Scheduler run 1: 4 selected, 1 succeeded, 3 failed")
    assert counts(doc, "stockx")["failed"] == 2 and counts(doc, "alias")["failed"] == 1
    assert counts(doc, "ebay")["completed"] == 1
    assert doc.select("#runs tr")[1].find_all("td")[1].get_text() == "page"
    await p.act("reset-failed", provider="stockx")
    doc = await p.html()
    assert "2 job(s) of stockx" in flash(doc)
    assert counts(doc, "stockx") == {"pending": 2, "running": 0, "completed": 0, "failed": 0}
    assert counts(doc, "alias")["failed"] == 1
    await p.act("reset-failed", provider="all")
    doc = await p.html()
    assert counts(doc, "alias")["pending"] == 1 and "every provider" in flash(doc)
    await p.act("reset-failed", provider="nasdaq")
    assert "provider must be one of" in flash(await p.html())


async def test_refresh_reenqueues_selected_prices_at_manual_priority(make_page: MakePage) -> None:
    p = await make_page()
    await p.daemon.enqueue([spec("DD1391-100", "10"), JobSpec("alias", "XY1", "40",
                                                               size_system="EU")])
    await p.daemon.scheduler.run_once("test")
    keys = [str(box["value"]) for box in (await p.html()).select('input[name="price"]')]
    assert sorted(keys) == ["alias|XY1|EU 40", "stockx|DD1391-100|10"]
    await p.act("refresh", price=keys[0])
    resp = await p.client.post("/actions/refresh", allow_redirects=False, data=[
        ("csrf", await p.csrf()), ("price", keys[1]), ("price", "stockx|<b>|10"),
        ("price", "nasdaq|X|1")])
    assert resp.status == 303
    doc = await p.html()
    assert flash(doc) == "Refresh: 1 price(s) queued at manual priority; 2 ignored as invalid."
    rows = job_rows(doc)
    assert sorted((r["provider"], r["priority"]) for r in rows) == [("alias", "200"),
                                                                    ("stockx", "200")]
    pending = await p.daemon.store.list_jobs(status="pending", provider="alias")
    assert (pending[0].size, pending[0].size_system) == ("40", "EU")


async def test_why_a_pending_job_is_not_running(make_page: MakePage, clock: FakeClock) -> None:
    """Paused provider, backoff, spent budget, jobs ahead, first in line."""
    p = await make_page(providers={"ebay": {"limits": ["1/hour"]}})
    await p.daemon.enqueue([spec("PAUSED-1"), spec("RETRY-1", "9", "alias"),
                            spec("SPENT-1", "8", "ebay"), spec("SPENT-2", "9", "ebay")])
    p.registry["stockx"].script.append(raising(RateLimited("stockx", retry_after_s=120)))
    p.registry["alias"].script.append(raising(TransientError("alias", "HTTP 503")))
    p.registry["ebay"].script.append(raising(TransientError("ebay", "HTTP 502")))
    await p.daemon.scheduler.run_once("test")
    why = {r["sku"]: r["why"] for r in job_rows(await p.html())}
    assert why["PAUSED-1"].startswith(f"provider paused until {iso(clock.now() + 120)}")
    assert "rate_limited" in why["PAUSED-1"]
    assert why["RETRY-1"].startswith("waiting for its backoff until ")
    assert why["SPENT-1"].startswith("waiting for its backoff until ")
    assert why["SPENT-2"] == f"budget spent until {iso(clock.now() + 3600.25)}"
    clock.advance(3700)  # the backoffs and the pause end: their wakes' runs fetch them
    await p.daemon.scheduler.idle()
    await p.daemon.enqueue([spec("HIGH-1", "8", "alias", 150), spec("HIGH-2", "9", "alias", 150),
                            spec("LOW-1", "10", "alias", 100)])
    why = {r["sku"]: r["why"] for r in job_rows(await p.html())}
    assert why["HIGH-1"] == "first in line: it goes at the next scheduler run"
    assert why["HIGH-2"] == "behind 1 job(s) of higher priority or older"
    # (RETRY-1's retry came due and its wake fetched it)
    assert why["LOW-1"] == "behind 2 job(s) of higher priority or older"


async def test_paused_providers_say_why_and_until_when(make_page: MakePage,
                                                       clock: FakeClock) -> None:
    """A 429 and a refused credential show on the provider's card and on its jobs."""
    p = await make_page(scheduler={"auth_pause_seconds": 300})
    await p.daemon.enqueue([spec("A-1", "9", "alias"), spec("S-1")])
    p.registry["alias"].script.append(raising(AuthError("alias", "HTTP 401",
                                                        credential="ALIAS_API_TOKEN")))
    p.registry["stockx"].script.append(raising(RateLimited("stockx", retry_after_s=90)))
    await p.daemon.scheduler.run_once("test")
    doc = await p.html()
    alias = doc.select_one('#budgets [data-provider="alias"] .state')
    stockx = doc.select_one('#budgets [data-provider="stockx"] .state')
    assert alias is not None and stockx is not None
    assert f"Paused until {iso(clock.now() + 300)}" in alias.get_text()
    assert "credentials refused" in alias.get_text()
    assert "(check ALIAS_API_TOKEN)" in alias.get_text()
    assert f"Paused until {iso(clock.now() + 90)}: rate_limited" in stockx.get_text()
    why = {r["sku"]: r["why"] for r in job_rows(doc)}
    assert why["A-1"].endswith("; check ALIAS_API_TOKEN)")
    clock.advance(301)
    assert (await p.html()).select_one(
        '#budgets [data-provider="alias"] .state .ok') is not None


async def test_filters_and_pagination(make_page: MakePage) -> None:
    p = await make_page()
    await p.daemon.enqueue([spec(f"SKU-{i:03d}", "10", "ebay") for i in range(60)]
                           + [spec("OTHER-1")])
    doc = await p.html("/?provider=ebay&status=pending")
    rows = job_rows(doc)
    assert len(rows) == 50 and {r["provider"] for r in rows} == {"ebay"}
    nxt = doc.select_one('a[rel="next"]')
    assert nxt is not None and doc.select_one('a[rel="prev"]') is None
    doc2 = await p.html(str(nxt["href"]))
    rows2 = job_rows(doc2)
    assert len(rows2) == 10 and doc2.select_one('a[rel="next"]') is None
    assert rows[1]["why"] == "behind 1 job(s) of higher priority or older"
    assert [r["why"] for r in (rows2[0], rows2[-1])] == [
        "behind 50 job(s) of higher priority or older",
        "behind 59 job(s) of higher priority or older"]
    assert {r["sku"] for r in rows}.isdisjoint({r["sku"] for r in rows2})
    selected = doc2.select_one('#job-filter select[name="provider"] option[selected]')
    assert selected is not None and selected["value"] == "ebay"
    assert len(job_rows(await p.html("/?status=completed"))) == 0
    assert len(job_rows(await p.html("/?status=all&page=2"))) == 11


async def test_queue_samples_feed_the_chart_and_are_pruned(make_page: MakePage,
                                                           clock: FakeClock) -> None:
    p = await make_page()
    await p.daemon.enqueue([spec("DD1391-100")])
    await p.daemon.scheduler.run_once("test")
    await p.daemon.scheduler.run_once("test")  # within a minute: no second sample
    first = await p.daemon.store.queue_samples_since(0)
    assert len(first) == 3 and {r["provider"] for r in first} == {"stockx", "alias", "ebay"}
    clock.advance(600)
    await p.daemon.scheduler.run_once("test")
    doc = await p.html()
    assert doc.select("#queue svg polyline.series")
    clock.advance(49 * 3600)
    await p.daemon.scheduler.run_once("test")
    rows = await p.daemon.store.queue_samples_since(0)
    assert {r["sampled_at"] for r in rows} == {iso(clock.now())}
