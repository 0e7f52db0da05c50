"""AliasClient against recorded-shape payloads (tests/fixtures/alias), faked at the HTTP boundary.

The payloads follow providers.md §2. The store is a real SQLite file; the budget counts spends.
"""

from __future__ import annotations

import json
import re
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
    BudgetExhausted,
    NotFound,
    PermanentError,
    RateLimited,
    SizeError,
    TransientError,
)
from marketd.models import Job, Price
from marketd.providers.alias import AliasClient
from marketd.providers.base import ProviderContext
from marketd.store import Store
from tests import support
from tests.support import CountingBudget

FIXTURES = Path(__file__).parent.parent / "fixtures" / "alias"
BASE = "https://api.alias.org/api/v1"
SKU = "DD1391-100"
CATALOG_ID = "dunk-low-black-white-dd1391-100"
TOKEN = "goatapi_test"
CATALOG_RE = re.compile(r"^https://api\.alias\.org/api/v1/catalog\?.*$")
LIST_RE = re.compile(r"^https://api\.alias\.org/api/v1/pricing_insights/availabilities/.*$")
ONE_RE = re.compile(r"^https://api\.alias\.org/api/v1/pricing_insights/availability\?.*$")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def make_job(size: str | None, system: str = "UK", sku: str = SKU) -> Job:
    return support.make_job("alias", size, system, sku)


def requests_to(http: aioresponses, path: str) -> list[tuple[Any, dict[str, Any]]]:
    """(URL, request kwargs) of every request whose path ends with ``path``."""
    return [(url, call.kwargs) for (_method, url), calls in http.requests.items()
            for call in calls if url.path.endswith(path)]


def total_requests(http: aioresponses) -> int:
    return sum(len(calls) for calls in http.requests.values())


@pytest.fixture
def budget() -> CountingBudget:
    return CountingBudget(provider="alias")


Factory = Any


@pytest.fixture
def make_client(session: aiohttp.ClientSession, budget: CountingBudget, store: Store,
                clock: FakeClock) -> Factory:
    def make(token: str = TOKEN, **options: Any) -> AliasClient:
        cfg = parse_config({"providers": {"alias": options}},
                           env={"ALIAS_API_TOKEN": token} if token else {})
        return AliasClient(ProviderContext(cfg.providers["alias"], session, budget, store, clock))
    return make


def serve_catalog(http: aioresponses, name: str = "catalog_search.json") -> None:
    http.get(CATALOG_RE, payload=fixture(name))


def serve_list(http: aioresponses, name: str = "availabilities.json") -> None:
    http.get(LIST_RE, payload=fixture(name))


def price(result: Any, job: Job) -> Price:
    outcome = result.outcomes[job.id]
    assert isinstance(outcome, Price), outcome
    return outcome


# ---- catalog ---------------------------------------------------------------------------------


async def test_catalog_matches_space_sku_and_caches_it(http: aioresponses, make_client: Factory,
                                                       store: Store) -> None:
    """The item whose sku "DD1391 100" equals DD1391-100 is chosen (not DD1391 101) and cached."""
    serve_catalog(http)
    serve_list(http)
    await make_client().fetch_group(SKU, [make_job("10", "US")])
    [(url, kwargs)] = requests_to(http, "/catalog")
    assert url.query["query"] == SKU and int(url.query["limit"]) > 1
    assert kwargs["headers"]["Authorization"] == "Bearer goatapi_test"
    [(list_url, _)] = requests_to(http, f"/availabilities/{CATALOG_ID}")
    entry = await store.get_catalog("alias", SKU)
    assert entry is not None and entry["product_id"] == CATALOG_ID
    assert entry["brand"] == "Nike" and entry["title"] == "Nike Dunk Low 'Black White'"
    assert entry["image_url"] == "https://image.goat.com/dd1391-100.png"
    assert len(entry["data"]["allowed_sizes"]) == 22 and entry["data"]["gender"] == "men"


async def test_cached_second_refresh_costs_one_call(http: aioresponses, make_client: Factory,
                                                    budget: CountingBudget) -> None:
    """With the catalog cached, a refresh of a new client costs exactly one counted call."""
    serve_catalog(http)
    http.get(LIST_RE, payload=fixture("availabilities.json"), repeat=True)
    jobs = [make_job("9"), make_job("10", "US")]
    await make_client().fetch_group(SKU, jobs)
    assert budget.spent == 2 and total_requests(http) == 2
    result = await make_client().fetch_group(SKU, jobs)
    assert budget.spent == 3 and total_requests(http) == 3
    assert price(result, jobs[0]).lowest_ask == 9600


async def test_sku_missing_from_search_is_not_found(http: aioresponses,
                                                    make_client: Factory) -> None:
    """A search without an item of that SKU fails NotFound "not found on alias: <sku>"."""
    http.get(CATALOG_RE, payload=fixture("catalog_search_empty.json"))
    with pytest.raises(NotFound, match="not found on alias: DD1391-100"):
        await make_client().fetch_group(SKU, [make_job("9")])


async def test_stale_cached_catalog_id_is_looked_up_again(http: aioresponses, store: Store,
                                                          make_client: Factory) -> None:
    """A 404 on a cached catalog id drops the cache, searches once, and prices with the new id."""
    await store.put_catalog("alias", SKU, product_id="dunk-low-old-slug", brand="Nike",
                            data={"gender": "men", "allowed_sizes": []})
    http.get(f"{BASE}/pricing_insights/availabilities/dunk-low-old-slug?region_id=3",
             status=404, payload=fixture("error_404.json"))
    serve_catalog(http)
    serve_list(http)
    job = make_job("9")
    result = await make_client().fetch_group(SKU, [job])
    assert price(result, job).lowest_ask == 9600
    assert len(requests_to(http, "/catalog")) == 1
    entry = await store.get_catalog("alias", SKU)
    assert entry is not None and entry["product_id"] == CATALOG_ID


# ---- prices ----------------------------------------------------------------------------------


async def test_availabilities_keeps_new_good_condition_only(http: aioresponses,
                                                            make_client: Factory) -> None:
    """Used, defect, no-box and missing-lid rows are ignored: US 10 asks 9600, not 4000."""
    serve_catalog(http)
    serve_list(http)
    job = make_job("10", "US")
    p = price(await make_client().fetch_group(SKU, [job]), job)
    assert (p.lowest_ask, p.highest_bid, p.last_sale) == (9600, 10500, 11500)
    assert (p.provider, p.sku, p.size, p.currency) == ("alias", SKU, "US 10", "USD")


async def test_zero_cents_mean_no_data(http: aioresponses, make_client: Factory) -> None:
    """"0" is null: US 10.5 has only a bid; US 7 (new) has nothing, though used pairs sell."""
    serve_catalog(http)
    serve_list(http)
    half, seven = make_job("10.5", "US"), make_job("7", "US")
    result = await make_client().fetch_group(SKU, [half, seven])
    assert (price(result, half).lowest_ask, price(result, half).highest_bid) == (None, 9800)
    p7 = price(result, seven)
    assert (p7.lowest_ask, p7.highest_bid, p7.last_sale) == (None, None, None)


async def test_cent_strings_become_ints(http: aioresponses, make_client: Factory) -> None:
    """Cent strings are integers in minor units."""
    serve_catalog(http)
    serve_list(http)
    job = make_job("6.5", "US")
    p = price(await make_client().fetch_group(SKU, [job]), job)
    assert (p.lowest_ask, p.highest_bid, p.last_sale) == (12000, 8000, 11000)
    assert all(type(v) is int for v in (p.lowest_ask, p.highest_bid, p.last_sale))


async def test_other_sizes_become_extra_prices(http: aioresponses, make_client: Factory) -> None:
    """Sizes no job asked for come back as extra prices keyed "US <size>"; empty ones do not."""
    serve_catalog(http)
    serve_list(http)
    result = await make_client().fetch_group(SKU, [make_job("9")])  # UK 9 = US 10
    extras = {p.size: p.lowest_ask for p in result.extra_prices}
    assert extras == {"US 6.5": 12000, "US 9": 10400, "US 10.5": None}


async def test_region_and_consigned_params(http: aioresponses, make_client: Factory) -> None:
    """region US sends region_id=1; consigned=true sends consigned=true and drops other rows."""
    serve_catalog(http)
    serve_list(http, "availabilities_consigned.json")
    job = make_job("10", "US")
    p = price(await make_client(region="US", consigned="true").fetch_group(SKU, [job]), job)
    [(url, _)] = requests_to(http, f"/availabilities/{CATALOG_ID}")
    assert dict(url.query) == {"region_id": "1", "consigned": "true"}
    assert (p.lowest_ask, p.highest_bid, p.last_sale) == (9600, 10500, 11500)


async def test_global_region_sends_no_region_id(http: aioresponses, make_client: Factory) -> None:
    """region GLOBAL and consigned any send neither parameter."""
    serve_catalog(http)
    serve_list(http)
    await make_client(region="GLOBAL").fetch_group(SKU, [make_job("9")])
    [(url, _)] = requests_to(http, f"/availabilities/{CATALOG_ID}")
    assert dict(url.query) == {}


async def test_consigned_any_merges_rows(http: aioresponses, make_client: Factory) -> None:
    """With consigned "any", a size's two rows merge: lowest ask, highest bid, lower last sale."""
    serve_catalog(http)
    serve_list(http, "availabilities_consigned.json")
    ten, nine = make_job("10", "US"), make_job("9", "US")
    result = await make_client().fetch_group(SKU, [ten, nine])
    p10, p9 = price(result, ten), price(result, nine)
    assert (p10.lowest_ask, p10.highest_bid, p10.last_sale) == (8900, 10500, 10800)
    assert (p9.lowest_ask, p9.highest_bid, p9.last_sale) == (10400, 9000, 9900)


async def test_size_absent_from_list_falls_back_per_size(http: aioresponses,
                                                         make_client: Factory) -> None:
    """US 11 is not in the list: one per-size availability call prices it."""
    serve_catalog(http)
    serve_list(http)
    http.get(ONE_RE, payload=fixture("availability_single.json"))
    job = make_job("11", "US")
    p = price(await make_client().fetch_group(SKU, [job]), job)
    assert (p.lowest_ask, p.highest_bid, p.last_sale) == (13100, None, 12500)
    [(url, _)] = requests_to(http, "/pricing_insights/availability")
    assert dict(url.query) == {
        "catalog_id": CATALOG_ID, "size": "11", "product_condition": "PRODUCT_CONDITION_NEW",
        "packaging_condition": "PACKAGING_CONDITION_GOOD_CONDITION", "region_id": "3"}


async def test_list_404_falls_back_per_size(http: aioresponses, make_client: Factory,
                                            budget: CountingBudget) -> None:
    """A 404 from availabilities (fresh catalog id) prices each size with its own call."""
    serve_catalog(http)
    http.get(LIST_RE, status=404, payload=fixture("error_404.json"))
    http.get(ONE_RE, payload=fixture("availability_single.json"), repeat=True)
    jobs = [make_job("9"), make_job("11", "US")]
    result = await make_client().fetch_group(SKU, jobs)
    assert [price(result, j).lowest_ask for j in jobs] == [13100, 13100]
    sizes = sorted(url.query["size"] for url, _ in requests_to(http, "/availability"))
    assert sizes == ["10", "11"]
    assert budget.spent == 4 and len(requests_to(http, "/catalog")) == 1


async def test_womens_size_on_a_mens_item_is_the_mens_size(http: aioresponses,
                                                            make_client: Factory) -> None:
    """US 11W asked of a men's Dunk is US M 9.5 (Nike US W = US M + 1.5), never men's 11: the
    suffix names the scale, and dropping it priced a shoe 1.5 sizes larger (issue 13)."""
    serve_catalog(http)
    serve_list(http)
    http.get(ONE_RE, payload=fixture("availability_single.json"))
    job = make_job("11W", "US")
    p = price(await make_client().fetch_group(SKU, [job]), job)
    assert p.size == "US 11W"
    [(url, _)] = requests_to(http, "/availability")
    assert url.query["size"] == "9.5"


def _womens_catalog() -> Any:
    """The Dunk's catalog answer as a women's item (Alias prices it in US W)."""
    body = fixture("catalog_search.json")
    for item in body["catalog_items"]:
        item["gender"] = "women"
        for entry in item["allowed_sizes"]:
            entry["value"] = entry["us_size_equivalent"] = entry["value"] + 1.5
    return body


async def test_womens_item_takes_w_as_is_and_converts_mens(http: aioresponses,
                                                           make_client: Factory) -> None:
    """On a women's item, US 8.5W is size 8.5 and a bare (men's) US 7 is also 8.5W."""
    http.get(CATALOG_RE, payload=_womens_catalog())
    serve_list(http)
    http.get(ONE_RE, payload=fixture("availability_single.json"), repeat=True)
    w, m = make_job("8.5W", "US"), make_job("7", "US")
    result = await make_client().fetch_group(SKU, [w, m])
    assert price(result, w).lowest_ask == price(result, m).lowest_ask
    assert {url.query["size"] for url, _ in requests_to(http, "/availability")} == {"8.5"}


async def test_womens_uk_uses_the_womens_chart(http: aioresponses, make_client: Factory) -> None:
    """Nike women's UK = US W - 2.5: UK 5.5 on a women's item is 8W (the men's UK column
    would have said 7.5W)."""
    http.get(CATALOG_RE, payload=_womens_catalog())
    serve_list(http)
    http.get(ONE_RE, payload=fixture("availability_single.json"))
    job = make_job("5.5")
    price(await make_client().fetch_group(SKU, [job]), job)
    [(url, _)] = requests_to(http, "/availability")
    assert url.query["size"] == "8"


async def test_stockx_cached_chart_converts_womens_first(http: aioresponses, store: Store,
                                                         make_client: Factory) -> None:
    """A brand with no chart (Salomon) converts US 10.5W through StockX's cached US W labels,
    and without them the job fails saying what to enqueue instead."""
    serve_catalog(http, "catalog_search_salomon.json")
    serve_list(http, "availabilities_salomon.json")
    job = make_job("11.5W", "US", sku="L41086600")
    result = await make_client().fetch_group("L41086600", [job])
    err = result.outcomes[job.id]
    assert isinstance(err, SizeError) and "women's" in str(err) and "enqueue" in str(err)
    await store.put_catalog("stockx", "L41086600", product_id="c6a2", brand="Salomon", data={
        "format": 1, "variants": [
            {"id": "v2", "value": "10", "conversions": [
                ["us m", "US M 10"], ["uk", "UK 9.5"], ["us w", "US W 11.5"]]}]})
    p = price(await make_client().fetch_group("L41086600", [job]), job)
    assert (p.size, p.lowest_ask) == ("US 11.5W", 15500)


async def test_youth_size_without_a_chart_is_a_clear_error(http: aioresponses, store: Store,
                                                           make_client: Factory) -> None:
    """US 5Y on a men's item of a brand without a grade-school chart cannot be converted."""
    serve_catalog(http, "catalog_search_salomon.json")
    job = make_job("5Y", "US", sku="L41086600")
    result = await make_client().fetch_group("L41086600", [job])
    err = result.outcomes[job.id]
    assert isinstance(err, SizeError) and "youth" in str(err)
    assert not requests_to(http, "/availabilities/xt-6-black-phantom-l41086600")


async def test_non_us_size_unit_sends_the_us_equivalent(http: aioresponses,
                                                        make_client: Factory) -> None:
    """An item sized in EU is asked for by its allowed_sizes' us_size_equivalent, and a US size
    that no equivalent carries is refused without a price call."""
    body = fixture("catalog_search.json")
    for item in body["catalog_items"]:
        item["size_unit"] = "SIZE_UNIT_EU"
        for entry in item["allowed_sizes"]:
            entry["us_size_equivalent"], entry["value"] = entry["value"], entry["value"] + 34
    http.get(CATALOG_RE, payload=body)
    http.get(LIST_RE, payload={"variants": []})
    http.get(ONE_RE, payload=fixture("availability_single.json"))
    ok, bad = make_job("10", "US"), make_job("16", "US")
    result = await make_client().fetch_group(SKU, [ok, bad])
    assert price(result, ok).lowest_ask == 13100
    assert isinstance(result.outcomes[bad.id], SizeError)
    [(url, _)] = requests_to(http, "/availability")
    assert url.query["size"] == "10"


async def test_catalog_id_is_quoted_in_the_path(http: aioresponses, make_client: Factory) -> None:
    """A catalog_id from Alias's answer stays one path segment, whatever it holds."""
    body = fixture("catalog_search.json")
    for item in body["catalog_items"]:
        item["catalog_id"] = "../../admin?x=1"
    http.get(CATALOG_RE, payload=body)
    http.get(LIST_RE, payload=fixture("availabilities.json"))
    await make_client().fetch_group(SKU, [make_job("10", "US")])
    [(url, _)] = [(u, k) for u, k in requests_to(http, "") if "availabilities" in u.raw_path]
    assert url.raw_path.split("/")[-2:] == ["availabilities", "..%2F..%2Fadmin%3Fx=1"]
    assert dict(url.query) == {"region_id": "3"}


# ---- sizes -----------------------------------------------------------------------------------


async def test_uk_and_eu_convert_through_brand_table(http: aioresponses,
                                                     make_client: Factory) -> None:
    """Without StockX data, Nike UK 9 and EU 44 are both US 10 by the brand chart."""
    serve_catalog(http)
    serve_list(http)
    uk, eu = make_job("9"), make_job("44", "EU")
    result = await make_client().fetch_group(SKU, [uk, eu])
    assert price(result, uk).lowest_ask == price(result, eu).lowest_ask == 9600
    assert (price(result, uk).size, price(result, eu).size) == ("9", "EU 44")


async def test_uk_converts_through_stored_stockx_catalog(http: aioresponses, store: Store,
                                                         make_client: Factory) -> None:
    """A brand with no chart (Salomon) converts UK 9.5 -> US 10 via the StockX catalog entry."""
    await store.put_catalog("stockx", "L41086600", product_id="c6a2-…", brand="Salomon", data={
        "format": 1, "url_key": "salomon-xt-6-black-phantom",
        "variants": [
            {"id": "v1", "value": "9.5", "conversions": [
                ["us m", "US M 9.5"], ["uk", "UK 9"], ["eu", "EU 43 1/3"]]},
            {"id": "v2", "value": "10", "conversions": [
                ["us m", "US M 10"], ["uk", "UK 9.5"], ["eu", "EU 44"]]},
        ]})
    serve_catalog(http, "catalog_search_salomon.json")
    serve_list(http, "availabilities_salomon.json")
    job = make_job("9.5", sku="L41086600")
    p = price(await make_client().fetch_group("L41086600", [job]), job)
    assert (p.size, p.lowest_ask, p.highest_bid) == ("9.5", 15500, 13000)


async def test_stockx_catalog_in_api_shape_is_read(http: aioresponses, store: Store,
                                                   make_client: Factory) -> None:
    """A StockX entry holding raw API variants (variantValue + sizeChart) converts too."""
    await store.put_catalog("stockx", "L41086600", product_id="c6a2-…", data={"variants": [
        {"variantId": "v2", "variantValue": "10", "sizeChart": {
            "defaultConversion": {"size": "10", "type": "us m"},
            "availableConversions": [{"size": "UK 9.5", "type": "uk"},
                                     {"size": "EU 44", "type": "eu"}]}}]})
    serve_catalog(http, "catalog_search_salomon.json")
    serve_list(http, "availabilities_salomon.json")
    job = make_job("44", "EU", sku="L41086600")
    assert price(await make_client().fetch_group("L41086600", [job]), job).lowest_ask == 15500


async def test_brand_without_chart_or_stockx_data_is_size_error(http: aioresponses,
                                                                make_client: Factory) -> None:
    """No StockX entry and no chart for the brand: a SizeError, and no price call."""
    serve_catalog(http, "catalog_search_salomon.json")
    job = make_job("9.5", sku="L41086600")
    result = await make_client().fetch_group("L41086600", [job])
    assert isinstance(result.outcomes[job.id], SizeError)
    assert "enqueue the US size" in str(result.outcomes[job.id])
    assert requests_to(http, "/availabilities/xt-6-black-phantom-l41086600") == []


async def test_uk6_is_ambiguous_naming_both_eu_sizes(http: aioresponses,
                                                     make_client: Factory) -> None:
    """Nike UK 6 fails with a SizeError naming EU 39 and EU 40; the group's other job is priced."""
    serve_catalog(http)
    serve_list(http)
    uk6, uk9 = make_job("6"), make_job("9")
    result = await make_client().fetch_group(SKU, [uk6, uk9])
    err = result.outcomes[uk6.id]
    assert isinstance(err, SizeError)
    assert "EU 39" in str(err) and "EU 40" in str(err)
    assert price(result, uk9).lowest_ask == 9600


async def test_eu_size_resolves_uk6(http: aioresponses, make_client: Factory) -> None:
    """EU 39 picks Nike's US 6.5 (one of the two UK 6 variants)."""
    serve_catalog(http)
    serve_list(http)
    job = make_job("39", "EU")
    assert price(await make_client().fetch_group(SKU, [job]), job).lowest_ask == 12000


async def test_size_outside_allowed_sizes_is_size_error(http: aioresponses,
                                                        make_client: Factory) -> None:
    """US 16 is not among the item's allowed sizes: SizeError without a price call."""
    serve_catalog(http)
    job = make_job("16", "US")
    result = await make_client().fetch_group(SKU, [job])
    assert isinstance(result.outcomes[job.id], SizeError)
    assert total_requests(http) == 1


async def test_sizeless_job_on_multi_size_item_is_size_error(http: aioresponses,
                                                             make_client: Factory) -> None:
    """A job without a size cannot be priced on a sneaker with many sizes."""
    serve_catalog(http)
    job = make_job(None)
    result = await make_client().fetch_group(SKU, [job])
    assert isinstance(result.outcomes[job.id], SizeError)


# ---- errors ----------------------------------------------------------------------------------


async def test_missing_token_is_auth_error_without_a_request(http: aioresponses,
                                                             make_client: Factory,
                                                             budget: CountingBudget) -> None:
    """No API token: AuthError naming ALIAS_API_TOKEN, nothing sent or spent."""
    with pytest.raises(AuthError) as info:
        await make_client(token="").fetch_group(SKU, [make_job("9")])
    assert info.value.credential == "ALIAS_API_TOKEN"
    assert budget.spent == 0 and total_requests(http) == 0


async def test_400_is_permanent_with_message(http: aioresponses, make_client: Factory) -> None:
    """HTTP 400 is a PermanentError carrying Alias's message."""
    http.get(CATALOG_RE, status=400, payload=fixture("error_400.json"))
    with pytest.raises(PermanentError, match="invalid catalog_id") as info:
        await make_client().fetch_group(SKU, [make_job("9")])
    assert info.value.status == 400


@pytest.mark.parametrize(("status", "name"), [(401, "error_401.json"), (403, "error_403.json")])
async def test_401_403_are_auth_errors(http: aioresponses, make_client: Factory, status: int,
                                       name: str) -> None:
    """401 and 403 are AuthError naming ALIAS_API_TOKEN."""
    http.get(CATALOG_RE, status=status, payload=fixture(name))
    with pytest.raises(AuthError) as info:
        await make_client().fetch_group(SKU, [make_job("9")])
    assert info.value.credential == "ALIAS_API_TOKEN" and info.value.status == status


async def test_404_on_search_is_not_found(http: aioresponses, make_client: Factory) -> None:
    """A 404 from the catalog is NotFound."""
    http.get(CATALOG_RE, status=404, payload=fixture("error_404.json"))
    with pytest.raises(NotFound):
        await make_client().fetch_group(SKU, [make_job("9")])


async def test_429_is_rate_limited_with_retry_after(http: aioresponses,
                                                    make_client: Factory) -> None:
    """429 is RateLimited, with Retry-After when sent and None when not."""
    http.get(CATALOG_RE, status=429, payload=fixture("error_429.json"),
             headers={"Retry-After": "30"})
    http.get(CATALOG_RE, status=429, payload=fixture("error_429.json"))
    with pytest.raises(RateLimited) as first:
        await make_client().fetch_group(SKU, [make_job("9")])
    with pytest.raises(RateLimited) as second:
        await make_client().fetch_group(SKU, [make_job("9")])
    assert (first.value.retry_after_s, second.value.retry_after_s) == (30.0, None)


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
async def test_5xx_and_408_are_transient(http: aioresponses, make_client: Factory,
                                         status: int) -> None:
    """408 and 5xx (here an HTML error page) are TransientError."""
    http.get(CATALOG_RE, status=status, body="<html><body>Service Unavailable</body></html>",
             content_type="text/html")
    with pytest.raises(TransientError) as info:
        await make_client().fetch_group(SKU, [make_job("9")])
    assert info.value.status == status


async def test_timeout_is_transient(http: aioresponses, make_client: Factory) -> None:
    """A timeout is a TransientError."""
    http.get(CATALOG_RE, exception=TimeoutError())
    with pytest.raises(TransientError, match="timed out"):
        await make_client().fetch_group(SKU, [make_job("9")])


async def test_truncated_json_is_transient(http: aioresponses, make_client: Factory) -> None:
    """A truncated JSON body is a TransientError."""
    serve_catalog(http)
    http.get(LIST_RE, body='{"variants": [{"size": 10, "product_condition": "PRODUCT_CON',
             content_type="application/json")
    with pytest.raises(TransientError, match="JSON"):
        await make_client().fetch_group(SKU, [make_job("9")])


async def test_errors_are_logged_with_request_id(http: aioresponses,
                                                 make_client: Factory) -> None:
    """A failed request logs alias_request_failed with the x-request-id header."""
    http.get(CATALOG_RE, status=503, payload={"code": 14, "message": "unavailable"},
             headers={"x-request-id": "req-7f3a"})
    with capture_logs() as logs, pytest.raises(TransientError):
        await make_client().fetch_group(SKU, [make_job("9")])
    [event] = [e for e in logs if e["event"] == "alias_request_failed"]
    assert event["request_id"] == "req-7f3a" and event["status"] == 503 and event["code"] == 14


async def test_fallback_failure_keeps_prices_already_had(http: aioresponses,
                                                         make_client: Factory) -> None:
    """A 429 on a per-size fallback fails that job RateLimited; the listed size keeps its price."""
    serve_catalog(http)
    serve_list(http)
    http.get(ONE_RE, status=429, payload=fixture("error_429.json"))
    listed, missing = make_job("9"), make_job("11", "US")
    result = await make_client().fetch_group(SKU, [missing, listed])
    assert isinstance(result.outcomes[missing.id], RateLimited)
    assert price(result, listed).lowest_ask == 9600


async def test_budget_exhausted_propagates_before_sending(http: aioresponses, session: Any,
                                                          store: Store, clock: FakeClock) -> None:
    """A spent budget raises BudgetExhausted and sends nothing."""
    cfg = parse_config({}, env={"ALIAS_API_TOKEN": "goatapi_test"}).providers["alias"]
    client = AliasClient(ProviderContext(cfg, session, CountingBudget(allow=0), store, clock))
    with pytest.raises(BudgetExhausted):
        await client.fetch_group(SKU, [make_job("9")])
    assert total_requests(http) == 0


def test_unknown_region_is_refused_by_the_config() -> None:
    """An unknown region is a config error naming providers.alias.region, before any call."""
    from marketd.config import parse_config
    from marketd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"providers\.alias\.region"):
        parse_config({"providers": {"alias": {"region": "MARS"}}}, env={})
