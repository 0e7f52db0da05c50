"""Alias (GOAT Group seller API) v1: catalog and pricing insights.

As providers.md §2 describes it: a bearer Personal Access Token; SKUs written with a space;
prices as strings of USD cents whatever the region, ``"0"`` meaning no data; ``consigned`` on
variants only when the request named it; errors in the gRPC-gateway shape
``{"code", "message", "details": []}``; an ``x-request-id`` on every answer (added by the app).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from marketd.clock import iso
from marketd.simulator.catalog import Product, Variant, quote, unit
from marketd.simulator.state import SIM_STATE, ApiError, ProviderSpec, SimState, bearer

routes = web.RouteTableDef()

# gRPC status codes by HTTP status, as grpc-gateway maps them back
_GRPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 429: 8, 499: 1, 500: 13, 501: 12,
              503: 14, 504: 4}
_PRODUCT_CONDITIONS = ("PRODUCT_CONDITION_NEW", "PRODUCT_CONDITION_USED",
                       "PRODUCT_CONDITION_NEW_WITH_DEFECTS")
_PACKAGING_CONDITIONS = ("PACKAGING_CONDITION_GOOD_CONDITION", "PACKAGING_CONDITION_MISSING_LID",
                         "PACKAGING_CONDITION_BADLY_DAMAGED",
                         "PACKAGING_CONDITION_NO_ORIGINAL_BOX")
# (product condition, packaging condition, price factor): what /availabilities lists per size
_COMBOS = (
    ("PRODUCT_CONDITION_NEW", "PACKAGING_CONDITION_GOOD_CONDITION", 1.0),
    ("PRODUCT_CONDITION_NEW", "PACKAGING_CONDITION_MISSING_LID", 0.95),
    ("PRODUCT_CONDITION_NEW", "PACKAGING_CONDITION_BADLY_DAMAGED", 0.90),
    ("PRODUCT_CONDITION_NEW", "PACKAGING_CONDITION_NO_ORIGINAL_BOX", 0.88),
    ("PRODUCT_CONDITION_USED", "PACKAGING_CONDITION_GOOD_CONDITION", 0.70),
    ("PRODUCT_CONDITION_NEW_WITH_DEFECTS", "PACKAGING_CONDITION_GOOD_CONDITION", 0.80),
)
_FACTORS = {(p, k): f for p, k, f in _COMBOS}
# US, EU, UK: the only ids any source gives (providers.md §2); empty or omitted is global
_REGIONS = ("1", "2", "3")


def render_error(err: ApiError) -> web.Response:
    code = err.code if err.code is not None else _GRPC_CODE.get(err.status, 2)
    return web.json_response({"code": code, "message": err.message, "details": []},
                             status=err.status, headers=err.headers)


def authenticate(request: web.Request, state: SimState) -> None:
    token = bearer(request)
    wanted = state.options.alias_token
    if not token or (wanted is not None and token != wanted):
        raise ApiError(401, "unauthenticated: invalid or missing personal access token")


def rate_limited() -> ApiError:
    return ApiError(429, "Too many requests hit the API too quickly. Please slow down, or reach "
                    "out to support if you need a higher limit.")


def fault() -> ApiError:
    return ApiError(503, "upstream connect error or disconnect/reset before headers. "
                    "reset reason: overflow")


def _missing(name: str) -> ApiError:
    return ApiError(400, f"Missing parameter: input.{name}")


def _cents(usd: float | None) -> str:
    """Whole dollars as a string of cents; no data is ``"0"``."""
    return "0" if usd is None else str(round(usd) * 100)


def _enum(request: web.Request, name: str, field: str, values: tuple[str, ...]) -> str:
    raw = request.query.get(name)
    if raw is None:
        raise _missing(field)
    if raw in values:
        return raw
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if not 1 <= number <= len(values):  # 0 is the enum's _INVALID
        raise ApiError(400, f"invalid value for {name}: {raw!r}")
    return values[number - 1]


def _consigned(request: web.Request) -> bool | None:
    raw = request.query.get("consigned")
    if raw is None:
        return None
    if raw.lower() in ("true", "1", "false", "0"):
        return raw.lower() in ("true", "1")
    raise ApiError(400, f"invalid value for consigned: {raw!r}")


def _region(request: web.Request) -> str | None:
    raw = request.query.get("region_id")
    if raw is not None and raw not in (*_REGIONS, ""):
        raise ApiError(400, f"invalid value for region_id: {raw!r}")
    return raw or None


def _item(request: web.Request, catalog_id: str | None) -> Product:
    if catalog_id is None:
        raise _missing("CatalogId")
    item = request.app[SIM_STATE].catalog.by_catalog_id.get(catalog_id)
    if item is None:
        raise ApiError(404, f"catalog item {catalog_id!r} not found")
    return item


def _size(request: web.Request, item: Product) -> Variant | None:
    raw = request.query.get("size")
    if raw is None:
        raise _missing("Size")
    try:
        # a double in the item's own scale (US W for a women's item): "8.5W" is no number
        number = float(raw)
    except ValueError:
        raise ApiError(400, f"invalid value for size: {raw!r}") from None
    return item.variant_for(number)


def _catalog_item(item: Product) -> dict[str, Any]:
    name = f"{item.family} '{item.nickname}'"
    return {
        "catalog_id": item.catalog_id,
        "name": f"Wmns {name}" if item.gender == "women" else name,
        "sku": item.alias_sku,
        "brand": "Air Jordan" if item.brand == "Jordan" else item.brand,
        "gender": {"child": "youth"}.get(item.gender, item.gender),
        "nickname": item.nickname,
        "colorway": item.colorway,
        "product_type": "sneakers",
        "product_category": "PRODUCT_CATEGORY_SHOES",
        "size_unit": "SIZE_UNIT_US",
        "allowed_sizes": [{"display_name": v.size.value, "value": v.size.number,
                           "us_size_equivalent": v.size.number} for v in item.variants],
        "minimum_listing_price_cents": "2500",
        "maximum_listing_price_cents": "200000",
        "main_picture_url": f"https://image.goat.com/simulated/{item.catalog_id}.png",
        "retail_price_cents": str(item.retail_usd * 100),
        "release_date": f"{item.release_date}T23:59:59.999Z",
    }


def _availability(state: SimState, item: Product, variant: Variant, product_condition: str,
                  packaging_condition: str, consigned: bool | None,
                  region: str | None) -> dict[str, str]:
    q = quote(state.options.seed, item, variant, state.clock.now())
    factor = _FACTORS[(product_condition, packaging_condition)]
    if region is not None:
        factor *= 0.97 + 0.06 * unit("region", region, item.sku)
    listed = q.lowest_ask
    if listed is not None:
        # Alias lists a little under StockX; consigned stock asks more than "with you" stock
        listed *= 0.96 * {True: 1.06, False: 0.98, None: 0.98}[consigned]
    bid, sale = q.highest_bid, q.last_sale
    if factor < 1.0:  # the rarer conditions are thinly traded
        rare = unit(state.options.seed, item.sku, variant.size.value, packaging_condition,
                    product_condition)
        listed = listed if rare > 0.4 else None
        bid = bid if rare > 0.6 else None
        sale = sale if rare > 0.5 else None
    main = (product_condition, packaging_condition) == _COMBOS[0][:2]
    return {
        "lowest_listing_price_cents": _cents(None if listed is None else listed * factor),
        "highest_offer_price_cents": _cents(None if bid is None else bid * factor),
        "last_sold_listing_price_cents": _cents(None if sale is None else sale * factor),
        "global_indicator_price_cents": _cents(q.reference if main and item.has_market
                                               else None),
    }


@routes.get("/api/v1/test")
async def test(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@routes.get("/api/v1/catalog")
async def search(request: web.Request) -> web.Response:
    query = request.query.get("query", "").strip()
    if not query:
        raise _missing("Query")
    try:
        limit = int(request.query.get("limit", "10"))
        token = request.query.get("pagination_token", "")
        offset = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    except (ValueError, binascii.Error):
        raise ApiError(400, "invalid limit or pagination_token") from None
    if not 1 <= limit <= 100 or offset < 0:
        raise ApiError(400, "limit must be between 1 and 100")
    hits = request.app[SIM_STATE].catalog.search(query)
    more = offset + limit < len(hits)
    next_token = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if more else ""
    return web.json_response({
        "catalog_items": [_catalog_item(p) for p in hits[offset:offset + limit]],
        "next_pagination_token": next_token,
        "has_more": more,
    })


@routes.get("/api/v1/catalog/{catalog_id}")
async def catalog_item(request: web.Request) -> web.Response:
    item = _item(request, request.match_info["catalog_id"])
    return web.json_response({"catalog_item": _catalog_item(item)})


@routes.get("/api/v1/pricing_insights/availabilities/{catalog_id}")
async def availabilities(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    item = _item(request, request.match_info["catalog_id"])
    consigned, region = _consigned(request), _region(request)
    out = []
    for v in item.variants:
        for product_condition, packaging_condition, _ in _COMBOS:
            entry: dict[str, Any] = {"size": v.size.number, "product_condition": product_condition,
                                     "packaging_condition": packaging_condition}
            if consigned is not None:
                entry["consigned"] = consigned
            entry["availability"] = _availability(state, item, v, product_condition,
                                                  packaging_condition, consigned, region)
            out.append(entry)
    return web.json_response({"variants": out})


@routes.get("/api/v1/pricing_insights/availability")
async def availability(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    item = _item(request, request.query.get("catalog_id"))
    variant = _size(request, item)
    product_condition = _enum(request, "product_condition", "ProductCondition",
                              _PRODUCT_CONDITIONS)
    packaging_condition = _enum(request, "packaging_condition", "PackagingCondition",
                                _PACKAGING_CONDITIONS)
    consigned, region = _consigned(request), _region(request)
    if variant is None or (product_condition, packaging_condition) not in _FACTORS:
        # a size or a condition nobody trades: no data, not an error
        body = dict.fromkeys(("lowest_listing_price_cents", "highest_offer_price_cents",
                              "last_sold_listing_price_cents", "global_indicator_price_cents"),
                             "0")
    else:
        body = _availability(state, item, variant, product_condition, packaging_condition,
                             consigned, region)
    return web.json_response({"availability": body})


@routes.get("/api/v1/pricing_insights/recent_sales")
async def recent_sales(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    item = _item(request, request.query.get("catalog_id"))
    variant = _size(request, item)
    consigned = _consigned(request)
    try:
        limit = int(request.query.get("limit", "10"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 200:
        raise ApiError(400, "limit must be between 1 and 200")
    if variant is None or not item.has_market:
        return web.json_response({"recent_sales": []})
    seed, hour_start = state.options.seed, state.clock.now() // 3600 * 3600
    gap_s = 3600 * (3 + 40 * unit(seed, item.sku, variant.size.value, "gap"))
    sales = []
    for i in range(limit):
        at = hour_start - (i + 0.5) * gap_s
        q = quote(seed, item, variant, at)
        sold_consigned = unit(seed, item.sku, variant.size.value, i, "consigned") < 0.6
        if q.last_sale is None or (consigned is not None and sold_consigned != consigned):
            continue
        sales.append({"purchased_at": iso(at), "price_cents": _cents(q.last_sale),
                      "size": variant.size.number, "consigned": sold_consigned,
                      "catalog_id": item.catalog_id})
    return web.json_response({"recent_sales": sales})


SPEC = ProviderSpec(
    name="alias",
    prefixes=("/api/v1/",),
    oauth_path=None,
    routes=routes,
    render_error=render_error,
    authenticate=authenticate,
    rate_limited=rate_limited,
    fault=fault,
)
