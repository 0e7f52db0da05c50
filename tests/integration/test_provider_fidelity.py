"""The real provider clients against the simulator where issue 13 found them wrong: StockX on
its default limits against 1 request/second, women's sizes priced as the same shoe on StockX and
Alias, and eBay pricing several sizes of one SKU from one search. Faked only at the HTTP
boundary (the simulator on loopback); the store and StockX's budget are the real ones, on a
FakeClock that the simulator shares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from marketd.budget import ProviderBudget
from marketd.clock import FakeClock
from marketd.config import parse_config
from marketd.errors import RateLimited
from marketd.models import Price
from marketd.providers.alias import AliasClient
from marketd.providers.base import FetchResult, Provider, ProviderContext
from marketd.providers.ebay import EbayClient
from marketd.providers.stockx import StockXClient
from marketd.simulator import SIM_STATE, ProviderOptions, SimulatorOptions, create_simulator_app
from marketd.simulator import ebay as ebay_sim
from marketd.simulator.catalog import catalog
from marketd.store import Store
from tests import support
from tests.support import CountingBudget

ENV = {"STOCKX_API_KEY": "key", "STOCKX_CLIENT_ID": "cid", "STOCKX_CLIENT_SECRET": "secret",
       "STOCKX_REFRESH_TOKEN": "rt", "ALIAS_API_TOKEN": "goatapi_test",
       "EBAY_CLIENT_ID": "client-id", "EBAY_CLIENT_SECRET": "client-secret"}
OPEN = ProviderOptions()

Sim = Callable[[SimulatorOptions], Awaitable[str]]


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Sim]:
    servers: list[TestServer] = []

    async def start(options: SimulatorOptions) -> str:
        server = TestServer(create_simulator_app(options, clock))
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


def client(cls: type[Provider], url: str, session: aiohttp.ClientSession, store: Store,
           clock: FakeClock, budget: Any = None, **options: Any) -> Any:
    name = cls.name
    extra = {"auth_url": url} if name == "stockx" else {}
    cfg = parse_config({"providers": {name: {"base_url": url, **extra, **options}}}, env=ENV)
    pc = cfg.providers[name]
    return cls(ProviderContext(pc, session, budget or CountingBudget(provider=name), store,
                               clock))


def priced(result: FetchResult, job_id: str) -> Price:
    outcome = result.outcomes[job_id]
    assert isinstance(outcome, Price), outcome
    return outcome


# ---- StockX: the default limits against 1 request/second -----------------------------------


async def test_stockx_default_limits_meet_no_429_at_one_per_second(
        sim: Sim, session: aiohttp.ClientSession, store: Store, clock: FakeClock) -> None:
    """Three first look-ups (search, variants, market data each) on the default config against
    StockX's 1/second: no 429, and no second ever holds two calls. The old default
    (100/hour alone) sent them back to back and met a 429 on the second call."""
    url = await sim(SimulatorOptions())  # StockX: 1/second and 25,000/day
    pc = parse_config({}, env={}).providers["stockx"]
    assert [lim.text for lim in pc.limits][:2] == ["1/second", "25000/day"]
    stockx = client(StockXClient, url, session, store, clock,
                    budget=ProviderBudget(pc, store, clock))
    for sku, size in (("DD1391-100", "9"), ("B75806", "9"), ("CW1590-100", "5")):
        job = support.make_job("stockx", size, sku=sku)
        priced(await stockx.fetch_group(sku, [job]), job.id)
    stats = (await (await session.get(f"{url}/_sim/stats")).json())["providers"]["stockx"]
    assert stats["rate_limited"] == 0 and stats["requests"] == 9
    assert stats["limits"][0]["max_seen"] == 1

    old = parse_config({"providers": {"stockx": {"limits": ["100/hour"]}}}, env={})
    stockx = client(StockXClient, url, session, store, clock,
                    budget=ProviderBudget(old.providers["stockx"], store, clock))
    with pytest.raises(RateLimited):
        await stockx.fetch_group("DD1390-100", [support.make_job("stockx", "9",
                                                                 sku="DD1390-100")])


# ---- women's sizes: the same shoe on StockX and Alias ---------------------------------------


def _variant_value(sku: str, stockx_value: str) -> float:
    """The simulator's own-scale number (Alias ``size``) of a StockX variantValue."""
    product = catalog().by_sku[sku]
    return next(v.size.number for v in product.variants if v.size.value == stockx_value)


@pytest.mark.parametrize(("sku", "size", "system", "variant"), [
    ("DD1391-100", "8.5W", "US", "7"),      # women's size of a men's shoe: US M 7
    ("DD1391-100", "11W", "US", "9.5"),
    ("DD1503-101", "8.5W", "US", "8.5W"),   # women's size of a women's shoe: as is
    ("DD1503-101", "7", "US", "8.5W"),      # men's size of a women's shoe: US W 8.5
    ("DD1503-101", "5.5", "UK", "8W"),      # women's UK = US W - 2.5
    ("CW1590-100", "5.5", "US", "5.5Y"),    # men's size of a grade-school shoe
])
@pytest.mark.parametrize("stockx_first", [True, False])
async def test_womens_sizes_are_the_same_shoe_on_stockx_and_alias(
        sim: Sim, session: aiohttp.ClientSession, store: Store, clock: FakeClock, sku: str,
        size: str, system: str, variant: str, stockx_first: bool) -> None:
    """One job names one shoe: StockX prices the variant, and Alias (with StockX's cached
    chart, or by the brand chart alone) asks for that variant's own-scale size."""
    url = await sim(SimulatorOptions(stockx=OPEN, alias=OPEN, ebay=OPEN, seed=3))
    product = catalog().by_sku[sku]
    want = next(v for v in product.variants if v.size.value == variant)
    if stockx_first:
        stockx = client(StockXClient, url, session, store, clock)
        job = support.make_job("stockx", size, system, sku)
        got = priced(await stockx.fetch_group(sku, [job]), job.id)
        market = await (await session.get(
            f"{url}/v2/catalog/products/{product.id}/variants/{want.id}/market-data",
            params={"currencyCode": "GBP"},
            headers={"x-api-key": "key", "Authorization": f"Bearer {stockx._access}"})).json()
        assert got.lowest_ask == (None if market["lowestAskAmount"] is None
                                  else int(market["lowestAskAmount"]) * 100)
        assert got.highest_bid == (None if market["highestBidAmount"] is None
                                   else int(market["highestBidAmount"]) * 100)
    alias = client(AliasClient, url, session, store, clock, region="GLOBAL")
    job = support.make_job("alias", size, system, sku)
    got = priced(await alias.fetch_group(sku, [job]), job.id)
    one = await (await session.get(f"{url}/api/v1/pricing_insights/availability", params={
        "catalog_id": product.catalog_id, "size": f"{_variant_value(sku, variant):g}",
        "product_condition": "PRODUCT_CONDITION_NEW",
        "packaging_condition": "PACKAGING_CONDITION_GOOD_CONDITION"},
        headers={"Authorization": "Bearer goatapi_test"})).json()
    listed = int(one["availability"]["lowest_listing_price_cents"]) or None
    assert got.lowest_ask == listed and got.currency == "USD"


async def test_alias_refuses_a_womens_size_as_a_number(sim: Sim,
                                                       session: aiohttp.ClientSession) -> None:
    """Alias's ``size`` is a number in the item's own scale: "8.5W" is a 400, not size 8.5."""
    url = await sim(SimulatorOptions(stockx=OPEN, alias=OPEN, ebay=OPEN))
    product = catalog().by_sku["DD1503-101"]
    resp = await session.get(f"{url}/api/v1/pricing_insights/availability", params={
        "catalog_id": product.catalog_id, "size": "8.5W", "product_condition": "1",
        "packaging_condition": "1"}, headers={"Authorization": "Bearer goatapi_test"})
    assert resp.status == 400


# ---- eBay: one search prices every size -----------------------------------------------------


async def test_ebay_prices_every_size_from_one_search(
        sim: Sim, session: aiohttp.ClientSession, store: Store, clock: FakeClock) -> None:
    """Eight UK sizes of one SKU cost at most two searches, and each size is priced from
    listings of that size only (never laces, an empty box, or another size)."""
    url = await sim(SimulatorOptions(stockx=OPEN, alias=OPEN, ebay=OPEN, seed=5))
    sku = "DD1391-100"
    sizes = ["5.5", "6.5", "7", "8", "9", "9.5", "10", "11"]
    jobs = [support.make_job("ebay", s, sku=sku) for s in sizes]
    ebay = client(EbayClient, url, session, store, clock)
    result = await ebay.fetch_group(sku, jobs)
    stats = (await (await session.get(f"{url}/_sim/stats")).json())["providers"]["ebay"]
    assert 1 <= stats["requests"] <= 2
    truth = _ebay_truth(url, clock, sku)
    for size, job in zip(sizes, jobs, strict=True):
        assert priced(result, job.id).lowest_ask == truth.get(size), size
    assert any(truth.get(s) for s in sizes)


def _ebay_truth(url: str, clock: FakeClock, sku: str) -> dict[str, int]:
    """The cheapest new Buy-It-Now shoe (price + shipping, pence) per UK size of ``sku`` as the
    simulator lists them: its own ground truth, not the client's title matching."""
    app = create_simulator_app(SimulatorOptions(stockx=OPEN, alias=OPEN, ebay=OPEN, seed=5),
                               clock)
    state = app[SIM_STATE]
    rows = ebay_sim._select(state, sku, "", "", {"conditionIds": "1000",
                                                 "buyingOptions": "FIXED_PRICE"}, "GBP")
    best: dict[str, int] = {}
    for listing, price, shipping in rows:
        if listing.accessory or listing.product.sku != sku:
            continue
        size = f"{listing.variant.size.uk:g}"
        total = round((price + shipping) * 100)
        best[size] = min(best.get(size, total), total)
    return best
