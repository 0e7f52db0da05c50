"""The provider simulator, over loopback HTTP: shapes, auth, limits, faults and prices."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from marketd.clock import FakeClock
from marketd.simulator import (
    NO_MARKET_SKU,
    SIM_STATE,
    ProviderOptions,
    SimulatorOptions,
    create_simulator_app,
    product_id,
    run_simulator,
)

OPEN = ProviderOptions()  # no limits, so tests can call freely
UNLIMITED = SimulatorOptions(stockx=OPEN, alias=OPEN, ebay=OPEN)
PANDA = product_id("DD1391-100")
PANDA_ALIAS = "nike-dunk-low-panda-dd1391-100"
ALIAS = {"Authorization": "Bearer goatapi_test"}
BASIC = "Basic " + base64.b64encode(b"client-id:client-secret").decode()

Start = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Start]:
    clients: list[TestClient[Any, Any]] = []

    async def start(options: SimulatorOptions = UNLIMITED) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(
            TestServer(create_simulator_app(options, clock)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def stockx_headers(client: TestClient[Any, Any]) -> dict[str, str]:
    resp = await client.post("/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": "rt", "client_id": "cid",
        "client_secret": "secret", "audience": "gateway.stockx.com"})
    token = (await resp.json())["access_token"]
    return {"x-api-key": "key", "Authorization": f"Bearer {token}"}


async def ebay_headers(client: TestClient[Any, Any]) -> dict[str, str]:
    resp = await client.post("/identity/v1/oauth2/token", headers={"Authorization": BASIC},
                             data={"grant_type": "client_credentials",
                                   "scope": "https://api.ebay.com/oauth/api_scope"})
    token = (await resp.json())["access_token"]
    return {"Authorization": f"Bearer {token}", "X-EBAY-C-MARKETPLACE-ID": "EBAY_GB"}


async def get_json(client: TestClient[Any, Any], path: str, headers: dict[str, str],
                   status: int = 200, **params: Any) -> Any:
    resp = await client.get(path, headers=headers, params=params)
    assert resp.status == status, await resp.text()
    return await resp.json()


def by_value(variants: list[dict[str, Any]], value: str) -> dict[str, Any]:
    return next(v for v in variants if v["variantValue"] == value)


def labels(variant: dict[str, Any]) -> list[str]:
    return [c["size"] for c in variant["sizeChart"]["availableConversions"]]


# ---- StockX: auth -------------------------------------------------------------------------------


async def test_stockx_refresh_grant_issues_a_12_hour_token(sim: Start) -> None:
    """POST /oauth/token with a refresh token answers an access token good for 43200 s."""
    client = await sim()
    resp = await client.post("/oauth/token", data={"grant_type": "refresh_token",
                                                   "refresh_token": "rt", "client_id": "cid"})
    body = await resp.json()
    assert resp.status == 200
    assert body["expires_in"] == 43200 and body["token_type"] == "Bearer" and body["access_token"]


async def test_stockx_refuses_client_credentials_and_unknown_refresh_tokens(sim: Start) -> None:
    """client_credentials is refused; a refresh token other than the configured one is invalid."""
    client = await sim(SimulatorOptions(stockx=OPEN, stockx_refresh_token="the-one"))
    resp = await client.post("/oauth/token", data={"grant_type": "client_credentials",
                                                   "client_id": "cid"})
    assert resp.status == 403 and (await resp.json())["error"] == "unauthorized_client"
    resp = await client.post("/oauth/token", data={"grant_type": "refresh_token",
                                                   "refresh_token": "other", "client_id": "cid"})
    assert resp.status == 403 and (await resp.json())["error"] == "invalid_grant"


async def test_stockx_requires_api_key_and_an_issued_bearer_token(sim: Start) -> None:
    """Without x-api-key the gateway answers 403; without a token it issued, 401."""
    client = await sim()
    good = await stockx_headers(client)
    body = await get_json(client, "/v2/catalog/search", {"Authorization": good["Authorization"]},
                          403, query="dunk")
    assert body == {"statusCode": 403, "message": "Forbidden"}
    await get_json(client, "/v2/catalog/search", {"x-api-key": "key"}, 401, query="dunk")
    await get_json(client, "/v2/catalog/search",
                   {"x-api-key": "key", "Authorization": "Bearer made-up"}, 401, query="dunk")
    await get_json(client, "/v2/catalog/search", good, query="dunk")


async def test_stockx_accepts_any_token_when_not_strict(sim: Start) -> None:
    """With strict_tokens off, any non-empty bearer token passes."""
    client = await sim(SimulatorOptions(stockx=OPEN, strict_tokens=False))
    await get_json(client, "/v2/catalog/search",
                   {"x-api-key": "key", "Authorization": "Bearer anything"}, query="dunk")


async def test_stockx_token_expires_after_12_hours(sim: Start, clock: FakeClock) -> None:
    """An access token stops working once its 43200 s have passed."""
    client = await sim()
    headers = await stockx_headers(client)
    clock.advance(43_199)
    await get_json(client, "/v2/catalog/search", headers, query="dunk")
    clock.advance(1)
    await get_json(client, "/v2/catalog/search", headers, 401, query="dunk")


# ---- StockX: catalog ----------------------------------------------------------------------------


async def test_stockx_search_default_page_size_is_one(sim: Start) -> None:
    """Without pageSize, search answers one product and says there are more."""
    client = await sim()
    body = await get_json(client, "/v2/catalog/search", await stockx_headers(client),
                          query="DD1391-100")
    assert body["pageSize"] == 1 and body["pageNumber"] == 1
    assert len(body["products"]) == 1 and body["count"] > 1 and body["hasNextPage"] is True


async def test_stockx_search_is_fuzzy_and_exact_match_is_not_first(sim: Start) -> None:
    """A SKU search returns its neighbours too, in an order where the exact match is not first."""
    client = await sim()
    body = await get_json(client, "/v2/catalog/search", await stockx_headers(client),
                          query="DD1391-100", pageSize=50)
    styles = [p["styleId"] for p in body["products"]]
    assert {"DD1391-100", "DD1390-100", "DD1391-101"} <= set(styles)
    assert styles[0] != "DD1391-100"
    panda = next(p for p in body["products"] if p["styleId"] == "DD1391-100")
    assert panda["productId"] == PANDA
    assert panda["productAttributes"]["retailPrice"] == 115


async def test_stockx_search_validates_paging(sim: Start) -> None:
    """pageSize above 50 and an empty query are 400s in StockX's error shape."""
    client = await sim()
    headers = await stockx_headers(client)
    body = await get_json(client, "/v2/catalog/search", headers, 400, query="dunk", pageSize=51)
    assert body["statusCode"] == 400 and "pageSize" in body["errorMessage"]
    await get_json(client, "/v2/catalog/search", headers, 400, query="")


async def test_stockx_product_and_unknown_product(sim: Start) -> None:
    """A product carries its size chart's conversion types; an unknown id is a 404."""
    client = await sim()
    headers = await stockx_headers(client)
    body = await get_json(client, f"/v2/catalog/products/{PANDA}", headers)
    assert body["styleId"] == "DD1391-100"
    assert {"name": "UK", "type": "uk"} in body["sizeChart"]["availableConversions"]
    assert "variants" not in body
    missing = await get_json(client, f"/v2/catalog/products/{product_id('NOPE-1')}", headers, 404)
    assert missing == {"statusCode": 404, "errorMessage": "Product not found"}


async def test_stockx_nike_variants_show_uk_6_twice(sim: Start) -> None:
    """Nike's UK 6 is two variants, told apart as "UK 6 (EU 39)" and "UK 6 (EU 40)"."""
    client = await sim()
    variants = await get_json(client, f"/v2/catalog/products/{PANDA}/variants",
                              await stockx_headers(client))
    assert isinstance(variants, list) and len(variants) == 22
    assert "UK 6 (EU 39)" in labels(by_value(variants, "6.5"))
    assert "UK 6 (EU 40)" in labels(by_value(variants, "7"))
    ten = by_value(variants, "10")
    assert ten["sizeChart"]["defaultConversion"] == {"size": "10", "type": "us m"}
    assert {"US M 10", "UK 9", "EU 44", "CM 28", "KR 280", "US W 11.5"} == set(labels(ten))
    assert ten["gtins"][0]["type"] == "UPC" and len(ten["gtins"][0]["identifier"]) == 12


async def test_stockx_adidas_uses_eu_thirds(sim: Start) -> None:
    """adidas sizes are UK = US - 0.5 with EU in thirds (US 9 = UK 8.5 = EU 42 2/3)."""
    client = await sim()
    variants = await get_json(client, f"/v2/catalog/products/{product_id('B75806')}/variants",
                              await stockx_headers(client))
    assert {"UK 8.5", "EU 42 2/3"} <= set(labels(by_value(variants, "9")))
    assert {"UK 6.5", "EU 40"} <= set(labels(by_value(variants, "7")))


async def test_stockx_womens_and_grade_school_sizes_carry_suffixes(sim: Start) -> None:
    """Women's sizes read "8.5W" (us w), grade-school "7Y" (us), with their UK/EU labels."""
    client = await sim()
    headers = await stockx_headers(client)
    women = await get_json(client, f"/v2/catalog/products/{product_id('DD1503-101')}/variants",
                           headers)
    w85 = by_value(women, "8.5W")
    assert w85["sizeChart"]["defaultConversion"]["type"] == "us w"
    assert {"US W 8.5", "UK 6", "EU 40"} <= set(labels(w85))
    gs = await get_json(client, f"/v2/catalog/products/{product_id('CW1590-100')}/variants",
                        headers)
    y7 = by_value(gs, "7Y")
    assert y7["sizeChart"]["defaultConversion"]["type"] == "us"
    assert "UK 6 (EU 40)" in labels(y7)


async def test_stockx_variant_of_another_product_is_400(sim: Start) -> None:
    """Asking for a variant under a product it does not belong to is a 400."""
    client = await sim()
    headers = await stockx_headers(client)
    other = await get_json(client, f"/v2/catalog/products/{product_id('B75806')}/variants",
                           headers)
    await get_json(client, f"/v2/catalog/products/{PANDA}/variants/{other[0]['variantId']}",
                   headers, 400)


async def test_stockx_market_data_in_the_asked_currency(sim: Start) -> None:
    """Amounts are whole-unit strings in currencyCode (USD by default), null where no ask."""
    client = await sim()
    headers = await stockx_headers(client)
    variants = await get_json(client, f"/v2/catalog/products/{PANDA}/variants", headers)
    ten = by_value(variants, "10")["variantId"]
    path = f"/v2/catalog/products/{PANDA}/variants/{ten}/market-data"
    usd = await get_json(client, path, headers)
    gbp = await get_json(client, path, headers, currencyCode="GBP")
    assert usd["currencyCode"] == "USD" and gbp["currencyCode"] == "GBP"
    assert gbp["lowestAskAmount"].isdigit() and gbp["highestBidAmount"].isdigit()
    assert int(gbp["lowestAskAmount"]) < int(usd["lowestAskAmount"])
    assert gbp["standardMarketData"]["lowestAsk"] == gbp["lowestAskAmount"]
    every = await get_json(client, f"/v2/catalog/products/{PANDA}/market-data", headers,
                           currencyCode="GBP")
    assert len(every) == len(variants)
    smallest, largest = every[0], every[-1]
    assert smallest["lowestAskAmount"] is None and smallest["highestBidAmount"] is None
    assert largest["lowestAskAmount"] is None and largest["highestBidAmount"] is not None


async def test_stockx_country_parameter_is_refused(sim: Start) -> None:
    """The deprecated country parameter answers 400 "not supported anymore"."""
    client = await sim()
    body = await get_json(client, f"/v2/catalog/products/{PANDA}/market-data",
                          await stockx_headers(client), 400, currencyCode="GBP", country="GB")
    assert body["statusCode"] == 400 and "not supported anymore" in body["errorMessage"]


async def test_stockx_no_market_product_has_only_nulls(sim: Start) -> None:
    """The no-market product is found, but every amount of every size is null."""
    client = await sim()
    every = await get_json(client, f"/v2/catalog/products/{product_id(NO_MARKET_SKU)}/market-data",
                           await stockx_headers(client), currencyCode="GBP")
    assert every and all(m["lowestAskAmount"] is None and m["highestBidAmount"] is None
                         for m in every)


async def test_prices_drift_with_time_and_seed(sim: Start, clock: FakeClock) -> None:
    """Prices hold within a clock hour, move as hours pass, and differ between seeds."""
    client = await sim()
    headers = await stockx_headers(client)
    path = f"/v2/catalog/products/{PANDA}/market-data"

    async def asks(c: TestClient[Any, Any], h: dict[str, str]) -> list[str | None]:
        return [m["lowestAskAmount"] for m in await get_json(c, path, h, currencyCode="GBP")]

    first = await asks(client, headers)
    clock.advance(1800)
    assert await asks(client, headers) == first
    clock.advance(2 * 86400)
    later = await asks(client, await stockx_headers(client))
    assert later != first and [a is None for a in later] == [a is None for a in first]
    other = await sim(SimulatorOptions(seed=7, stockx=OPEN))
    assert await asks(other, await stockx_headers(other)) != later


# ---- Alias --------------------------------------------------------------------------------------


async def test_alias_requires_a_bearer_token(sim: Start) -> None:
    """Without a token Alias answers 401 {code, message, details}, with an x-request-id."""
    client = await sim()
    resp = await client.get("/api/v1/test")
    body = await resp.json()
    assert resp.status == 401 and body["code"] == 16 and body["details"] == []
    assert resp.headers["x-request-id"]
    assert await get_json(client, "/api/v1/test", ALIAS) == {"ok": True}


async def test_alias_catalog_search_finds_the_sku_written_either_way(sim: Start) -> None:
    """A search with "DD1391-100" or "DD1391 100" finds the item, whose sku has a space."""
    client = await sim()
    for query in ("DD1391-100", "DD1391 100"):
        body = await get_json(client, "/api/v1/catalog", ALIAS, query=query, limit=50)
        skus = [item["sku"] for item in body["catalog_items"]]
        assert "DD1391 100" in skus and "DD1391 101" in skus
        assert body["has_more"] is False and body["next_pagination_token"] == ""


async def test_alias_catalog_item_and_unknown_item(sim: Start) -> None:
    """A catalog item lists its allowed US sizes; an unknown catalog_id is 404 code 5."""
    client = await sim()
    body = await get_json(client, f"/api/v1/catalog/{PANDA_ALIAS}", ALIAS)
    item = body["catalog_item"]
    assert item["sku"] == "DD1391 100" and item["size_unit"] == "SIZE_UNIT_US"
    assert {"display_name": "10", "value": 10, "us_size_equivalent": 10} in item["allowed_sizes"]
    missing = await get_json(client, "/api/v1/catalog/no-such-thing", ALIAS, 404)
    assert missing["code"] == 5


async def test_alias_availabilities_cover_conditions_and_sizes(sim: Start) -> None:
    """All sizes come in several condition/packaging pairs, as cents strings; "0" means none."""
    client = await sim()
    body = await get_json(client, f"/api/v1/pricing_insights/availabilities/{PANDA_ALIAS}", ALIAS)
    variants = body["variants"]
    sizes = {v["size"] for v in variants}
    assert len(sizes) == 22 and len(variants) > len(sizes)
    assert all("consigned" not in v for v in variants)
    new_good = [v for v in variants if v["product_condition"] == "PRODUCT_CONDITION_NEW"
                and v["packaging_condition"] == "PACKAGING_CONDITION_GOOD_CONDITION"]
    assert new_good[0]["availability"]["lowest_listing_price_cents"] == "0"  # smallest size
    ten = next(v for v in new_good if v["size"] == 10)["availability"]
    assert ten["lowest_listing_price_cents"].isdigit() and ten["lowest_listing_price_cents"] != "0"
    consigned = await get_json(client, f"/api/v1/pricing_insights/availabilities/{PANDA_ALIAS}",
                               ALIAS, consigned="true")
    assert all(v["consigned"] is True for v in consigned["variants"])


async def test_alias_availability_needs_a_size(sim: Start) -> None:
    """The one-variant price needs size: without it, 400 code 3 "Missing parameter: input.Size"."""
    client = await sim()
    params: dict[str, Any] = {
        "catalog_id": PANDA_ALIAS, "product_condition": "PRODUCT_CONDITION_NEW",
        "packaging_condition": "PACKAGING_CONDITION_GOOD_CONDITION"}
    body = await get_json(client, "/api/v1/pricing_insights/availability", ALIAS, 400, **params)
    assert body == {"code": 3, "message": "Missing parameter: input.Size", "details": []}
    body = await get_json(client, "/api/v1/pricing_insights/availability", ALIAS, size="10",
                          **params)
    assert set(body["availability"]) == {"lowest_listing_price_cents", "highest_offer_price_cents",
                                         "last_sold_listing_price_cents",
                                         "global_indicator_price_cents"}


async def test_alias_regions_are_the_observed_ids_or_global(sim: Start) -> None:
    """region_id 1-3 (US, EU, UK) and empty (global) answer; 4 (no source) is a 400."""
    client = await sim()
    path = f"/api/v1/pricing_insights/availabilities/{PANDA_ALIAS}"
    for region in ("1", "2", "3", ""):
        await get_json(client, path, ALIAS, region_id=region)
    await get_json(client, path, ALIAS, 400, region_id="4")


async def test_alias_recent_sales(sim: Start) -> None:
    """Recent sales of one size come newest first, in cents; none for the no-market product."""
    client = await sim()
    body = await get_json(client, "/api/v1/pricing_insights/recent_sales", ALIAS,
                          catalog_id=PANDA_ALIAS, size="10", limit="5")
    sales = body["recent_sales"]
    assert 0 < len(sales) <= 5 and all(s["size"] == 10 for s in sales)
    assert sales == sorted(sales, key=lambda s: s["purchased_at"], reverse=True)
    await get_json(client, "/api/v1/pricing_insights/recent_sales", ALIAS, 400,
                   catalog_id=PANDA_ALIAS)


# ---- eBay ---------------------------------------------------------------------------------------


async def test_ebay_token_needs_basic_auth(sim: Start) -> None:
    """client_credentials with Basic auth gives a 2-hour application token; without it, 401."""
    client = await sim()
    resp = await client.post("/identity/v1/oauth2/token", data={"grant_type": "client_credentials"})
    assert resp.status == 401 and (await resp.json())["error"] == "invalid_client"
    resp = await client.post("/identity/v1/oauth2/token", headers={"Authorization": BASIC},
                             data={"grant_type": "client_credentials"})
    body = await resp.json()
    assert body["expires_in"] == 7200 and body["token_type"] == "Application Access Token"


async def test_ebay_search_needs_token_and_marketplace(sim: Start) -> None:
    """Browse search without a token is 401 errorId 1001; without the marketplace header, 409."""
    client = await sim()
    headers = await ebay_headers(client)
    path = "/buy/browse/v1/item_summary/search"
    body = await get_json(client, path, {"X-EBAY-C-MARKETPLACE-ID": "EBAY_GB"}, 401, q="dunk")
    assert body["errors"][0]["errorId"] == 1001
    no_marketplace = {"Authorization": headers["Authorization"]}
    await get_json(client, path, no_marketplace, 409, q="dunk")
    body = await get_json(client, path, headers, 400)
    assert body["errors"][0]["errorId"] == 12001


async def test_ebay_search_returns_listings_in_gbp(sim: Start) -> None:
    """Shoe listings mention the SKU and a UK size, cost GBP, and some are of a neighbouring
    SKU; cheap accessories (laces, crease protectors) name the SKU too, as on eBay."""
    client = await sim()
    body = await get_json(client, "/buy/browse/v1/item_summary/search", await ebay_headers(client),
                          q="DD1391-100", limit="200")
    items = body["itemSummaries"]
    assert body["total"] == len(items) > 0
    extras = ("Laces", "Crease Protectors")
    assert all("UK" in i["title"] for i in items if not any(x in i["title"] for x in extras))
    assert any(x in i["title"] for i in items for x in ("Laces", "EMPTY BOX", "Insoles"))
    assert any("DD1391-100" in i["title"] for i in items)
    assert any("DD1391-100" not in i["title"] for i in items)
    item = items[0]
    assert item["itemId"].startswith("v1|") and item["itemId"].endswith("|0")
    assert item["price"]["currency"] == "GBP" and float(item["price"]["value"]) > 0
    shipping = item["shippingOptions"][0]
    assert shipping["shippingCostType"] and shipping["shippingCost"]["currency"] == "GBP"
    assert item["buyingOptions"] and item["conditionId"] and item["condition"]
    assert item["itemWebUrl"].startswith("https://") and item["image"]["imageUrl"]
    assert item["seller"]["username"]


async def test_ebay_sort_by_price(sim: Start) -> None:
    """sort=price puts the lowest price plus shipping first."""
    client = await sim()
    body = await get_json(client, "/buy/browse/v1/item_summary/search", await ebay_headers(client),
                          q="Nike Dunk", sort="price", limit="200")
    totals = [float(i["price"]["value"]) + float(i["shippingOptions"][0]["shippingCost"]["value"])
              for i in body["itemSummaries"]]
    assert len(totals) > 5 and totals == sorted(totals)


async def test_ebay_limit_and_offset_errors_use_the_specs_ids(sim: Start) -> None:
    """A bad limit is errorId 12006 and a bad offset 12029, as the Browse spec says (12023 is
    "response too large")."""
    client = await sim()
    headers = await ebay_headers(client)
    path = "/buy/browse/v1/item_summary/search"
    body = await get_json(client, path, headers, 400, q="dunk", limit="201")
    assert body["errors"][0]["errorId"] == 12006
    body = await get_json(client, path, headers, 400, q="dunk", offset="10001")
    assert body["errors"][0]["errorId"] == 12029


async def test_ebay_aspect_filter_keeps_the_named_sizes(sim: Start) -> None:
    """aspect_filter needs its category in category_ids too; it keeps only listings whose UK
    Shoe Size is named (accessories have none)."""
    client = await sim()
    headers = await ebay_headers(client)
    path = "/buy/browse/v1/item_summary/search"
    await get_json(client, path, headers, 400, q="DD1391-100",
                   aspect_filter="categoryId:15709,UK Shoe Size:{9}")
    body = await get_json(client, path, headers, q="DD1391-100", category_ids="15709",
                          limit="200", aspect_filter="categoryId:15709,UK Shoe Size:{9|10}")
    titles = [i["title"] for i in body.get("itemSummaries", [])]
    assert titles and all(("UK 9" in t or "UK9" in t or "UK 10" in t or "UK10" in t)
                          and "Laces" not in t and "BOX" not in t for t in titles)


async def test_ebay_end_user_context_prices_shipping_for_the_buyer(sim: Start) -> None:
    """X-EBAY-C-ENDUSERCTX's country prices shipping: a listing abroad costs more to post."""
    client = await sim()
    headers = await ebay_headers(client)
    path = "/buy/browse/v1/item_summary/search"

    async def shipping(country: str) -> dict[str, float]:
        ctx = {"X-EBAY-C-ENDUSERCTX": f"contextualLocation=country%3D{country}"}
        body = await get_json(client, path, headers | ctx, q="Nike Dunk", limit="200")
        return {i["itemId"]: float(i["shippingOptions"][0]["shippingCost"]["value"])
                for i in body["itemSummaries"]}

    gb, de = await shipping("GB"), await shipping("DE")
    assert gb.keys() == de.keys() and gb != de


async def test_ebay_no_market_sku_has_no_item_summaries(sim: Start) -> None:
    """A SKU nobody sells answers total 0 and no itemSummaries key, as eBay does."""
    client = await sim()
    body = await get_json(client, "/buy/browse/v1/item_summary/search", await ebay_headers(client),
                          q=NO_MARKET_SKU)
    assert body["total"] == 0 and "itemSummaries" not in body


async def test_ebay_price_filter_needs_currency(sim: Start) -> None:
    """A price filter without priceCurrency is 400 errorId 12012; with it, prices are bounded."""
    client = await sim()
    headers = await ebay_headers(client)
    path = "/buy/browse/v1/item_summary/search"
    body = await get_json(client, path, headers, 400, q="dunk", filter="price:[50..100]")
    assert body["errors"][0]["errorId"] == 12012
    body = await get_json(client, path, headers, q="dunk", limit="200",
                          filter="price:[50..100],priceCurrency:GBP")
    assert all(50 <= float(i["price"]["value"]) <= 100 for i in body["itemSummaries"])


async def test_ebay_daily_quota_answers_2001_until_pacific_midnight(sim: Start,
                                                                   clock: FakeClock) -> None:
    """Past the daily quota eBay answers 429 errorId 2001 until midnight Pacific time."""
    client = await sim(SimulatorOptions(ebay=ProviderOptions(daily_limit=3)))
    headers = await ebay_headers(client)
    path = "/buy/browse/v1/item_summary/search"
    for _ in range(3):
        await get_json(client, path, headers, q="dunk")
    body = await get_json(client, path, headers, 429, q="dunk")
    assert body == {"errors": [{
        "errorId": 2001, "domain": "ACCESS", "category": "REQUEST",
        "message": "Too many requests.",
        "longMessage": "The request limit has been reached for the resource."}]}
    clock.advance(8 * 3600 - 1)  # the FakeClock starts at 00:00 UTC = 16:00 Pacific
    await get_json(client, path, headers, 429, q="dunk")
    clock.advance(1)
    headers = await ebay_headers(client)  # the first token has expired by now
    await get_json(client, path, headers, q="dunk")


async def test_ebay_get_rate_limits_counts_down_and_is_not_metered(sim: Start,
                                                                  clock: FakeClock) -> None:
    """getRateLimits reports the Browse quota left today; asking uses none of it."""
    client = await sim(SimulatorOptions(ebay=ProviderOptions(daily_limit=5)))
    headers = await ebay_headers(client)
    path = "/developer/analytics/v1_beta/rate_limit/"
    await get_json(client, "/buy/browse/v1/item_summary/search", headers, q="dunk")
    for _ in range(3):
        body = await get_json(client, path, headers, api_context="buy", api_name="browse")
    [api] = body["rateLimits"]
    [resource] = api["resources"]
    assert resource["name"] == "buy.browse"
    [rate] = resource["rates"]
    assert (rate["limit"], rate["count"], rate["remaining"], rate["timeWindow"]) == (5, 1, 4,
                                                                                     86400)
    assert rate["reset"] == "2026-01-01T08:00:00.000Z"  # midnight Pacific
    stats = await get_json(client, "/_sim/stats", {})
    assert stats["providers"]["ebay"]["requests"] == 1
    await get_json(client, path, {}, 401)


# ---- limits and observability -------------------------------------------------------------------


async def test_rolling_window_refuses_the_21st_call_in_10_s(sim: Start, clock: FakeClock) -> None:
    """With 20/10s the 21st call in 10 s is a 429; once the window has passed, calls pass again."""
    client = await sim(SimulatorOptions(stockx=ProviderOptions(limits=["20/10s"])))
    headers = await stockx_headers(client)
    for _ in range(20):  # at t = 0, 0.25, ..., 4.75
        await get_json(client, "/v2/catalog/search", headers, query="dunk")
        clock.advance(0.25)
    body = await get_json(client, "/v2/catalog/search", headers, 429, query="dunk")
    assert body == {"statusCode": 429, "message": "Too Many Requests"}
    clock.advance(4.75)  # t = 9.75: the call at t = 0 is still in the window
    await get_json(client, "/v2/catalog/search", headers, 429, query="dunk")
    clock.advance(0.25)  # t = 10: it has left
    await get_json(client, "/v2/catalog/search", headers, query="dunk")
    stats = client.app[SIM_STATE].stats()["providers"]["stockx"]
    assert stats["limits"] == [{"limit": "20/10s", "count": 20, "window_s": 10.0,
                                "max_seen": 22, "exceeded": True}]
    assert stats["rate_limited"] == 2 and stats["requests"] == 23
    assert stats["token_requests"] == 1


async def test_default_limits_are_the_real_ones(sim: Start, clock: FakeClock) -> None:
    """By default StockX allows one call per second and token requests do not count."""
    client = await sim(SimulatorOptions())
    headers = await stockx_headers(client)
    await stockx_headers(client)
    await get_json(client, "/v2/catalog/search", headers, query="dunk")
    await get_json(client, "/v2/catalog/search", headers, 429, query="dunk")
    clock.advance(1)
    await get_json(client, "/v2/catalog/search", headers, query="dunk")


async def test_alias_limit_answers_code_8_with_retry_after(sim: Start, clock: FakeClock) -> None:
    """Alias's 429 is code 8; with retry_after on, Retry-After says when a call fits again."""
    client = await sim(SimulatorOptions(alias=ProviderOptions(limits=["2/minute"],
                                                              retry_after=True)))
    await get_json(client, "/api/v1/test", ALIAS)
    clock.advance(15)
    await get_json(client, "/api/v1/test", ALIAS)
    resp = await client.get("/api/v1/test", headers=ALIAS)
    assert resp.status == 429 and (await resp.json())["code"] == 8
    assert resp.headers["Retry-After"] == "45" and resp.headers["x-request-id"]


async def test_stats_endpoint_matches_app_state(sim: Start) -> None:
    """GET /_sim/stats serves the same counters as app[SIM_STATE].stats()."""
    client = await sim()
    await get_json(client, "/api/v1/test", ALIAS)
    body = await get_json(client, "/_sim/stats", {})
    assert body == client.app[SIM_STATE].stats()
    assert body["providers"]["alias"]["requests"] == 1
    assert body["providers"]["alias"]["statuses"] == {"200": 1}


# ---- faults -------------------------------------------------------------------------------------


async def test_forced_statuses_use_each_providers_error_shape(sim: Start) -> None:
    """Forced answers: StockX 504 with an empty body, Alias 503 code 14, eBay 503 errors[]."""
    client = await sim()
    state = client.app[SIM_STATE]
    stockx = await stockx_headers(client)
    state.force("stockx", 504, count=2)
    for _ in range(2):
        resp = await client.get("/v2/catalog/search", headers=stockx, params={"query": "dunk"})
        assert resp.status == 504 and await resp.read() == b""
    await get_json(client, "/v2/catalog/search", stockx, query="dunk")
    state.force("alias", 503)
    body = await get_json(client, "/api/v1/test", ALIAS, 503)
    assert body["code"] == 14
    ebay = await ebay_headers(client)
    resp = await client.post("/_sim/force", json={"provider": "ebay", "status": 503})
    assert resp.status == 200
    body = await get_json(client, "/buy/browse/v1/item_summary/search", ebay, 503, q="dunk")
    assert body["errors"][0]["category"] == "APPLICATION"
    assert state.stats()["providers"]["stockx"]["forced"] == 2


async def test_fault_rate_one_fails_every_call(sim: Start) -> None:
    """With fault_rate 1 every API call answers the provider's 5xx, counted as a fault."""
    client = await sim(SimulatorOptions(alias=ProviderOptions(fault_rate=1.0)))
    for _ in range(3):
        await get_json(client, "/api/v1/test", ALIAS, 503)
    assert client.app[SIM_STATE].stats()["providers"]["alias"]["faults"] == 3


async def test_latency_and_slow_answers_delay_the_response(sim: Start) -> None:
    """latency_ms and slow answers hold the response back by that long."""
    client = await sim(SimulatorOptions(alias=ProviderOptions(latency_ms=50, slow_rate=1.0,
                                                              slow_ms=150)))
    started = time.monotonic()
    await get_json(client, "/api/v1/test", ALIAS)
    assert time.monotonic() - started >= 0.2


def test_bad_options_fail_early() -> None:
    """A malformed limit or probability is refused when the options are built."""
    with pytest.raises(ValueError, match="not a limit"):
        ProviderOptions(limits=["lots"])
    with pytest.raises(ValueError, match="probability"):
        ProviderOptions(fault_rate=2)


def test_limits_shorthand_replaces_the_named_providers_limits() -> None:
    """SimulatorOptions(limits={...}) sets the rolling limits of the providers it names only."""
    options = SimulatorOptions(limits={"alias": ["20/10s"]})
    assert options.alias.limits == ("20/10s",)
    assert options.stockx == SimulatorOptions().stockx
    with pytest.raises(ValueError, match="unknown provider"):
        SimulatorOptions(limits={"goat": ["1/second"]})


async def test_alias_enums_take_names_or_numbers(sim: Start) -> None:
    """Condition enums accept names or numbers; 0, _INVALID and odd digits are 400s, not 500s."""
    client = await sim()
    path = "/api/v1/pricing_insights/availability"
    base: dict[str, Any] = {"catalog_id": PANDA_ALIAS, "size": "10"}
    await get_json(client, path, ALIAS, product_condition="1", packaging_condition="1", **base)
    for bad in ("0", "PRODUCT_CONDITION_INVALID", "\u00b2"):
        body = await get_json(client, path, ALIAS, 400, product_condition=bad,
                              packaging_condition="1", **base)
        assert body["code"] == 3


async def test_run_simulator_serves_until_cancelled() -> None:
    """run_simulator listens (port 0 reports its URL) until its task is cancelled."""
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_simulator("127.0.0.1", 0, UNLIMITED,
                                             on_started=started.set_result))
    base = await asyncio.wait_for(started, 5)
    async with aiohttp.ClientSession() as session, \
            session.get(f"{base}/api/v1/test", headers=ALIAS) as resp:
        assert resp.status == 200 and await resp.json() == {"ok": True}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
