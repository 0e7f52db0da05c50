"""The StockX client against recorded-shape payloads served at the HTTP boundary (aioresponses).

The budget is a tiny counting object, the store a real SQLite file, time a FakeClock.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from structlog.testing import capture_logs
from yarl import URL

from marketd.clock import FakeClock
from marketd.config import ProviderConfig, parse_config
from marketd.errors import (
    AuthError,
    BudgetExhausted,
    NotFound,
    PermanentError,
    RateLimited,
    SizeError,
    TransientError,
)
from marketd.models import Job, Price
from marketd.providers.base import FetchResult, ProviderContext
from marketd.providers.stockx import StockXClient
from marketd.store import SQLiteStore, Store
from tests import support
from tests.support import CountingBudget

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "stockx"
BASE = "https://api.stockx.com"
TOKEN_URL = "https://accounts.stockx.com/oauth/token"
SKU = "DD1391-100"
PANDA = "5e6a1e57-1c7d-435a-82bd-5666a13560fe"
WOMEN = "9b0c3a57-2f11-4c3e-9a55-6f0f1b1c2d01"
GS = "a8f2d6c1-5e47-4b3a-8c19-0d2e3f4a5b02"
SAMBA = "d7e8f9a0-1b2c-4d3e-8f4a-5b6c7d8e9f04"
BAG = "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a05"
SECRETS = {"api_key": "test-api-key", "client_id": "test-client-id",
           "client_secret": "test-client-secret", "refresh_token": "test-refresh-token"}


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def search_url(sku: str = SKU) -> str:
    return str(URL(f"{BASE}/v2/catalog/search").with_query(
        query=sku, pageNumber="1", pageSize="50"))


def variants_url(pid: str = PANDA) -> str:
    return f"{BASE}/v2/catalog/products/{pid}/variants"


def market_url(pid: str = PANDA, currency: str = "GBP") -> str:
    return f"{BASE}/v2/catalog/products/{pid}/market-data?currencyCode={currency}"


def variant_id(fixture: str, value: str) -> str:
    return next(v["variantId"] for v in load(fixture) if v["variantValue"] == value)


def make_job(size: str | None, system: str = "UK", n: int = 1, sku: str = SKU) -> Job:
    return support.make_job("stockx", size, system, sku, job_id=f"job-{n}")


def make_config(**options: str) -> ProviderConfig:
    return parse_config({"providers": {"stockx": {**SECRETS, **options}}}, env={}) \
        .providers["stockx"]


@dataclass
class Rig:
    api: aioresponses
    budget: CountingBudget
    store: Store
    clock: FakeClock
    session: aiohttp.ClientSession

    def client(self, **options: str) -> StockXClient:
        return StockXClient(ProviderContext(config=make_config(**options), session=self.session,
                                            budget=self.budget, store=self.store,
                                            clock=self.clock))

    def token(self, fixture: str = "token.json", status: int = 200) -> None:
        self.api.post(TOKEN_URL, status=status, payload=load(fixture))

    def catalog(self, sku: str = SKU, pid: str = PANDA, stem: str = "dd1391_100") -> None:
        self.api.get(search_url(sku), payload=load(f"search_{stem}.json"))
        self.api.get(variants_url(pid), payload=load(f"variants_{stem}.json"))

    def market(self, pid: str = PANDA, stem: str = "dd1391_100") -> None:
        self.api.get(market_url(pid), payload=load(f"market_data_{stem}.json"))

    def calls(self, method: str, url: str) -> list[Any]:
        u = URL(url)
        return self.api.requests.get((method, u.with_query(sorted(u.query.items()))), [])

    def urls(self) -> list[URL]:
        return [u for (_, u), calls in self.api.requests.items() for _ in calls]

    def api_calls(self) -> int:
        return sum(1 for u in self.urls() if u.host == "api.stockx.com")


@pytest.fixture
async def rig(tmp_path: Path, clock: FakeClock,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    store = await SQLiteStore.open(str(tmp_path / "t.db"), clock)
    try:
        async with aiohttp.ClientSession() as session:
            with aioresponses() as api:
                yield Rig(api, CountingBudget(), store, clock, session)
    finally:
        await store.close()


async def fetch(rig: Rig, *jobs: Job, sku: str = SKU, **options: str) -> FetchResult:
    return await rig.client(**options).fetch_group(sku, list(jobs))


def price(result: FetchResult, job_id: str = "job-1") -> Price:
    outcome = result.outcomes[job_id]
    assert isinstance(outcome, Price), outcome
    return outcome


# ---- endpoints -----------------------------------------------------------------------------------


async def test_search_matches_exact_style_id_among_fuzzy_results(rig: Rig) -> None:
    """Of 13 fuzzy search results (DD1390-100, DD1391-101, ...) the exact styleId is chosen."""
    rig.token()
    rig.catalog()
    rig.market()
    result = await fetch(rig, make_job("9"))
    assert price(result).lowest_ask == 9600
    cached = await rig.store.get_catalog("stockx", SKU)
    assert cached is not None
    assert cached["product_id"] == PANDA
    assert cached["title"] == "Nike Dunk Low Retro White Black Panda"
    assert cached["brand"] == "Nike"
    assert len(rig.calls("GET", variants_url(PANDA))) == 1


async def test_style_id_match_ignores_case_and_space_versus_hyphen(rig: Rig) -> None:
    """A SKU written "DD1391 100" matches styleId "DD1391-100"."""
    rig.token()
    rig.catalog(sku="DD1391 100")
    rig.market()
    result = await fetch(rig, make_job("9", sku="DD1391 100"), sku="DD1391 100")
    assert price(result).sku == "DD1391 100"


async def test_search_always_sends_page_size(rig: Rig) -> None:
    """The search asks for page 1 of 50 results (the API's default page size is 1)."""
    rig.token()
    rig.catalog()
    rig.market()
    await fetch(rig, make_job("9"))
    searches = [u for u in rig.urls() if u.path == "/v2/catalog/search"]
    assert len(searches) == 1
    assert searches[0].query["pageSize"] == "50"
    assert searches[0].query["pageNumber"] == "1"
    assert searches[0].query["query"] == SKU


async def test_country_is_never_sent(rig: Rig) -> None:
    """No request carries the deprecated `country` parameter; market data asks for GBP."""
    rig.token()
    rig.catalog()
    rig.market()
    await fetch(rig, make_job("9"), make_job("40", "EU", n=2))
    assert rig.urls()
    assert all("country" not in u.query for u in rig.urls())
    market = [u for u in rig.urls() if u.path.endswith("/market-data")]
    assert [dict(u.query) for u in market] == [{"currencyCode": "GBP"}]


async def test_three_sizes_coalesce_into_one_market_data_call(rig: Rig) -> None:
    """Three sizes of one SKU cost one product-level market-data call (3 calls in all)."""
    rig.token()
    rig.catalog()
    rig.market()
    result = await fetch(rig, make_job("9", n=1), make_job("9.5", n=2), make_job("40", "EU", n=3))
    assert [price(result, f"job-{n}").size for n in (1, 2, 3)] == ["9", "9.5", "EU 40"]
    assert len(rig.calls("GET", market_url())) == 1
    assert rig.budget.spent == 3 == rig.api_calls()


async def test_cached_catalog_makes_the_next_refresh_cost_one_call(rig: Rig) -> None:
    """Once the catalog is cached, refreshing the SKU spends exactly one budget token."""
    rig.token()
    rig.catalog()
    rig.market()
    rig.market()
    client = rig.client()
    await client.fetch_group(SKU, [make_job("9")])
    assert rig.budget.spent == 3
    result = await client.fetch_group(SKU, [make_job("9"), make_job("10", n=2)])
    assert rig.budget.spent == 4
    assert price(result, "job-2").lowest_ask == 10100
    assert len(rig.calls("GET", search_url())) == 1
    assert len(rig.calls("GET", market_url())) == 2


async def test_catalog_cache_survives_a_new_client(rig: Rig) -> None:
    """The catalog lives in the store: a restarted client refreshes with one call too."""
    rig.token()
    rig.catalog()
    rig.market()
    rig.market()
    await fetch(rig, make_job("9"))
    await fetch(rig, make_job("9"))
    assert rig.budget.spent == 4


async def test_auth_headers_and_refresh_form(rig: Rig) -> None:
    """API calls carry x-api-key and the bearer token; the refresh POST is the documented form."""
    rig.token()
    rig.catalog()
    rig.market()
    await fetch(rig, make_job("9"))
    (mint,) = rig.calls("POST", TOKEN_URL)
    assert mint.kwargs["data"] == {
        "grant_type": "refresh_token", "client_id": "test-client-id",
        "client_secret": "test-client-secret", "audience": "gateway.stockx.com",
        "refresh_token": "test-refresh-token"}
    (call,) = rig.calls("GET", market_url())
    assert call.kwargs["headers"]["x-api-key"] == "test-api-key"
    assert call.kwargs["headers"]["Authorization"] == "Bearer access-token-1"


# ---- sizes ---------------------------------------------------------------------------------------


async def test_uk6_is_ambiguous_and_names_eu39_and_eu40(rig: Rig) -> None:
    """Nike UK 6 names two variants: the job fails naming EU 39 and EU 40; others still price."""
    rig.token()
    rig.catalog()
    rig.market()
    result = await fetch(rig, make_job("6"), make_job("9", n=2))
    error = result.outcomes["job-1"]
    assert isinstance(error, SizeError)
    assert error.message == "UK 6 is ambiguous on stockx: EU 39 or EU 40; enqueue the EU size"
    assert price(result, "job-2").size == "9"


async def test_eu40_resolves_the_uk6_double(rig: Rig) -> None:
    """EU 40 picks US M 7 (one of the two UK 6 variants) and is stored under "EU 40"."""
    rig.token()
    rig.catalog()
    rig.market()
    result = await fetch(rig, make_job("40", "EU"))
    got = price(result)
    assert (got.size, got.lowest_ask, got.highest_bid) == ("EU 40", 10450, 7200)


async def test_us_men_size_matches_us_m_conversion(rig: Rig) -> None:
    """US 10 on a men's product is the US M 10 variant (UK 9)."""
    rig.token()
    rig.catalog()
    rig.market()
    result = await fetch(rig, make_job("10", "US"))
    assert (price(result).size, price(result).lowest_ask) == ("US 10", 9600)


async def test_us_w_size_on_a_womens_product(rig: Rig) -> None:
    """US 8.5W matches the women's variant "8.5W"; UK 6 on the same product is that variant too."""
    rig.token()
    rig.catalog(sku="DD1503-101", pid=WOMEN, stem="dd1503_101")
    rig.market(pid=WOMEN, stem="dd1503_101")
    result = await fetch(rig, make_job("8.5W", "US", sku="DD1503-101"),
                         make_job("6", "UK", n=2, sku="DD1503-101"), sku="DD1503-101")
    rows = {r["variantId"]: r for r in load("market_data_dd1503_101.json")}
    expected = rows[variant_id("variants_dd1503_101.json", "8.5W")]["lowestAskAmount"]
    assert price(result).lowest_ask == int(expected) * 100
    assert price(result, "job-2").lowest_ask == int(expected) * 100
    assert price(result).size == "US 8.5W"


async def test_womens_and_youth_sizes_on_a_mens_product(rig: Rig) -> None:
    """US 8.5W on a men's Dunk is the US M 7 variant (its US W label); US 5.5Y, which a men's
    product has no label for, is US M 5.5 by Nike's grade-school chart: the same shoes Alias
    is asked for."""
    rig.token()
    rig.catalog()
    rig.market()
    result = await fetch(rig, make_job("8.5W", "US"), make_job("5.5Y", "US", n=2))
    rows = {r["variantId"]: r for r in load("market_data_dd1391_100.json")}
    for job_id, value in (("job-1", "7"), ("job-2", "5.5")):
        ask = rows[variant_id("variants_dd1391_100.json", value)]["lowestAskAmount"]
        want = None if ask is None else round(float(ask) * 100)
        assert price(result, job_id).lowest_ask == want


async def test_catalog_cache_keeps_the_variants_gtins(rig: Rig) -> None:
    """The UPCs StockX gives per variant are cached (eBay searches a lone size by its GTIN)."""
    rig.token()
    rig.catalog()
    rig.market()
    await fetch(rig, make_job("9"))
    entry = await rig.store.get_catalog("stockx", SKU)
    assert entry is not None
    raw = {v["variantId"]: v["gtins"] for v in load("variants_dd1391_100.json")}
    for variant in entry["data"]["variants"]:
        assert variant["gtins"] == [[g["type"], g["identifier"]] for g in raw[variant["id"]]]


async def test_us_youth_size_on_a_grade_school_product(rig: Rig) -> None:
    """US 5.5Y matches the grade-school variant "5.5Y" (type "us")."""
    rig.token()
    rig.catalog(sku="CW1590-100", pid=GS, stem="cw1590_100")
    rig.market(pid=GS, stem="cw1590_100")
    result = await fetch(rig, make_job("5.5Y", "US", sku="CW1590-100"), sku="CW1590-100")
    rows = {r["variantId"]: r for r in load("market_data_cw1590_100.json")}
    expected = rows[variant_id("variants_cw1590_100.json", "5.5Y")]["lowestAskAmount"]
    assert price(result).lowest_ask == int(expected) * 100


async def test_adidas_eu_size_in_thirds(rig: Rig) -> None:
    """EU 42 2/3 on adidas matches "EU 42 2/3" (US M 9), never a formula."""
    rig.token()
    rig.catalog(sku="B75806", pid=SAMBA, stem="b75806")
    rig.market(pid=SAMBA, stem="b75806")
    result = await fetch(rig, make_job("42 2/3", "EU", sku="B75806"),
                         make_job("8.5", n=2, sku="B75806"), sku="B75806")
    assert price(result).lowest_ask == price(result, "job-2").lowest_ask == 8900


async def test_unknown_size_lists_available_sizes(rig: Rig) -> None:
    """A size the product lacks fails with SizeError listing some of its UK sizes, and no
    market-data call is paid for when no job matched."""
    rig.token()
    rig.catalog()
    result = await fetch(rig, make_job("20"))
    error = result.outcomes["job-1"]
    assert isinstance(error, SizeError)
    assert error.message == ("UK 20 not found on stockx for DD1391-100 (UK sizes: 3, 3.5, 4, "
                             "4.5, 5, 5.5, 6, 6.5, 7, 7.5, 8, 8.5, …)")
    assert rig.budget.spent == 2


async def test_size_less_product_takes_its_single_variant(rig: Rig) -> None:
    """A job without a size prices the product's only variant."""
    rig.token()
    rig.catalog(sku="FW24B1", pid=BAG, stem="fw24b1")
    rig.market(pid=BAG, stem="fw24b1")
    result = await fetch(rig, make_job(None, sku="FW24B1"), sku="FW24B1")
    assert (price(result).size, price(result).lowest_ask, price(result).highest_bid) == \
        (None, 7400, 4100)


async def test_size_less_job_on_a_sized_product_fails(rig: Rig) -> None:
    """A job without a size on a product with many sizes fails with SizeError."""
    rig.token()
    rig.catalog()
    result = await fetch(rig, make_job(None))
    assert isinstance(result.outcomes["job-1"], SizeError)


# ---- prices --------------------------------------------------------------------------------------


async def test_amounts_become_integer_minor_units(rig: Rig) -> None:
    """Decimal strings in major units become pence: "96" -> 9600, "96.5" -> 9650, "71.5" -> 7150;
    last_sale is always None; currency and fetched_at are set."""
    rig.token()
    rig.catalog()
    rig.market()
    result = await fetch(rig, make_job("9"), make_job("9.5", n=2))
    # the market data's other amounts ride beside the lowest ask (issue 13, item 7)
    assert price(result) == Price(provider="stockx", sku=SKU, size="9", currency="GBP",
                                  lowest_ask=9600, highest_bid=7150, last_sale=None,
                                  fetched_at=rig.clock.now(),
                                  extra=(("earn_more", 9600), ("sell_faster", 7150)))
    assert price(result, "job-2").lowest_ask == 9650


async def test_no_market_gives_null_amounts(rig: Rig) -> None:
    """A variant absent from market data, or with null amounts, completes with None amounts;
    a null lowestAskAmount falls back to standardMarketData.lowestAsk."""
    rig.token()
    rig.catalog()
    rig.market()
    result = await fetch(rig, make_job("14"), make_job("3", n=2), make_job("10.5", n=3))
    assert (price(result).lowest_ask, price(result).highest_bid) == (None, None)
    assert (price(result, "job-2").lowest_ask, price(result, "job-2").highest_bid) == (None, 2700)
    assert (price(result, "job-3").lowest_ask, price(result, "job-3").highest_bid) == (12000, None)


async def test_other_variants_come_back_as_extra_prices(rig: Rig) -> None:
    """Other sizes' prices are returned under their UK size, or "EU 39"-style for the UK 6
    double; the job's own variant is not repeated."""
    rig.token()
    rig.catalog()
    rig.market()
    result = await fetch(rig, make_job("9"))
    extra = {p.size: p for p in result.extra_prices}
    assert "9" not in extra
    assert extra["9.5"].lowest_ask == 9650
    assert extra["EU 39"].lowest_ask == 10200
    assert extra["EU 40"].lowest_ask == 10450
    assert "6" not in extra and "14" not in extra  # ambiguous; absent from market data
    assert len(extra) == 21 - 1
    assert all(p.currency == "GBP" and p.last_sale is None and p.sku == SKU
               for p in result.extra_prices)


# ---- error mapping -------------------------------------------------------------------------------


async def test_search_404_is_not_found(rig: Rig) -> None:
    """A 404 from search is NotFound with the HTTP status."""
    rig.token()
    rig.api.get(search_url(), status=404, payload=load("error_404.json"))
    with pytest.raises(NotFound) as info:
        await fetch(rig, make_job("9"))
    assert info.value.status == 404
    assert "not found on stockx: DD1391-100" in info.value.message


async def test_no_exact_style_id_is_not_found(rig: Rig) -> None:
    """Search results without the exact styleId mean NotFound, without a variants call."""
    rig.token()
    rig.api.get(search_url(), payload=load("search_no_match.json"))
    with pytest.raises(NotFound, match="not found on stockx: DD1391-100"):
        await fetch(rig, make_job("9"))
    assert rig.budget.spent == 1


async def test_stale_cached_product_404_looks_the_sku_up_again(rig: Rig) -> None:
    """A cached product id that starts answering 404 is dropped and the SKU looked up once more."""
    stale = "00000000-dead-4bad-8bad-000000000000"
    search = load("search_dd1391_100.json")
    for p in search["products"]:
        if p["styleId"] == SKU:
            p["productId"] = stale
    rig.token()
    rig.api.get(search_url(), payload=search)
    rig.api.get(variants_url(stale), payload=load("variants_dd1391_100.json"))
    rig.api.get(market_url(stale), payload=load("market_data_dd1391_100.json"))
    await fetch(rig, make_job("9"))
    assert (await rig.store.get_catalog("stockx", SKU) or {})["product_id"] == stale

    rig.api.get(market_url(stale), status=404, payload=load("error_404.json"))
    rig.catalog()
    rig.market()
    before = rig.budget.spent
    result = await fetch(rig, make_job("9"))
    assert price(result).lowest_ask == 9600
    assert rig.budget.spent - before == 4  # stale market data, search, variants, market data
    assert (await rig.store.get_catalog("stockx", SKU) or {})["product_id"] == PANDA


async def test_fresh_product_404_is_not_found_without_a_loop(rig: Rig) -> None:
    """A 404 on market data for a product just looked up is NotFound (no second look-up)."""
    rig.token()
    rig.catalog()
    rig.api.get(market_url(), status=404, payload=load("error_404.json"))
    with pytest.raises(NotFound):
        await fetch(rig, make_job("9"))
    assert rig.budget.spent == 3


async def test_429_with_retry_after(rig: Rig) -> None:
    """HTTP 429 with Retry-After is RateLimited carrying those seconds."""
    rig.token()
    rig.api.get(search_url(), status=429, payload=load("error_429.json"),
                headers={"Retry-After": "30"})
    with pytest.raises(RateLimited) as info:
        await fetch(rig, make_job("9"))
    assert info.value.retry_after_s == 30.0
    assert info.value.status == 429
    assert "Too Many Requests" in info.value.message


async def test_429_without_retry_after(rig: Rig) -> None:
    """HTTP 429 without Retry-After leaves retry_after_s None (the worker picks the pause)."""
    rig.token()
    rig.api.get(search_url(), status=429, payload=load("error_429.json"))
    with pytest.raises(RateLimited) as info:
        await fetch(rig, make_job("9"))
    assert info.value.retry_after_s is None


async def test_401_remints_once_then_succeeds(rig: Rig) -> None:
    """A 401 re-mints the access token once and retries the request with the new token."""
    rig.token("token.json")
    rig.token("token_rotated.json")
    rig.catalog()
    rig.api.get(market_url(), status=401, payload=load("error_401.json"))
    rig.market()
    result = await fetch(rig, make_job("9"))
    assert price(result).lowest_ask == 9600
    assert len(rig.calls("POST", TOKEN_URL)) == 2
    first, second = rig.calls("GET", market_url())
    assert first.kwargs["headers"]["Authorization"] == "Bearer access-token-1"
    assert second.kwargs["headers"]["Authorization"] == "Bearer access-token-2"
    assert rig.budget.spent == 4  # the retried request counts; the token endpoint does not


@pytest.mark.parametrize(("status", "fixture"), [(401, "error_401.json"),
                                                 (403, "error_403.json")])
async def test_refused_twice_is_auth_error_naming_the_credential(
        rig: Rig, status: int, fixture: str) -> None:
    """Refused again after one re-mint: AuthError naming STOCKX_API_KEY / STOCKX_REFRESH_TOKEN."""
    rig.token("token.json")
    rig.token("token_rotated.json")
    rig.api.get(search_url(), status=status, payload=load(fixture))
    rig.api.get(search_url(), status=status, payload=load(fixture))
    with pytest.raises(AuthError) as info:
        await fetch(rig, make_job("9"))
    assert info.value.credential == "STOCKX_API_KEY / STOCKX_REFRESH_TOKEN"
    assert info.value.status == status
    assert len(rig.calls("POST", TOKEN_URL)) == 2
    assert len(rig.calls("GET", search_url())) == 2


async def test_invalid_grant_says_to_run_auth_again(rig: Rig) -> None:
    """invalid_grant on refresh: AuthError saying the refresh token was revoked; no API call."""
    rig.token("error_invalid_grant.json", status=403)
    with pytest.raises(AuthError) as info:
        await fetch(rig, make_job("9"))
    assert info.value.credential == "STOCKX_REFRESH_TOKEN"
    assert "revoked" in info.value.message
    assert "marketd auth stockx" in info.value.message
    assert rig.budget.spent == 0 == rig.api_calls()


async def test_client_refused_by_token_endpoint_names_client_credentials(rig: Rig) -> None:
    """A token endpoint refusing the client is AuthError naming the client id and secret."""
    rig.token("error_invalid_client.json", status=401)
    with pytest.raises(AuthError) as info:
        await fetch(rig, make_job("9"))
    assert info.value.credential == "STOCKX_CLIENT_ID / STOCKX_CLIENT_SECRET"


async def test_missing_credentials_send_nothing(rig: Rig) -> None:
    """Missing API key and refresh token: AuthError naming both env vars, nothing sent."""
    with pytest.raises(AuthError) as info:
        await fetch(rig, make_job("9"), api_key="", refresh_token="")
    assert info.value.credential == "STOCKX_API_KEY, STOCKX_REFRESH_TOKEN"
    assert "marketd auth stockx" in info.value.message
    assert rig.urls() == []
    assert rig.budget.spent == 0


async def test_504_with_empty_body_is_transient(rig: Rig) -> None:
    """A 504 with an empty body is TransientError with the status."""
    rig.token()
    rig.api.get(search_url(), status=504, body=b"")
    with pytest.raises(TransientError) as info:
        await fetch(rig, make_job("9"))
    assert info.value.status == 504
    assert "HTTP 504" in info.value.message


async def test_500_error_message_key_is_reported(rig: Rig) -> None:
    """The live `errorMessage` key is read: a 500 is TransientError carrying that text."""
    rig.token()
    rig.catalog()
    rig.api.get(market_url(), status=500, payload=load("error_500_flex.json"))
    with pytest.raises(TransientError, match="Failed to fetch flex market data"):
        await fetch(rig, make_job("9"))


async def test_other_4xx_is_permanent_with_the_message(rig: Rig) -> None:
    """A 400 is PermanentError carrying the documented `message` and the status."""
    rig.token()
    rig.catalog()
    rig.api.get(market_url(), status=400, payload=load("error_400_currency.json"))
    with pytest.raises(PermanentError) as info:
        await fetch(rig, make_job("9"))
    assert info.value.status == 400
    assert "currencyCode must be one of" in info.value.message


async def test_truncated_json_is_transient(rig: Rig) -> None:
    """A truncated JSON body is TransientError."""
    rig.token()
    text = json.dumps(load("search_dd1391_100.json"))
    rig.api.get(search_url(), status=200, body=text[: len(text) // 2],
                content_type="application/json")
    with pytest.raises(TransientError, match="bad JSON"):
        await fetch(rig, make_job("9"))


async def test_timeout_is_transient(rig: Rig) -> None:
    """A request that times out is TransientError."""
    rig.token()
    rig.api.get(search_url(), exception=TimeoutError())
    with pytest.raises(TransientError, match="timed out"):
        await fetch(rig, make_job("9"))


async def test_connection_error_is_transient(rig: Rig) -> None:
    """A refused connection is TransientError."""
    rig.token()
    rig.api.get(search_url(), exception=aiohttp.ClientConnectionError("refused"))
    with pytest.raises(TransientError, match="network error"):
        await fetch(rig, make_job("9"))


async def test_budget_exhausted_propagates_before_sending(rig: Rig) -> None:
    """When the budget refuses, BudgetExhausted is raised and that request is not sent."""
    rig.budget.allow = 1
    rig.token()
    rig.catalog()
    with pytest.raises(BudgetExhausted):
        await fetch(rig, make_job("9"))
    assert rig.api_calls() == 1


# ---- tokens --------------------------------------------------------------------------------------


async def test_token_cached_in_store_survives_a_new_client(rig: Rig) -> None:
    """A restarted client reuses the stored access token instead of minting again."""
    rig.token()
    rig.catalog()
    rig.market()
    rig.market()
    await fetch(rig, make_job("9"))
    stored = await rig.store.get_token("stockx", "access_token")
    assert stored == ("access-token-1", rig.clock.now() + 43200)
    await fetch(rig, make_job("9"))
    assert len(rig.calls("POST", TOKEN_URL)) == 1
    assert rig.calls("GET", market_url())[1].kwargs["headers"]["Authorization"] == \
        "Bearer access-token-1"


async def test_token_is_renewed_a_few_minutes_before_it_expires(rig: Rig) -> None:
    """Within five minutes of expires_in the token is minted again before the call."""
    rig.token("token.json")
    rig.token("token_rotated.json")
    rig.catalog()
    rig.market()
    rig.market()
    client = rig.client()
    await client.fetch_group(SKU, [make_job("9")])
    rig.clock.advance(43200 - 200)
    await client.fetch_group(SKU, [make_job("9")])
    assert len(rig.calls("POST", TOKEN_URL)) == 2
    assert rig.calls("GET", market_url())[1].kwargs["headers"]["Authorization"] == \
        "Bearer access-token-2"


async def test_token_endpoint_is_not_counted(rig: Rig) -> None:
    """Minting a token spends no budget: spends equal API requests exactly."""
    rig.token()
    rig.catalog()
    rig.market()
    await fetch(rig, make_job("9"))
    assert len(rig.calls("POST", TOKEN_URL)) == 1
    assert rig.budget.spent == rig.api_calls() == 3


async def test_refresh_token_from_the_store_when_config_has_none(rig: Rig) -> None:
    """Without STOCKX_REFRESH_TOKEN the one stored by `marketd auth stockx` is used."""
    await rig.store.put_token("stockx", "refresh_token", "stored-refresh-token", None)
    rig.token()
    rig.catalog()
    rig.market()
    await fetch(rig, make_job("9"), refresh_token="")
    (mint,) = rig.calls("POST", TOKEN_URL)
    assert mint.kwargs["data"]["refresh_token"] == "stored-refresh-token"


async def test_rotated_refresh_token_is_stored(rig: Rig) -> None:
    """A new refresh_token in the token response is kept in the store."""
    rig.token("token_rotated.json")
    rig.catalog()
    rig.market()
    await fetch(rig, make_job("9"))
    assert await rig.store.get_token("stockx", "refresh_token") == ("refresh-token-rotated", None)


async def test_no_secret_or_token_is_logged(rig: Rig) -> None:
    """Log events name what happened and never carry a secret or token."""
    rig.token("token.json")
    rig.token("token_rotated.json")
    rig.catalog()
    rig.api.get(market_url(), status=401, payload=load("error_401.json"))
    rig.market()
    with capture_logs() as logs:
        await fetch(rig, make_job("9"))
    events = [e["event"] for e in logs]
    assert "stockx_token_minted" in events
    assert "stockx_catalog_cached" in events
    assert "stockx_token_rejected" in events
    text = repr(logs)
    for secret in [*SECRETS.values(), "access-token-1", "access-token-2",
                   "refresh-token-rotated"]:
        assert secret not in text


async def test_revoked_config_refresh_token_falls_back_to_the_stored_one(rig: Rig) -> None:
    """If STOCKX_REFRESH_TOKEN is refused with invalid_grant, a different stored refresh token
    (e.g. a rotated one) is tried before giving up."""
    await rig.store.put_token("stockx", "refresh_token", "stored-refresh-token", None)
    rig.token("error_invalid_grant.json", status=403)
    rig.token()
    rig.catalog()
    rig.market()
    result = await fetch(rig, make_job("9"))
    assert price(result).lowest_ask == 9600
    sent = [c.kwargs["data"]["refresh_token"] for c in rig.calls("POST", TOKEN_URL)]
    assert sent == ["test-refresh-token", "stored-refresh-token"]


async def test_catalog_is_looked_up_again_after_a_week(rig: Rig) -> None:
    """A catalog entry older than seven days is refreshed (new variants appear rarely)."""
    rig.token()
    rig.token()
    rig.catalog()
    rig.catalog()
    rig.market()
    rig.market()
    client = rig.client()
    await client.fetch_group(SKU, [make_job("9")])
    rig.clock.advance(8 * 86400)
    await client.fetch_group(SKU, [make_job("9")])
    assert rig.budget.spent == 6
    assert len(rig.calls("GET", search_url())) == 2
