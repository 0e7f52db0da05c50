"""EbayClient against recorded-shape payloads (tests/fixtures/ebay), faked at the HTTP boundary.

The payloads follow providers.md §3. The store is a real SQLite file; the budget counts spends.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from structlog.testing import capture_logs

from marketd.clock import FakeClock
from marketd.config import parse_config
from marketd.errors import (
    AuthError,
    NotFound,
    PermanentError,
    QuotaExhausted,
    RateLimited,
    TransientError,
)
from marketd.models import Job, Price
from marketd.providers.base import ProviderContext
from marketd.providers.ebay import (
    EbayClient,
    seconds_until_quota_reset,
    size_aspect_filter,
    title_matches,
)
from marketd.store import Store
from tests import support
from tests.support import CountingBudget

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ebay"
TOKEN_URL = "https://api.ebay.com/identity/v1/oauth2/token"
SEARCH_RE = re.compile(r"^https://api\.ebay\.com/buy/browse/v1/item_summary/search\?.*$")
QUOTA_RE = re.compile(r"^https://api\.ebay\.com/developer/analytics/v1_beta/rate_limit/\?.*$")
SKU = "DD1391-100"
FIRST_TOKEN = json.loads((FIXTURES / "token.json").read_text())["access_token"]
SECOND_TOKEN = json.loads((FIXTURES / "token_second.json").read_text())["access_token"]
CREDENTIAL = "EBAY_CLIENT_ID / EBAY_CLIENT_SECRET"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def make_job(size: str | None, system: str = "UK", sku: str = SKU) -> Job:
    return support.make_job("ebay", size, system, sku)


def requests_to(http: aioresponses, path: str) -> list[tuple[Any, dict[str, Any]]]:
    """(URL, request kwargs) of every request whose path ends with ``path``."""
    return [(url, call.kwargs) for (_method, url), calls in http.requests.items()
            for call in calls if url.path.endswith(path)]


@pytest.fixture
def budget() -> CountingBudget:
    return CountingBudget(provider="ebay")


Factory = Any


@pytest.fixture
def make_client(session: aiohttp.ClientSession, budget: CountingBudget, store: Store,
                clock: FakeClock) -> Factory:
    def make(creds: bool = True, **options: Any) -> EbayClient:
        env = {"EBAY_CLIENT_ID": "marketd-PRD-1234", "EBAY_CLIENT_SECRET": "PRD-s3cr3t"} \
            if creds else {}
        cfg = parse_config({"providers": {"ebay": options}}, env=env)
        return EbayClient(ProviderContext(cfg.providers["ebay"], session, budget, store, clock))
    return make


def serve_token(http: aioresponses, name: str = "token.json") -> None:
    http.post(TOKEN_URL, payload=fixture(name))


def price(result: Any, job: Job) -> Price:
    outcome = result.outcomes[job.id]
    assert isinstance(outcome, Price), outcome
    return outcome


# ---- token -----------------------------------------------------------------------------------


async def test_token_request_shape(http: aioresponses, make_client: Factory) -> None:
    """The app token is minted with Basic client credentials and the api_scope form."""
    serve_token(http)
    http.get(SEARCH_RE, payload=fixture("search_empty.json"))
    await make_client().fetch_group(SKU, [make_job("11")])
    [(_, kwargs)] = requests_to(http, "/identity/v1/oauth2/token")
    expected = base64.b64encode(b"marketd-PRD-1234:PRD-s3cr3t").decode()
    assert kwargs["headers"]["Authorization"] == f"Basic {expected}"
    assert kwargs["data"] == {"grant_type": "client_credentials",
                              "scope": "https://api.ebay.com/oauth/api_scope"}


async def test_token_minted_once_not_counted_and_reused_from_store(
        http: aioresponses, make_client: Factory, budget: CountingBudget, store: Store,
        clock: FakeClock) -> None:
    """One uncounted mint serves two searches, and a new client reuses it from the store."""
    serve_token(http)
    http.get(SEARCH_RE, payload=fixture("search_empty.json"), repeat=True)
    await make_client().fetch_group(SKU, [make_job("10"), make_job("11")])
    await make_client().fetch_group(SKU, [make_job("10")])  # a restart: a new instance
    assert len(requests_to(http, "/oauth2/token")) == 1
    assert budget.spent == 2 == len(requests_to(http, "/item_summary/search"))  # one per SKU
    assert await store.get_token("ebay", "access_token") == (FIRST_TOKEN,
                                                            clock.now() + 7200)
    for _, kwargs in requests_to(http, "/item_summary/search"):
        assert kwargs["headers"]["Authorization"] == f"Bearer {FIRST_TOKEN}"


async def test_token_renewed_a_few_minutes_early(http: aioresponses, make_client: Factory,
                                                 store: Store, clock: FakeClock) -> None:
    """A stored token with under five minutes left is replaced by a new one."""
    await store.put_token("ebay", "access_token", "old-token", clock.now() + 200)
    serve_token(http, "token_second.json")
    http.get(SEARCH_RE, payload=fixture("search_empty.json"))
    await make_client().fetch_group(SKU, [make_job("10")])
    [(_, kwargs)] = requests_to(http, "/item_summary/search")
    assert kwargs["headers"]["Authorization"] == f"Bearer {SECOND_TOKEN}"


async def test_401_mints_again_and_retries_once(http: aioresponses, make_client: Factory,
                                                budget: CountingBudget, store: Store) -> None:
    """A refused token is replaced once and the search retried; the new token is stored."""
    serve_token(http)
    serve_token(http, "token_second.json")
    http.get(SEARCH_RE, status=401, payload=fixture("error_401.json"))
    http.get(SEARCH_RE, payload=fixture("search_dd1391_uk10.json"))
    job = make_job("10")
    assert price(await make_client().fetch_group(SKU, [job]), job).lowest_ask == 9750
    searches = requests_to(http, "/item_summary/search")
    assert [k["headers"]["Authorization"] for _, k in searches] == [
        f"Bearer {FIRST_TOKEN}", f"Bearer {SECOND_TOKEN}"]
    assert budget.spent == 2
    stored = await store.get_token("ebay", "access_token")
    assert stored is not None and stored[0] == SECOND_TOKEN


async def test_401_twice_is_auth_error(http: aioresponses, make_client: Factory) -> None:
    """Refused again after one renewal: AuthError naming the eBay client credentials."""
    serve_token(http)
    serve_token(http, "token_second.json")
    http.get(SEARCH_RE, status=401, payload=fixture("error_401.json"), repeat=True)
    with pytest.raises(AuthError) as info:
        await make_client().fetch_group(SKU, [make_job("10")])
    assert info.value.credential == CREDENTIAL
    assert len(requests_to(http, "/oauth2/token")) == 2


async def test_invalid_client_is_auth_error(http: aioresponses, make_client: Factory,
                                            budget: CountingBudget) -> None:
    """The token endpoint refusing the credentials is AuthError; no search is spent."""
    http.post(TOKEN_URL, status=401, payload=fixture("token_invalid_client.json"))
    with pytest.raises(AuthError) as info:
        await make_client().fetch_group(SKU, [make_job("10")])
    assert info.value.credential == CREDENTIAL and budget.spent == 0


async def test_missing_credentials_send_nothing(http: aioresponses, make_client: Factory) -> None:
    """Without client id and secret: AuthError and no request at all."""
    with pytest.raises(AuthError) as info:
        await make_client(creds=False).fetch_group(SKU, [make_job("10")])
    assert info.value.credential == CREDENTIAL
    assert http.requests == {}


# ---- search ----------------------------------------------------------------------------------


async def test_search_request_shape(http: aioresponses, make_client: Factory) -> None:
    """One search per SKU: the marketplace and end-user-context headers, q = the SKU, 200 a
    page, new fixed-price delivered to GB, and the category with its UK shoe-size aspect."""
    serve_token(http)
    http.get(SEARCH_RE, payload=fixture("search_empty.json"))
    await make_client(category_ids="15709").fetch_group(SKU, [make_job("10.5"), make_job("9")])
    [(url, kwargs)] = requests_to(http, "/item_summary/search")
    assert kwargs["headers"]["X-EBAY-C-MARKETPLACE-ID"] == "EBAY_GB"
    assert kwargs["headers"]["X-EBAY-C-ENDUSERCTX"] == "contextualLocation=country%3DGB"
    assert dict(url.query) == {
        "q": "DD1391-100", "limit": "200", "sort": "price", "category_ids": "15709",
        "aspect_filter": "categoryId:15709,UK Shoe Size:{10.5|9}",
        "filter": "conditionIds:{1000},buyingOptions:{FIXED_PRICE},deliveryCountry:GB"}


async def test_other_marketplace_header_and_delivery_country(http: aioresponses,
                                                             make_client: Factory) -> None:
    """EBAY_US goes in the header and delivers to the US; a configured delivery country and
    postcode price shipping for the user; a null price is in USD."""
    serve_token(http)
    http.get(SEARCH_RE, payload=fixture("search_empty.json"), repeat=True)
    job = make_job("10", "US")
    result = await make_client(marketplace="EBAY_US").fetch_group(SKU, [job])
    await make_client(delivery_country="IE", delivery_postcode="D02 X285").fetch_group(
        SKU, [job])
    [(us, us_kw), (gb, gb_kw)] = requests_to(http, "/item_summary/search")
    assert us_kw["headers"]["X-EBAY-C-MARKETPLACE-ID"] == "EBAY_US"
    assert us.query["filter"].endswith("deliveryCountry:US") and "category_ids" not in us.query
    assert us_kw["headers"]["X-EBAY-C-ENDUSERCTX"] == "contextualLocation=country%3DUS"
    assert gb.query["filter"].endswith("deliveryCountry:IE")
    assert gb_kw["headers"]["X-EBAY-C-ENDUSERCTX"] == \
        "contextualLocation=country%3DIE%2Czip%3DD02%20X285"
    assert price(result, job).currency == "USD"


async def test_title_filter_and_price_plus_shipping(http: aioresponses,
                                                    make_client: Factory) -> None:
    """Cheaper listings of other SKUs or sizes are dropped; the ask is price + first shipping."""
    serve_token(http)
    http.get(SEARCH_RE, payload=fixture("search_dd1391_uk10.json"))
    job = make_job("10")
    p = price(await make_client().fetch_group(SKU, [job]), job)
    # 60.00 (DD1391-101), 72+3.99 (UK 9), 79 (UK 10.5), 55 (no SKU), 50 (DD1391-1001) are out;
    # 90.00 + 9.99, 97.50 + 0.00 and 99.00 (calculated shipping) remain
    assert (p.lowest_ask, p.currency, p.size) == (9750, "GBP", "10")
    assert (p.highest_bid, p.last_sale) == (None, None)


async def test_shipping_decides_the_lowest_ask(http: aioresponses, make_client: Factory) -> None:
    """A lower item price loses to a lower total once shipping is added."""
    serve_token(http)
    payload = fixture("search_dd1391_uk10.json")
    for item in payload["itemSummaries"]:
        if item["price"]["value"] == "97.50":
            item["shippingOptions"][0]["shippingCost"]["value"] = "12.00"  # 109.50 in total
    http.get(SEARCH_RE, payload=payload)
    job = make_job("10")
    assert price(await make_client().fetch_group(SKU, [job]), job).lowest_ask == 9900


async def test_no_listing_is_a_null_price(http: aioresponses, make_client: Factory) -> None:
    """No matching listing completes with null amounts, not a failure."""
    serve_token(http)
    http.get(SEARCH_RE, payload=fixture("search_empty.json"))
    job = make_job("11")
    p = price(await make_client().fetch_group(SKU, [job]), job)
    assert (p.lowest_ask, p.highest_bid, p.last_sale, p.currency) == (None, None, None, "GBP")


async def test_sizeless_job_matches_on_sku_only(http: aioresponses, make_client: Factory) -> None:
    """Without a size, q is the SKU and every listing of the SKU counts."""
    serve_token(http)
    http.get(SEARCH_RE, payload=fixture("search_dd1391_uk10.json"))
    job = make_job(None)
    p = price(await make_client().fetch_group(SKU, [job]), job)
    assert p.lowest_ask == 7599 and p.size is None  # 72.00 + 3.99 (the UK 9 pair)
    [(url, _)] = requests_to(http, "/item_summary/search")
    assert url.query["q"] == SKU


# ---- errors ----------------------------------------------------------------------------------


async def test_2001_is_quota_exhausted_until_pacific_midnight(http: aioresponses,
                                                              make_client: Factory,
                                                              clock: FakeClock) -> None:
    """errorId 2001 is QuotaExhausted until the next midnight in Los Angeles (08:00 UTC here)."""
    clock.advance(2 * 3600)  # 02:00 UTC = 18:00 the day before in Los Angeles
    serve_token(http)
    http.get(SEARCH_RE, status=429, payload=fixture("error_2001.json"))
    with pytest.raises(QuotaExhausted) as info:
        await make_client().fetch_group(SKU, [make_job("10")])
    assert info.value.retry_after_s == 6 * 3600


async def test_other_429_is_rate_limited(http: aioresponses, make_client: Factory) -> None:
    """A 429 without errorId 2001 is RateLimited (honouring Retry-After), not QuotaExhausted."""
    serve_token(http)
    http.get(SEARCH_RE, status=429, body="Too Many Requests", content_type="text/plain",
             headers={"Retry-After": "12"})
    with pytest.raises(RateLimited) as info:
        await make_client().fetch_group(SKU, [make_job("10")])
    assert not isinstance(info.value, QuotaExhausted) and info.value.retry_after_s == 12.0


async def test_400_is_permanent_with_message(http: aioresponses, make_client: Factory) -> None:
    """A 400 fails the job with eBay's errorId and long message."""
    serve_token(http)
    http.get(SEARCH_RE, status=400, payload=fixture("error_400.json"))
    job = make_job("10")
    with pytest.raises(PermanentError) as info:
        await make_client().fetch_group(SKU, [job])
    assert info.value.status == 400 and re.search(r"12006.*limit", str(info.value))


async def test_404_is_not_found(http: aioresponses, make_client: Factory) -> None:
    """A 404 fails the group NotFound (one search serves all its jobs)."""
    serve_token(http)
    http.get(SEARCH_RE, status=404, body="")
    with pytest.raises(NotFound):
        await make_client().fetch_group(SKU, [make_job("10")])


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_transient(http: aioresponses, make_client: Factory, status: int) -> None:
    """500/502/503/504 are TransientError, and logged as ebay_request_failed."""
    serve_token(http)
    http.get(SEARCH_RE, status=status, payload=fixture("error_500.json"))
    with capture_logs() as logs, pytest.raises(TransientError):
        await make_client().fetch_group(SKU, [make_job("10")])
    [event] = [e for e in logs if e["event"] == "ebay_request_failed"]
    assert event["status"] == status and event["error_id"] == 12000


async def test_timeout_is_transient(http: aioresponses, make_client: Factory) -> None:
    """A timeout is a TransientError."""
    serve_token(http)
    http.get(SEARCH_RE, exception=TimeoutError())
    with pytest.raises(TransientError, match="timed out"):
        await make_client().fetch_group(SKU, [make_job("10")])


async def test_bad_json_is_transient(http: aioresponses, make_client: Factory) -> None:
    """A truncated JSON body is a TransientError."""
    serve_token(http)
    http.get(SEARCH_RE, body='{"total": 3, "itemSummaries": [{"itemId": "v1|3854',
             content_type="application/json")
    with pytest.raises(TransientError, match="JSON"):
        await make_client().fetch_group(SKU, [make_job("10")])


def _page(items: list[dict[str, Any]], *, more: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"total": len(items) + (200 if more else 0), "limit": 200,
                            "offset": 0, "itemSummaries": items}
    if more:
        body["next"] = "https://api.ebay.com/buy/browse/v1/item_summary/search?offset=200"
    return body


def _junk(n: int) -> list[dict[str, Any]]:
    """Cheap listings that are not the shoe: laces, boxes, other SKUs."""
    return [{"itemId": f"v1|{i}|0", "title": f"Laces for Dunk DD1391 {i}",
             "price": {"value": "2.00", "currency": "GBP"}} for i in range(n)]


async def test_stop_error_after_a_price_keeps_the_price(http: aioresponses,
                                                        make_client: Factory) -> None:
    """A 429 on the second page fails the sizes still unpriced; priced ones keep their price."""
    serve_token(http)
    http.get(SEARCH_RE, payload=_page(fixture("search_dd1391_uk10.json")["itemSummaries"],
                                      more=True))
    http.get(SEARCH_RE, status=429, payload=fixture("error_2001.json"))
    jobs = [make_job("10"), make_job("11"), make_job("12")]
    result = await make_client().fetch_group(SKU, jobs)
    assert price(result, jobs[0]).lowest_ask == 9750
    assert all(isinstance(result.outcomes[j.id], QuotaExhausted) for j in jobs[1:])
    assert len(requests_to(http, "/item_summary/search")) == 2


async def test_one_search_prices_every_size(http: aioresponses, make_client: Factory,
                                            budget: CountingBudget) -> None:
    """Three sizes of one SKU cost one search; each is priced from listings of its size."""
    serve_token(http)
    http.get(SEARCH_RE, payload=fixture("search_dd1391_uk10.json"))
    jobs = [make_job("10"), make_job("9"), make_job("10.5"), make_job("12")]
    result = await make_client().fetch_group(SKU, jobs)
    assert [price(result, j).lowest_ask for j in jobs] == [9750, 7599, 7900, None]
    assert budget.spent == 1 == len(requests_to(http, "/item_summary/search"))


async def test_cheap_junk_takes_a_second_page_never_a_third(http: aioresponses,
                                                            make_client: Factory) -> None:
    """200 cheaper non-matching listings no longer leave "no price": the next page is read
    while a size is unpriced, and a SKU never costs more than two searches."""
    serve_token(http)
    real = fixture("search_dd1391_uk10.json")["itemSummaries"]
    http.get(SEARCH_RE, payload=_page(_junk(200), more=True))
    http.get(SEARCH_RE, payload=_page(real, more=True))
    jobs = [make_job("10"), make_job("12")]
    result = await make_client().fetch_group(SKU, jobs)
    assert (price(result, jobs[0]).lowest_ask, price(result, jobs[1]).lowest_ask) == (9750, None)
    urls = [url for url, _ in requests_to(http, "/item_summary/search")]
    assert [u.query.get("offset") for u in urls] == [None, "200"]
    assert all(u.query["limit"] == "200" and u.query["q"] == SKU for u in urls)


async def test_gtin_from_stockx_catalog_is_searched_first(http: aioresponses, store: Store,
                                                          make_client: Factory) -> None:
    """A lone size whose UPC StockX's catalog cached is searched by gtin=, and every listing
    found is that size; nothing found falls back to the SKU search (two searches at most)."""
    await store.put_catalog("stockx", SKU, product_id="p1", brand="Nike", data={
        "format": 1, "variants": [{"id": "v10", "value": "10", "gtins": [["UPC", "195238853624"]],
                                   "conversions": [["us m", "US M 10"], ["uk", "UK 9"]]}]})
    serve_token(http)
    item = {"itemId": "v1|1|0", "title": "Nike Dunk Low Panda",
            "price": {"value": "88.00", "currency": "GBP"}}
    http.get(SEARCH_RE, payload=_page([item], more=False))
    job = make_job("9")
    assert price(await make_client().fetch_group(SKU, [job]), job).lowest_ask == 8800
    [(url, _)] = requests_to(http, "/item_summary/search")
    assert url.query["gtin"] == "195238853624" and "q" not in url.query
    http.get(SEARCH_RE, payload=fixture("search_empty.json"))
    http.get(SEARCH_RE, payload=fixture("search_dd1391_uk10.json"))
    assert price(await make_client().fetch_group(SKU, [job]), job).lowest_ask == 7599
    assert len(requests_to(http, "/item_summary/search")) == 3


async def test_quota_reads_get_rate_limits_uncounted(http: aioresponses, make_client: Factory,
                                                     budget: CountingBudget) -> None:
    """quota reads buy.browse's remaining calls and reset; Analytics has its own quota, so
    the call is not counted against the Browse budget."""
    serve_token(http)
    http.get(QUOTA_RE, payload=fixture("rate_limits.json"))
    quota = await make_client().quota()
    assert quota is not None
    assert (quota.remaining, quota.limit) == (4870, 5000)
    assert quota.reset_at == datetime(2026, 1, 1, 8, tzinfo=UTC).timestamp()
    [(url, _)] = requests_to(http, "/rate_limit/")
    assert dict(url.query) == {"api_context": "buy", "api_name": "browse"}
    assert budget.spent == 0


async def test_quota_without_a_readable_reset_uses_pacific_midnight(
        http: aioresponses, make_client: Factory, clock: FakeClock) -> None:
    body = fixture("rate_limits.json")
    rate = body["rateLimits"][0]["resources"][1]["rates"][0]
    rate["reset"] = "soon"
    rate["remaining"] = -3
    serve_token(http)
    http.get(QUOTA_RE, payload=body)
    quota = await make_client().quota()
    assert quota is not None and quota.remaining == 0
    assert quota.reset_at == clock.now() + seconds_until_quota_reset(clock.now())


async def test_quota_is_none_when_ebay_does_not_say(http: aioresponses,
                                                    make_client: Factory) -> None:
    serve_token(http)
    http.get(QUOTA_RE, payload={"rateLimits": [{"apiName": "Browse", "resources": []}]},
             repeat=True)
    client = make_client()
    assert await client.quota() is None
    assert await client.remaining_quota() is None


# ---- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(("title", "sku", "size", "system", "ok"), [
    ("Nike Dunk Low Panda DD1391-100 UK 10", SKU, "10", "UK", True),
    ("Nike Dunk Low Panda dd1391 100 UK10", SKU, "10", "UK", True),
    ("Nike Dunk Low Panda DD1391100 Size 10", SKU, "10", "UK", True),
    ("Nike Dunk Low Panda DD1391-100 Size 10 UK", SKU, "10", "UK", True),
    ("Nike Dunk Low Panda DD1391-100 UK Size 10", SKU, "10", "UK", True),
    ("Nike Dunk Low Panda DD1391-101 UK 10", SKU, "10", "UK", False),
    ("Nike Dunk Low Panda XDD1391-100 UK 10", SKU, "10", "UK", False),
    ("Nike Dunk Low Panda DD1391-100 UK 10.5", SKU, "10", "UK", False),
    ("Nike Dunk Low Panda DD1391-100 UK 9 US 10", SKU, "10", "UK", False),
    ("Nike Dunk Low Panda DD1391-100 UK 9 US 10", SKU, "10", "US", True),
    ("Nike Dunk Low Panda DD1391-100 US M 10 EU 44", SKU, "44", "EU", True),
    ("Nike Air Plus DD1391-100 10", SKU, "10", "UK", True),
    ("Nike Dunk Low Panda DD1391-100 UK 1", SKU, "10", "UK", False),
    ("adidas Samba OG B75806 EU 42 2/3", "B75806", "42 2/3", "EU", True),
    ("adidas Samba OG B75806 EU 42 2/3", "B75806", "42", "EU", False),
    ("Nike Dunk Low Womens DD1503-101 US 8.5W", "DD1503-101", "8.5W", "US", True),
    ("Nike Dunk Low Panda DD1391-100", SKU, None, "UK", True),
])
def test_title_matches(title: str, sku: str, size: str | None, system: str, ok: bool) -> None:
    """Titles need the SKU (space/hyphen-insensitive) and the size, unlabelled or in its system."""
    assert title_matches(title, sku, size, system) is ok


def test_size_aspect_filter_names_every_size_or_none() -> None:
    """One aspect filter for all the group's sizes in the aspect's system; None when a job is
    size-less or in another system (one search serves the whole group)."""
    uk = [make_job("10"), make_job("8.5W"), make_job("10")]
    assert size_aspect_filter("15709", "UK Shoe Size", uk) == \
        "categoryId:15709,UK Shoe Size:{10|8.5}"
    assert size_aspect_filter("15709", "UK Shoe Size", [*uk, make_job("44", "EU")]) is None
    assert size_aspect_filter("15709", "UK Shoe Size", [make_job(None)]) is None
    assert size_aspect_filter("15709", "", uk) is None


@pytest.mark.parametrize(("utc", "hours"), [
    ("2026-01-01T00:00:00", 8),    # PST: midnight is 08:00 UTC
    ("2026-01-01T08:00:00", 24),   # exactly at a reset: the next one
    ("2026-07-01T06:00:00", 1),    # PDT: midnight is 07:00 UTC
    ("2026-03-08T06:00:00", 2),    # 22:00 PST on the 7th
    ("2026-03-08T08:00:00", 23),   # midnight PST on the 8th, a day of 23 hours (DST begins)
    ("2026-11-01T07:00:00", 25),   # midnight PDT on 1 November, a day of 25 hours (DST ends)
])
def test_seconds_until_quota_reset(utc: str, hours: int) -> None:
    """The quota resets at the next midnight in Los Angeles, DST included."""
    now = datetime.fromisoformat(utc).replace(tzinfo=UTC).timestamp()
    assert seconds_until_quota_reset(now) == hours * 3600
