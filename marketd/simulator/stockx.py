"""StockX Public API v2 (catalog and market data) and its accounts host's ``/oauth/token``.

As providers.md §1 describes it: every API call needs ``x-api-key`` and a bearer token; search is
fuzzy with ``pageSize`` 1 by default; amounts are whole-unit decimal strings or null; ``country``
is refused; errors are ``{"statusCode", "errorMessage"}`` (``message`` from the gateway: 401,
403, 429) and 504 comes with an empty body.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from marketd.simulator.catalog import FX_PER_USD, Product, Variant, convert, quote, unit
from marketd.simulator.state import (
    SIM_STATE,
    ApiError,
    ProviderSpec,
    SimState,
    bearer,
    form_of,
    oauth_error,
)

routes = web.RouteTableDef()

_TYPE_NAMES = {"us m": "US M", "us w": "US W", "us": "US", "uk": "UK", "cm": "CM", "kr": "KR",
               "eu": "EU"}


def render_error(err: ApiError) -> web.Response:
    if err.status == 504:
        return web.Response(status=504, body=b"", headers=err.headers)
    return web.json_response({"statusCode": err.status, err.key: err.message},
                             status=err.status, headers=err.headers)


def authenticate(request: web.Request, state: SimState) -> None:
    key = request.headers.get("x-api-key", "")
    wanted = state.options.stockx_api_key
    if not key or (wanted is not None and key != wanted):
        raise ApiError(403, "Forbidden", key="message")
    if not state.token_valid("stockx", bearer(request)):
        raise ApiError(401, "Unauthorized", key="message")


def rate_limited() -> ApiError:
    return ApiError(429, "Too Many Requests", key="message")


def fault() -> ApiError:
    return ApiError(504, "Gateway Timeout")


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be an integer between {lo} and {hi}")
    return value


def _summary(product: Product) -> dict[str, Any]:
    return {
        "productId": product.id,
        "brand": product.brand,
        "productType": "sneakers",
        "styleId": product.sku,
        "urlKey": product.url_key,
        "title": product.title,
        "productAttributes": {
            "color": None,
            "colorway": product.colorway,
            "gender": product.gender,
            "releaseDate": product.release_date,
            "retailPrice": product.retail_usd,
            "season": None,
        },
    }


def _variant(product: Product, variant: Variant) -> dict[str, Any]:
    size = variant.size
    return {
        "productId": product.id,
        "variantId": variant.id,
        "variantName": f"{'-'.join(product.title.split())}:{variant.index}",
        "variantValue": size.value,
        "sizeChart": {
            "defaultConversion": {"size": size.value, "type": size.scale},
            "availableConversions": [{"size": label, "type": kind}
                                     for label, kind in size.conversions],
        },
        "gtins": [{"identifier": variant.gtin, "type": "UPC"}],
        "isFlexEligible": product.has_market,
        "isDirectEligible": product.has_market,
    }


def _market(state: SimState, product: Product, variant: Variant, currency: str) -> dict[str, Any]:
    q = quote(state.options.seed, product, variant, state.clock.now())

    def amount(usd: float | None) -> str | None:
        return None if usd is None else str(round(convert(usd, currency)))

    ask, bid = amount(q.lowest_ask), amount(q.highest_bid)
    sell_faster = amount(q.reference * 0.97) if product.has_market else None
    earn_more = amount(q.reference * 1.10) if product.has_market else None
    flex = (amount(q.lowest_ask * 1.04)
            if q.lowest_ask is not None and unit("flex", product.sku, variant.size.value) > 0.3
            else None)
    return {
        "productId": product.id,
        "variantId": variant.id,
        "currencyCode": currency,
        "highestBidAmount": bid,
        "lowestAskAmount": ask,
        "flexLowestAskAmount": flex,
        "earnMoreAmount": earn_more,
        "sellFasterAmount": sell_faster,
        "standardMarketData": {"lowestAsk": ask, "highestBidAmount": bid,
                               "sellFaster": sell_faster, "earnMore": earn_more, "beatUS": None},
        "flexMarketData": {"lowestAsk": flex, "highestBidAmount": bid, "sellFaster": None,
                           "earnMore": None, "beatUS": None},
        "directMarketData": {"lowestAsk": None, "highestBidAmount": bid, "sellFaster": None,
                             "earnMore": None, "beatUS": None},
    }


def _currency(request: web.Request) -> str:
    if "country" in request.query:
        raise ApiError(400, "not supported anymore. Market data will be based on your market.")
    currency = request.query.get("currencyCode", "USD")
    if currency not in FX_PER_USD:
        raise ApiError(400, f"currencyCode must be one of {', '.join(sorted(FX_PER_USD))}")
    return currency


def _product(request: web.Request) -> Product:
    product = request.app[SIM_STATE].catalog.by_id.get(request.match_info["product_id"])
    if product is None:
        raise ApiError(404, "Product not found")
    return product


def _variant_of(request: web.Request, product: Product) -> Variant:
    variant = request.app[SIM_STATE].catalog.variants.get(request.match_info["variant_id"])
    if variant is None:
        raise ApiError(404, "Variant not found")
    if variant.product_id != product.id:
        raise ApiError(400, "Variant does not belong to the product")
    return variant


@routes.get("/v2/catalog/search")
async def search(request: web.Request) -> web.Response:
    query = request.query.get("query", "")
    if not 1 <= len(query) <= 100:
        raise ApiError(400, "query must be between 1 and 100 characters")
    page_number = _int_param(request, "pageNumber", 1, 1, 10_000)
    page_size = _int_param(request, "pageSize", 1, 1, 50)
    hits = request.app[SIM_STATE].catalog.search(query)
    start = (page_number - 1) * page_size
    return web.json_response({
        "count": len(hits),
        "pageNumber": page_number,
        "pageSize": page_size,
        "hasNextPage": start + page_size < len(hits),
        "products": [_summary(p) for p in hits[start:start + page_size]],
    })


@routes.get("/v2/catalog/products/variants/gtins/{gtin}")
async def variant_by_gtin(request: web.Request) -> web.Response:
    catalog = request.app[SIM_STATE].catalog
    variant = catalog.by_gtin.get(request.match_info["gtin"])
    if variant is None:
        raise ApiError(404, "Variant not found")
    return web.json_response(_variant(catalog.by_id[variant.product_id], variant))


@routes.get("/v2/catalog/products/{product_id}")
async def product(request: web.Request) -> web.Response:
    item = _product(request)
    types = [kind for _, kind in item.variants[0].size.conversions]
    default = item.variants[0].size.scale
    body = _summary(item) | {
        "sizeChart": {
            "availableConversions": [{"name": _TYPE_NAMES[t], "type": t} for t in types],
            "defaultConversion": {"name": _TYPE_NAMES[default], "type": default},
        },
        "isFlexEligible": item.has_market,
        "isDirectEligible": item.has_market,
    }
    return web.json_response(body)


@routes.get("/v2/catalog/products/{product_id}/variants")
async def variants(request: web.Request) -> web.Response:
    item = _product(request)
    return web.json_response([_variant(item, v) for v in item.variants])


@routes.get("/v2/catalog/products/{product_id}/variants/{variant_id}")
async def variant(request: web.Request) -> web.Response:
    item = _product(request)
    return web.json_response(_variant(item, _variant_of(request, item)))


@routes.get("/v2/catalog/products/{product_id}/variants/{variant_id}/market-data")
async def variant_market_data(request: web.Request) -> web.Response:
    item = _product(request)
    one = _variant_of(request, item)
    currency = _currency(request)
    return web.json_response(_market(request.app[SIM_STATE], item, one, currency))


@routes.get("/v2/catalog/products/{product_id}/market-data")
async def product_market_data(request: web.Request) -> web.Response:
    item = _product(request)
    currency = _currency(request)
    state = request.app[SIM_STATE]
    return web.json_response([_market(state, item, v, currency) for v in item.variants])


@routes.post("/oauth/token")
async def token(request: web.Request) -> web.Response:
    """Auth0-style token endpoint: refresh_token and authorization_code grants only."""
    state = request.app[SIM_STATE]
    form = await form_of(request)
    grant = form.get("grant_type", "")
    if not grant:
        return oauth_error(400, "invalid_request", "Missing required parameter: grant_type")
    if grant not in ("refresh_token", "authorization_code"):
        return oauth_error(403, "unauthorized_client",
                            f"Grant type '{grant}' not allowed for the client.")
    if not form.get("client_id"):
        return oauth_error(401, "access_denied", "Unauthorized")
    field = "refresh_token" if grant == "refresh_token" else "code"
    if not form.get(field):
        return oauth_error(400, "invalid_request", f"Missing required parameter: {field}")
    wanted = state.options.stockx_refresh_token
    if grant == "refresh_token" and wanted is not None and form[field] != wanted:
        return oauth_error(403, "invalid_grant", "Unknown or invalid refresh token.")
    access, ttl = state.issue_token("stockx", "sim-stockx-")
    body: dict[str, Any] = {"access_token": access, "expires_in": ttl, "token_type": "Bearer",
                            "scope": "offline_access openid"}
    if grant == "authorization_code":
        body["refresh_token"] = state.options.stockx_refresh_token or f"sim-refresh-{access[-12:]}"
    return web.json_response(body)


SPEC = ProviderSpec(
    name="stockx",
    prefixes=("/v2/",),
    oauth_path="/oauth/token",
    routes=routes,
    render_error=render_error,
    authenticate=authenticate,
    rate_limited=rate_limited,
    fault=fault,
)
