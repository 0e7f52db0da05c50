"""Price-change webhooks: the outbox on every backend (rows written with the changed prices,
leased claims, settling, min_change_percent, pruning), and the sender against a real receiver
on loopback (signed bodies that verify, retries with backoff, giving up, deliveries queued
before a restart), the page's failing deliveries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from bs4 import BeautifulSoup

from marketd.clock import FakeClock, iso
from marketd.config_data import RetentionConfig, WebhooksConfig
from marketd.models import Price
from marketd.retention import prune
from marketd.store import Outcomes, Store
from marketd.webhooks import WebhookSender, signature, verify
from tests.conftest import STORE_BACKENDS, OpenStore
from tests.integration.test_web_api import MakeApi, fresh_answer, make_api  # noqa: F401

SECRET = "hook-secret"


@pytest.fixture(params=sorted(STORE_BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def p(clock: FakeClock, ask: int | None, size: str | None = "10", bid: int | None = None,
      currency: str = "GBP") -> Price:
    return Price("stockx", "A-1", size, currency, ask, bid, None, clock.now())


async def test_outbox_rows_ride_with_changed_prices(store: Store, clock: FakeClock) -> None:
    """Each change (a first price too) queues one price_changed body with old and new; an
    unchanged price queues none; with webhooks off nothing is queued."""
    await store.record(Outcomes(prices=[p(clock, 100)]))  # off: nothing queued
    assert (await store.webhook_summary())["pending"] == 0
    store.price_webhooks = 0.0
    clock.advance(60)
    await store.record(Outcomes(prices=[p(clock, 100)]))  # unchanged
    await store.record(Outcomes(prices=[p(clock, 120), p(clock, 50, size=None)]))
    rows = await store.claim_deliveries(10, 60)
    bodies = [json.loads(r["body"]) for r in rows]
    assert [(b["size"], b["old"] and b["old"]["lowest_ask"], b["new"]["lowest_ask"])
            for b in sorted(bodies, key=lambda b: str(b["size"]))] == [
        ("10", "1.00", "1.20"), (None, None, "0.50")]
    changed = next(b for b in bodies if b["size"] == "10")
    # old: the stored price as last confirmed (by the unchanged fetch a moment ago)
    assert changed == {"event": "price_changed", "provider": "stockx", "sku": "A-1",
                       "size": "10", "currency": "GBP",
                       "old": {"currency": "GBP", "lowest_ask": "1.00", "highest_bid": None,
                               "last_sale": None, "fetched_at": iso(clock.now())},
                       "new": {"currency": "GBP", "lowest_ask": "1.20", "highest_bid": None,
                               "last_sale": None, "fetched_at": iso(clock.now())},
                       "fetched_at": iso(clock.now())}
    assert all(r["event"] == "price_changed" and r["attempts"] == 0 for r in rows)


async def test_claims_lease_and_settle(store: Store, clock: FakeClock) -> None:
    store.price_webhooks = 0.0
    await store.record(Outcomes(prices=[p(clock, 1), p(clock, 2, size="9")]))
    first = await store.claim_deliveries(1, 60)
    assert len(first) == 1
    second = await store.claim_deliveries(10, 60)
    assert len(second) == 1 and second[0]["id"] != first[0]["id"]
    assert await store.claim_deliveries(10, 60) == []  # both leased
    await store.finish_delivery(first[0]["id"], ok=True)
    await store.finish_delivery(second[0]["id"], ok=False, error="HTTP 500",
                                next_attempt_at=clock.now() + 30)
    summary = await store.webhook_summary()
    assert (summary["delivered"], summary["pending"], summary["failing"]) == (1, 1, 1)
    assert summary["recent_failures"][0]["last_error"] == "HTTP 500"
    clock.advance(29)
    assert await store.claim_deliveries(10, 60) == []
    clock.advance(2)
    [again] = await store.claim_deliveries(10, 60)
    assert again["attempts"] == 1
    await store.finish_delivery(again["id"], ok=False, error="HTTP 502", give_up=True)
    assert (await store.webhook_summary())["dead"] == 1
    clock.advance(10 * 86400)
    report = await prune(store, RetentionConfig(webhooks_days=7), clock.now())
    assert report["webhooks"]["rows"] == 2
    assert (await store.webhook_summary())["delivered"] == 0


async def test_min_change_percent(store: Store, clock: FakeClock) -> None:
    """Past min_change_percent of the price stored before only: small moves are quiet
    (history still records them), a new amount or currency always counts."""
    store.price_webhooks = 5.0
    await store.record(Outcomes(prices=[p(clock, 10000)]))
    for ask, bid, cur in ((10400, None, "GBP"), (11000, None, "GBP"), (11000, 1, "GBP"),
                          (11000, 1, "USD")):
        clock.advance(1)
        await store.record(Outcomes(prices=[p(clock, ask, bid=bid, currency=cur)]))
    rows = await store.claim_deliveries(10, 60)
    assert [json.loads(r["body"])["new"]["lowest_ask"] for r in rows] == [
        "100.00", "110.00", "110.00", "110.00"]
    assert len(await store.price_history("stockx", "A-1", "10")) == 5


# ---- the sender ---------------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.seen: list[tuple[bytes, dict[str, str]]] = []
        self.fail = 0  # answer 500 this many times first

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((body, dict(request.headers)))
        if self.fail > 0:
            self.fail -= 1
            return web.Response(status=500)
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield r, str(server.make_url("/hook"))
    await server.close()


def cfg(url: str, **kw: Any) -> WebhooksConfig:
    return WebhooksConfig(price_changed_url=url, secret=SECRET, **kw)


async def test_signed_deliveries_verify(store: Store, clock: FakeClock,
                                        receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    store.price_webhooks = 0.0
    await store.record(Outcomes(prices=[p(clock, 100)]))
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(store, cfg(url), clock, session)
        assert await sender.deliver_due() == 1
    [(body, headers)] = rec.seen
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Marketd-Event"] == "price_changed"
    assert verify(SECRET, body, headers["X-Marketd-Signature"])
    assert not verify("other", body, headers["X-Marketd-Signature"])
    assert headers["X-Marketd-Signature"] == signature(SECRET, body)
    assert json.loads(body)["new"]["lowest_ask"] == "1.00"
    assert (await store.webhook_summary())["delivered"] == 1


async def test_failures_retry_with_backoff_then_give_up(
        store: Store, clock: FakeClock, receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rec.fail = 2
    store.price_webhooks = 0.0
    await store.record(Outcomes(prices=[p(clock, 100)]))
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(store, cfg(url, retry_base_seconds=10), clock, session)
        assert await sender.deliver_due() == 1  # 500
        assert await sender.deliver_due() == 0  # backing off
        clock.advance(10)
        assert await sender.deliver_due() == 1  # 500 again: 10-20 s more
        clock.advance(9)
        assert await sender.deliver_due() == 0
        clock.advance(12)
        assert await sender.deliver_due() == 1  # 204
    assert [len(b) > 0 for b, _ in rec.seen] == [True] * 3
    assert len({b for b, _ in rec.seen}) == 1  # the same body each time
    summary = await store.webhook_summary()
    assert summary["delivered"] == 1 and summary["failing"] == 0
    # a receiver that never answers 2xx: given up after give_up_hours
    rec.fail = 1000
    clock.advance(1)
    await store.record(Outcomes(prices=[p(clock, 200)]))
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(store, cfg(url, give_up_hours=1), clock, session)
        for _ in range(20):
            await sender.deliver_due()
            clock.advance(600)
    summary = await store.webhook_summary()
    assert summary["dead"] == 1 and summary["recent_failures"][0]["status"] == "dead"


async def test_deliveries_queued_before_a_restart_are_sent(
        open_store: OpenStore, clock: FakeClock, receiver: tuple[Receiver, str]) -> None:
    """Rows queued (and one leased by a sender that died) survive a restart and are sent."""
    rec, url = receiver
    first = await open_store()
    first.price_webhooks = 0.0
    await first.record(Outcomes(prices=[p(clock, 1), p(clock, 2, size="9")]))
    await first.claim_deliveries(1, 120)  # in flight when the daemon died
    await first.close()
    second = await open_store()
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(second, cfg(url), clock, session)
        assert await sender.deliver_due() == 1
        clock.advance(121)  # the dead sender's lease is over
        assert await sender.deliver_due() == 1
    assert len(rec.seen) == 2
    assert all(verify(SECRET, b, h["X-Marketd-Signature"]) for b, h in rec.seen)


async def test_daemon_queues_changes_and_the_page_shows_failures(
        make_api: MakeApi, receiver: tuple[Receiver, str]) -> None:  # noqa: F811
    """A daemon with price_changed_url: a run's changed prices are queued by the batch and
    sent by the sender; a failing receiver shows on the page."""
    rec, url = receiver
    rec.fail = 1
    api = await make_api(webhooks={"price_changed_url": url, "secret": SECRET})
    await api.enqueue({"provider": "stockx", "sku": "A-1", "size": "10", "priority": 200})
    for name in ("stockx",):
        api.registry[name].default = fresh_answer(api.clock)
    await api.post("/trigger", status=200)
    sender = api.daemon.services["webhooks"]
    assert isinstance(sender, WebhookSender)
    assert await sender.deliver_due() == 1  # 500
    doc = BeautifulSoup(await (await api.client.get("/")).text(), "html.parser")
    failing = doc.select("#webhooks tr.failing")
    assert len(failing) == 1 and "HTTP 500" in failing[0].get_text()
    status = await api.get("/status")
    assert status["webhooks"]["failing"] == 1
    api.clock.advance(3600)
    assert await sender.deliver_due() == 1
    assert len(rec.seen) == 2 and json.loads(rec.seen[1][0])["sku"] == "A-1"
    assert (await api.get("/status"))["webhooks"]["delivered"] == 1
