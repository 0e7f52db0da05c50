"""marketd.client, the public API, against a running daemon (real aiohttp server on loopback,
real SQLite, scripted providers): enqueue (one, many, items, refresh), prices (every page,
typed), history, trigger and status, errors; async and sync forms."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from marketd.client import (
    AsyncClient,
    Client,
    EnqueuedJob,
    HistoryPoint,
    JobRequest,
    MarketdClientError,
    PriceRecord,
)
from marketd.models import Price
from marketd.store import Outcomes
from tests.integration.test_web_api import Api, MakeApi, fresh_answer, make_api  # noqa: F401

TOKEN = "client-test-api-token-0123456789abcdef"


def url_of(api: Api) -> str:
    return str(api.client.make_url("")).rstrip("/")


async def test_async_client_end_to_end(make_api: MakeApi) -> None:  # noqa: F811
    api = await make_api(security={"api_token": TOKEN})
    for name in ("stockx", "alias", "ebay"):
        api.registry[name].default = fresh_answer(api.clock, 9600)
    async with AsyncClient(url_of(api), api_token=TOKEN) as md:
        one = await md.enqueue("stockx", "dd1391-100", "10", priority="manual",
                               user_id="alice")
        assert isinstance(one, EnqueuedJob) and one.dedupe_key == "stockx|DD1391-100|10"
        assert one.priority == 200 and one.status == "pending" and not one.deduplicated
        many = await md.enqueue_many([JobRequest("alias", "DD1391-100", "44", "EU"),
                                      JobRequest("stockx", "DD1391-100", "10")])
        assert [j.dedupe_key for j in many] == ["alias|DD1391-100|EU 44",
                                                "stockx|DD1391-100|10"]
        assert many[1].deduplicated and many[1].id == one.id
        items = await md.enqueue_items([{"sku": "B75806", "size_uk": "9.5"}], provider="ebay")
        assert items[0].priority == 150
        refreshed = await md.refresh([{"sku": "B75806", "size": "9.5"}], provider="alias")
        assert refreshed[0].priority == 200
        summary = await md.trigger()
        assert summary["succeeded"] >= 4
        prices = await md.prices(skus=["DD1391-100", "B75806"])
        assert {p.provider for p in prices} == {"stockx", "alias", "ebay"}
        p = next(x for x in prices if x.provider == "stockx")
        assert isinstance(p, PriceRecord) and p.lowest_ask == Decimal("96.00")
        assert p.currency == "GBP" and p.fetched_at.tzinfo is not None
        mine = await md.prices(user_id="alice")
        assert [(x.provider, x.sku, x.size) for x in mine] == [("stockx", "DD1391-100", "10")]
        points = await md.history("stockx", "DD1391-100", "10")
        assert len(points) == 1 and isinstance(points[0], HistoryPoint)
        assert (await md.status())["jobs"]["total"]["completed"] >= 4
        with pytest.raises(MarketdClientError) as bad:
            await md.enqueue("nike", "X", "10")
        assert bad.value.status == 400 and bad.value.field == "provider"
    async with AsyncClient(url_of(api)) as anonymous:
        with pytest.raises(MarketdClientError) as refused:
            await anonymous.enqueue("stockx", "X", "10")
        assert refused.value.status == 401


async def test_prices_follows_every_page(make_api: MakeApi) -> None:  # noqa: F811
    api = await make_api()
    now = api.clock.now()
    await api.daemon.store.record(Outcomes(prices=[
        Price("stockx", f"S-{i:02d}", "10", "GBP", 100 + i, None, None, now,
              extra=(("flex_lowest_ask", 104 + i),)) for i in range(7)]))
    async with AsyncClient(url_of(api)) as md:
        paged = [p async for p in md.iter_prices(page_size=3)]
        assert [p.sku for p in paged] == [f"S-{i:02d}" for i in range(7)]
        assert paged[0].extra == {"flex_lowest_ask": Decimal("1.04")}
        since = datetime.fromtimestamp(now + 1, UTC)
        assert await md.history("stockx", "S-01", "10", since=since) == []


async def test_sync_client(make_api: MakeApi) -> None:  # noqa: F811
    """The blocking client (run in a thread here, since the daemon serves on this loop)."""
    api = await make_api()
    await api.daemon.store.record(Outcomes(prices=[
        Price("alias", "A-1", "10", "USD", 12345, None, 999, api.clock.now())]))
    url = url_of(api)

    def use() -> tuple[list[PriceRecord], list[HistoryPoint], EnqueuedJob, list[PriceRecord]]:
        with Client(url) as md:
            return (md.prices(provider="alias"), md.history("alias", "A-1", "10"),
                    md.enqueue("alias", "A-1", "10", priority="manual"),
                    list(md.iter_prices(provider="alias")))

    prices, points, job, iterated = await asyncio.to_thread(use)
    assert prices[0].lowest_ask == Decimal("123.45") and prices[0].last_sale == Decimal("9.99")
    assert prices == iterated
    assert points[0].currency == "USD" and job.status == "pending"


async def test_unreachable_daemon() -> None:
    async with AsyncClient("http://127.0.0.1:1") as md:
        with pytest.raises(MarketdClientError) as err:
            await md.status()
    assert err.value.status == 0 and "cannot reach" in err.value.error
