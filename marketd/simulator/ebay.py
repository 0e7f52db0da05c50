"""eBay Browse API ``item_summary/search`` and the OAuth client-credentials token endpoint.

As providers.md §3 describes it: an application token from ``/identity/v1/oauth2/token`` (Basic
auth, 2 h); search needs the bearer token and ``X-EBAY-C-MARKETPLACE-ID``; active listings only,
Buy It Now unless the filter asks for auctions; prices are strings in the marketplace's currency;
errors are ``{"errors": [{errorId, domain, category, message, longMessage}]}`` and an exhausted
quota answers 429 with errorId 2001.

Listings are generated per seed: each product with a market has a handful, titled the way
sellers write them (SKU and UK size in the title, in several spellings). A search for a SKU also
finds the listings of SKUs one edit away (DD1391-101 for DD1391-100), so a client must check
the SKU in the title.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from marketd.clock import iso
from marketd.simulator.catalog import (
    FX_PER_USD,
    Product,
    Variant,
    catalog,
    convert,
    near_sku,
    norm,
    quote,
    unit,
)
from marketd.simulator.sizes import num
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

SCOPE = "https://api.ebay.com/oauth/api_scope"
MARKETPLACES = {"EBAY_GB": ("GBP", "www.ebay.co.uk"), "EBAY_US": ("USD", "www.ebay.com"),
                "EBAY_DE": ("EUR", "www.ebay.de"), "EBAY_FR": ("EUR", "www.ebay.fr"),
                "EBAY_IT": ("EUR", "www.ebay.it"), "EBAY_ES": ("EUR", "www.ebay.es"),
                "EBAY_IE": ("EUR", "www.ebay.ie"), "EBAY_AU": ("AUD", "www.ebay.com.au"),
                "EBAY_CA": ("CAD", "www.ebay.ca")}
_CONDITIONS = (("1000", "New", 0.65), ("1500", "New without box", 0.10),
               ("1750", "New with defects", 0.05), ("3000", "Pre-owned", 0.20))
_CATEGORIES = {"men": ("15709", "Men's Trainers"), "women": ("95672", "Women's Trainers"),
               "child": ("57929", "Boys' Trainers")}
_LONG = {
    1001: "Invalid access token. Check the value of the Authorization HTTP request header.",
    2001: "The request limit has been reached for the resource.",
    12000: "There was a problem with an eBay internal system or process. Contact eBay "
           "developer support for assistance.",
}
_TITLES: tuple[Callable[[Product, Variant, str], str], ...] = (
    lambda p, v, name: f"{name} {p.sku} UK {num(v.size.uk)}",
    lambda p, v, name: f"{p.title} - Size UK {num(v.size.uk)} - {p.sku} - Brand New",
    lambda p, v, name: f"{p.sku} {name} UK{num(v.size.uk)} EU{v.size.eu.replace(' ', '')}",
    lambda p, v, name: f"{name} Trainers UK {num(v.size.uk)} {p.sku} 100% Authentic",
    lambda p, v, name: f"{name} Size UK {num(v.size.uk)} (EU {v.size.eu}) {p.sku}",
)
_SELLERS = ("kicks_uk", "solecollector88", "trainerlab", "hype.vault", "sneakerden_ldn",
            "mcr_kicks", "deadstock.drops", "the_sole_shop")


@dataclass(frozen=True, slots=True)
class Listing:
    legacy_id: str
    product: Product
    variant: Variant
    title: str
    key: str  # the title, normalized for matching
    condition_id: str
    condition: str
    auction: bool
    price_factor: float  # of the size's reference price
    shipping_gbp: float
    seller: str
    feedback_pct: str
    feedback_score: int
    country: str
    authenticity: bool  # eBay UK's Authenticity Guarantee: new trainers from GBP 100
    age_hours: int  # listed this many hours before the current hour
    hours_left: int  # auctions end this many hours after the current hour
    accessory: bool = False  # laces, an empty box: the SKU in the title, not the shoe


def _make(rng: random.Random, product: Product, variant: Variant) -> Listing:
    condition_id, condition, _ = rng.choices(_CONDITIONS, weights=[c[2] for c in _CONDITIONS])[0]
    suffix = {"women": " Womens", "child": " GS"}.get(product.gender, "")
    name = f"{product.family} {product.nickname}{suffix}"
    title = rng.choice(_TITLES)(product, variant, name)
    if condition_id == "3000":
        title += rng.choice((" Worn Once", " Used", " VGC"))
    if len(title) > 80:  # eBay's limit; sellers shorten
        title = _TITLES[0](product, variant, name)
    used = condition_id != "1000"
    price_factor = rng.uniform(0.55, 0.8) if used else rng.uniform(0.92, 1.3)
    return Listing(
        legacy_id=str(rng.randrange(10**11, 4 * 10**11)),
        product=product,
        variant=variant,
        title=title,
        key=norm(title),
        condition_id=condition_id,
        condition=condition,
        auction=rng.random() < 0.2,
        price_factor=price_factor,
        shipping_gbp=rng.choice((0.0, 0.0, 3.99, 4.99, 6.95)),
        seller=f"{rng.choice(_SELLERS)}{rng.randrange(100)}",
        feedback_pct=f"{rng.uniform(97, 100):.1f}",
        feedback_score=rng.randrange(5, 25_000),
        country=rng.choices(("GB", "DE", "US"), weights=(0.85, 0.1, 0.05))[0],
        authenticity=not used and convert(product.market_usd * price_factor, "GBP") >= 100,
        age_hours=rng.randrange(1, 24 * 30),
        hours_left=rng.randrange(1, 24 * 7),
    )


@cache
def listings(seed: int) -> tuple[Listing, ...]:
    """Every active listing: 2-5 per mid size and 0-2 per outer size of each product with a
    market, none for the rest."""
    out = []
    for product in catalog().products:
        if not product.has_market:
            continue
        rng = random.Random(f"{seed}|ebay|{product.sku}")
        n = len(product.variants)
        for variant in product.variants:
            mid = abs(variant.index - (n - 1) / 2) <= n / 4  # sellers hold mid sizes most
            count = rng.randint(2, 5) if mid else rng.randint(0, 2)
            out += [_make(rng, product, variant) for _ in range(count)]
        out += _accessories(random.Random(f"{seed}|ebay-extras|{product.sku}"), product)
    return tuple(out)


_ACCESSORIES = (
    "Replacement Laces for {name} {sku}",
    "EMPTY BOX ONLY {name} {sku} UK {uk}",
    "{name} {sku} Crease Protectors",
    "Insoles for {name} {sku} UK {uk}",
)


def _accessories(rng: random.Random, product: Product) -> list[Listing]:
    """What a real search for a SKU also finds, cheaper than any shoe: laces, empty boxes,
    insoles (some with a size in the title). Drawn apart so the shoes' draws do not move."""
    out = []
    name = f"{product.family} {product.nickname}"
    for _ in range(rng.randint(3, 12)):
        variant = rng.choice(product.variants)
        template = rng.choice(_ACCESSORIES)
        title = template.format(name=name, sku=product.sku, uk=num(variant.size.uk))[:80]
        item = _make(rng, product, variant)
        out.append(replace(item, title=title, key=norm(title), condition_id="1000",
                           condition="New", auction=False, authenticity=False,
                           price_factor=rng.uniform(0.02, 0.08), accessory=True))
    return out


def render_error(err: ApiError) -> web.Response:
    error_id = err.code if err.code is not None else {401: 1001, 404: 2002, 429: 2001}.get(
        err.status, 12000 if err.status >= 500 else 12001)
    domain = {1001: "OAuth", 2001: "ACCESS", 2002: "ACCESS"}.get(error_id, "API_BROWSE")
    category = "APPLICATION" if err.status >= 500 else "REQUEST"
    error = {"errorId": error_id, "domain": domain, "category": category,
             "message": err.message, "longMessage": _LONG.get(error_id, err.message)}
    return web.json_response({"errors": [error]}, status=err.status, headers=err.headers)


def authenticate(request: web.Request, state: SimState) -> None:
    if not state.token_valid("ebay", bearer(request)):
        raise ApiError(401, "Invalid access token", code=1001)


def rate_limited() -> ApiError:
    return ApiError(429, "Too many requests.", code=2001)


def fault() -> ApiError:
    return ApiError(503, "There was a problem with an eBay internal system or process.",
                    code=12000)


@dataclass(frozen=True, slots=True)
class _Word:
    key: str  # normalized: matched as a part of the normalized title
    skus: frozenset[str]  # SKUs one edit away from the word, when it looks like a SKU


def _terms(q: str) -> list[list[_Word]]:
    """``q`` as AND of OR-groups: spaces are AND, ``(a, b)`` is OR."""
    groups = []
    for group, word in re.findall(r"\(([^)]*)\)|(\S+)", q):
        options = [w.strip() for w in group.split(",")] if group else [word]
        words = [_Word(norm(w), frozenset(p.sku for p in catalog().products
                                          if near_sku(w, p.sku, max_edits=1)))
                 for w in options if norm(w)]
        if words:
            groups.append(words)
    return groups


def _matches(listing: Listing, terms: list[list[_Word]]) -> bool:
    return all(any(w.key in listing.key or listing.product.sku in w.skus for w in group)
               for group in terms)


def _filters(raw: str) -> dict[str, str]:
    """``price:[50..300],priceCurrency:GBP,conditionIds:{1000|1500}`` -> {name: value}."""
    out = {}
    for part in re.findall(r"[^,\[{]+(?:\[[^\]]*\]|\{[^}]*\})?[^,]*", raw):
        name, _, value = part.strip().partition(":")
        if name:
            out[name.strip()] = value.strip().strip("{}[]")
    return out


def _price_range(filters: dict[str, str]) -> tuple[float | None, float | None]:
    if "price" not in filters:
        return None, None
    if "priceCurrency" not in filters:
        raise ApiError(400, "The 'priceCurrency' filter must be used together with the 'price' "
                       "filter.", code=12012)
    lo, _, hi = filters["price"].partition("..")
    try:
        return (float(lo) if lo else None), (float(hi) if hi else None)
    except ValueError:
        raise ApiError(400, "The 'price' filter is invalid.", code=12012) from None


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int,
               code: int) -> int:
    try:
        value = int(request.query.get(name, str(default)))
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise ApiError(400, f"The '{name}' value is invalid.", code=code)
    return value


def _summary(item: Listing, price: float, shipping: float, currency: str, host: str,
             hour_start: float) -> dict[str, Any]:
    money = {"currency": currency}
    category_id, category_name = _CATEGORIES[item.product.gender]
    body: dict[str, Any] = {
        "itemId": f"v1|{item.legacy_id}|0",
        "legacyItemId": item.legacy_id,
        "title": item.title,
        "image": {"imageUrl": f"https://i.ebayimg.com/images/g/sim{item.legacy_id}/s-l225.jpg"},
        "price": {"value": f"{price:.2f}"} | money,
        "itemHref": f"https://api.ebay.com/buy/browse/v1/item/v1%7C{item.legacy_id}%7C0",
        "seller": {"username": item.seller, "feedbackPercentage": item.feedback_pct,
                   "feedbackScore": item.feedback_score},
        "condition": item.condition,
        "conditionId": item.condition_id,
        "shippingOptions": [{"shippingCostType": "FIXED",
                             "shippingCost": {"value": f"{shipping:.2f}"} | money}],
        "buyingOptions": ["AUCTION"] if item.auction else ["FIXED_PRICE", "BEST_OFFER"],
        "itemWebUrl": f"https://{host}/itm/{item.legacy_id}",
        "itemLocation": {"country": item.country},
        "categories": [{"categoryId": category_id, "categoryName": category_name}],
        "adultOnly": False,
        "itemCreationDate": iso(hour_start - item.age_hours * 3600),
    }
    if item.auction:
        body["currentBidPrice"] = body["price"]
        body["bidCount"] = int(item.legacy_id) % 9
        body["itemEndDate"] = iso(hour_start + item.hours_left * 3600)
    if item.authenticity:
        body["qualifiedPrograms"] = ["AUTHENTICITY_GUARANTEE"]
    return body


Row = tuple[Listing, float, float]  # listing, price, shipping (marketplace currency)


def _aspects(raw: str, category: str) -> tuple[str, set[str]] | None:
    """``categoryId:15709,UK Shoe Size:{9|10}`` -> ("UK Shoe Size", {"9", "10"}). eBay wants
    the category in it and in category_ids too."""
    if not raw:
        return None
    parts = dict(p.split(":", 1) for p in re.findall(r"[^,{]+:(?:\{[^}]*\}|[^,]*)", raw))
    parts = {k.strip(): v.strip() for k, v in parts.items()}
    cat = parts.pop("categoryId", "")
    if not cat or cat not in category.split(","):
        raise ApiError(400, "The 'aspect_filter' needs a categoryId that is also in "
                       "'category_ids'.", code=12001)
    if len(parts) != 1:
        return None
    name, values = next(iter(parts.items()))
    return name, {v.strip() for v in values.strip("{}").split("|") if v.strip()}


def _size_aspect(item: Listing, name: str) -> str | None:
    """A listing's shoe size aspect: the UK or US size; accessories have none."""
    if item.accessory:
        return None
    size = item.variant.size
    return {"UK Shoe Size": num(size.uk), "US Shoe Size": num(size.number)}.get(name)


def _select(state: SimState, q: str, category: str, gtin: str, filters: dict[str, str],
            currency: str, aspects: tuple[str, set[str]] | None = None,
            country: str = "GB") -> list[Row]:
    """The listings a search finds, priced at the current hour, shipping to ``country``."""
    lo, hi = _price_range(filters)
    buying = set(filters.get("buyingOptions", "FIXED_PRICE").split("|"))
    conditions = set(filters["conditionIds"].split("|")) if "conditionIds" in filters else None
    if "conditions" in filters:
        wanted = set(filters["conditions"].split("|"))
        conditions = {c for c, _, _ in _CONDITIONS
                      if ("USED" if c == "3000" else "NEW") in wanted}
    location = filters.get("itemLocationCountry")
    now = state.clock.now()
    terms = _terms(q)
    rows = []
    for item in listings(state.options.seed):
        if aspects is not None and _size_aspect(item, aspects[0]) not in aspects[1]:
            continue
        if ((terms and not _matches(item, terms))
                or (gtin and (item.accessory or item.variant.gtin != gtin))
                or (category and _CATEGORIES[item.product.gender][0] not in category.split(","))
                or ("AUCTION" if item.auction else "FIXED_PRICE") not in buying
                or (conditions is not None and item.condition_id not in conditions)
                or (location is not None and item.country != location)):
            continue
        usd = quote(state.options.seed, item.product, item.variant, now).reference
        price = round(convert(usd * item.price_factor, currency), 2)
        if (lo is not None and price < lo) or (hi is not None and price > hi):
            continue
        shipping_gbp = item.shipping_gbp + (INTERNATIONAL_GBP if item.country != country else 0)
        shipping = round(convert(shipping_gbp / FX_PER_USD["GBP"], currency), 2)
        rows.append((item, price, shipping))
    return rows


INTERNATIONAL_GBP = 9.99  # what a seller abroad adds to post to the buyer's country


def _country(request: web.Request, marketplace: str) -> str:
    """The buyer's country shipping is priced for: X-EBAY-C-ENDUSERCTX's contextualLocation
    (URL-encoded ``country=GB,zip=…``), else the marketplace's own country."""
    raw = request.headers.get("X-EBAY-C-ENDUSERCTX", "")
    for part in raw.split(","):
        key, _, value = part.strip().partition("=")
        if key == "contextualLocation":
            found = re.search(r"country=([A-Za-z]{2})", unquote(value))
            if found:
                return found.group(1).upper()
    return marketplace.removeprefix("EBAY_")


@routes.get("/buy/browse/v1/item_summary/search")
async def search(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    marketplace = request.headers.get("X-EBAY-C-MARKETPLACE-ID", "")
    if marketplace not in MARKETPLACES:
        raise ApiError(409, f"The marketplace value {marketplace!r} is not supported. Send "
                       "X-EBAY-C-MARKETPLACE-ID, e.g. EBAY_GB.", code=12019)
    currency, host = MARKETPLACES[marketplace]
    q, category = request.query.get("q", ""), request.query.get("category_ids", "")
    gtin = request.query.get("gtin", "")
    if not (q.strip() or category or gtin or request.query.get("epid")):
        raise ApiError(400, "The call must have a valid 'q', 'category_ids', 'epid' or 'gtin' "
                       "query parameter.", code=12001)
    # the Browse spec's ids: 12006 a bad limit, 12029 a bad offset (12023 is "response too
    # large", not a parameter error)
    limit = _int_param(request, "limit", 50, 1, 200, 12006)
    offset = _int_param(request, "offset", 0, 0, 10_000, 12029)
    sort = request.query.get("sort", "")
    if sort not in ("", "price", "-price", "newlyListed", "endingSoonest", "distance"):
        raise ApiError(400, f"The sort value {sort!r} is invalid.", code=12011)
    aspects = _aspects(request.query.get("aspect_filter", ""), category)
    rows = _select(state, q, category, gtin, _filters(request.query.get("filter", "")),
                   currency, aspects, _country(request, marketplace))
    order: dict[str, Callable[[Row], Any]] = {
        "price": lambda r: (r[1] + r[2], r[0].legacy_id),
        "-price": lambda r: (-(r[1] + r[2]), r[0].legacy_id),
        "newlyListed": lambda r: (r[0].age_hours, r[0].legacy_id),
        "endingSoonest": lambda r: (not r[0].auction, r[0].hours_left, r[0].legacy_id),
    }
    rows.sort(key=order.get(sort, lambda r: unit("best match", q, r[0].legacy_id)))
    page = rows[offset:offset + limit]
    hour_start = state.clock.now() // 3600 * 3600
    body: dict[str, Any] = {"href": str(request.url), "total": len(rows), "limit": limit,
                            "offset": offset}
    if offset + limit < len(rows):
        body["next"] = str(request.url.update_query(offset=offset + limit))
    if offset > 0:
        body["prev"] = str(request.url.update_query(offset=max(0, offset - limit)))
    if page:  # eBay leaves itemSummaries out when nothing matched
        body["itemSummaries"] = [_summary(item, price, shipping, currency, host, hour_start)
                                 for item, price, shipping in page]
    return web.json_response(body)


@routes.get("/developer/analytics/v1_beta/rate_limit/")
async def rate_limits(request: web.Request) -> web.Response:
    """getRateLimits: what is left of the daily Browse quota (Analytics is not metered)."""
    state = request.app[SIM_STATE]
    try:
        authenticate(request, state)
    except ApiError as err:
        return render_error(err)
    body: dict[str, Any] = {"rateLimits": []}
    quota = state.meters["ebay"].day_quota(state.clock.now())
    wanted = (request.query.get("api_context", "buy").lower(),
              request.query.get("api_name", "browse").lower())
    if quota is not None and wanted == ("buy", "browse"):
        limit, used, resets_at = quota
        body["rateLimits"].append({
            "apiContext": "buy", "apiName": "Browse", "apiVersion": "v1",
            "resources": [{"name": "buy.browse", "rates": [{
                "count": used, "limit": limit, "remaining": max(0, limit - used),
                "reset": iso(resets_at), "timeWindow": 86400}]}]})
    return web.json_response(body)


@routes.post("/identity/v1/oauth2/token")
async def token(request: web.Request) -> web.Response:
    """Client-credentials grant: Basic auth with client id and secret, a 2-hour app token."""
    state = request.app[SIM_STATE]
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    try:
        client_id, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        client_id = secret = ""
    opts = state.options
    if (scheme.lower() != "basic" or not client_id or not secret
            or opts.ebay_client_id not in (None, client_id)
            or opts.ebay_client_secret not in (None, secret)):
        return oauth_error(401, "invalid_client", "client authentication failed")
    form = await form_of(request)
    if form.get("grant_type") != "client_credentials":
        return oauth_error(400, "unsupported_grant_type",
                            "grant type in request is not supported by the authorization server")
    if any(scope != SCOPE for scope in form.get("scope", SCOPE).split()):
        return oauth_error(400, "invalid_scope", "The requested scope is invalid, unknown, "
                            "malformed, or exceeds the scope granted to the client")
    access, ttl = state.issue_token("ebay", "v^1.1#i^1#p^1#r^0#I^3#f^0#t^sim")
    return web.json_response({"access_token": access, "expires_in": ttl,
                              "token_type": "Application Access Token"})


SPEC = ProviderSpec(
    name="ebay",
    prefixes=("/buy/",),
    oauth_path="/identity/v1/oauth2/token",
    routes=routes,
    render_error=render_error,
    authenticate=authenticate,
    rate_limited=rate_limited,
    fault=fault,
)
