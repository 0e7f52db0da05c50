"""StockX Public API v2 client: OAuth refresh, cached catalog look-up, sizes, market data.

A group of jobs (one SKU, any number of sizes) costs ONE counted call when the SKU's catalog
entry is cached (the product-level market-data call answers every variant) and three when it is
not (search, variants, market data). The OAuth token endpoint is not counted.

Facts about the API are in ``providers.md`` §1 and §5; the tags below follow it
([DOC] documented, [OBS] observed, [INF] inferred, [?] uncertain).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import structlog

from marketd.clock import parse_iso
from marketd.errors import (
    AuthError,
    NotFound,
    ProviderError,
    RateLimited,
    TransientError,
)
from marketd.models import Job, Price
from marketd.providers.base import (
    TRANSIENT_STATUSES,
    FetchResult,
    Provider,
    ProviderContext,
    Response,
    retry_after_seconds,
)
from marketd.providers.stockx_catalog import (
    Product,
    Variant,
    as_dict,
    extra_key,
    match_style,
    parse_variant,
    resolve_size,
)

log = structlog.get_logger(__name__)

AUDIENCE = "gateway.stockx.com"
DEFAULT_TOKEN_LIFETIME_S = 43200.0  # [OBS] 12 h; only used when expires_in is missing
TOKEN_REFRESH_MARGIN_S = 300.0  # refresh this long before the access token expires
SEARCH_PAGE_SIZE = "50"  # [DOC] the default pageSize is 1 and the maximum 50
CATALOG_TTL_S = 7 * 86400.0  # [INF] look a SKU up again weekly, in case variants were added

ENV_NAMES = {"api_key": "STOCKX_API_KEY", "client_id": "STOCKX_CLIENT_ID",
             "client_secret": "STOCKX_CLIENT_SECRET", "refresh_token": "STOCKX_REFRESH_TOKEN"}
API_CREDENTIAL = "STOCKX_API_KEY / STOCKX_REFRESH_TOKEN"
CLIENT_CREDENTIAL = "STOCKX_CLIENT_ID / STOCKX_CLIENT_SECRET"
REFRESH_CREDENTIAL = "STOCKX_REFRESH_TOKEN"

def to_minor(value: Any) -> int | None:
    """A decimal amount in major units (``"96.5"``) to minor units (``9650``); None stays None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        log.warning("stockx_bad_amount", value=str(value)[:40])
        return None
    if not amount.is_finite():
        return None
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def error_detail(resp: Response) -> str:
    """The provider's own message: ``errorMessage`` (live [OBS]) or ``message`` ([DOC])."""
    if not resp.body.strip():
        return ""  # 504s come with an empty body [OBS]
    try:
        data = json.loads(resp.body)
    except ValueError:
        text = resp.body[:120].decode("utf-8", "replace").strip()
        return "" if text.startswith("<") else " ".join(text.split())
    if isinstance(data, dict):
        for key in ("errorMessage", "message", "error_description", "error"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value[:200]
    return ""


# ---- the client --------------------------------------------------------------------------------


class StockXClient(Provider):
    """Prices for one SKU's sizes from StockX, spending as few counted calls as it can."""

    name = "stockx"
    credential = API_CREDENTIAL
    lookup_calls = 2  # search and variants
    catalog_ttl_s = CATALOG_TTL_S
    renewal_event = "stockx_token_rejected"

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(ctx)
        self._access: str | None = None
        self._refresh_at = 0.0
        self._refresh_token: str | None = None  # the newest one, if the server rotated it
        self._lock = asyncio.Lock()

    def _opt(self, key: str) -> str:
        value = self.ctx.config.options.get(key)
        return value.strip() if isinstance(value, str) else ""

    # ---- auth ----

    async def _refresh_tokens(self) -> list[str]:
        """Refresh tokens to try, best first: rotated in memory, the config/env, the store."""
        stored = await self.ctx.store.get_token(self.name, "refresh_token")
        found = [self._refresh_token, self._opt("refresh_token"), stored[0] if stored else None]
        return list(dict.fromkeys(t for t in found if t))

    async def _check_credentials(self) -> None:
        missing = [ENV_NAMES[k] for k in ("api_key", "client_id", "client_secret")
                   if not self._opt(k)]
        if not self._refresh_token and not self._opt("refresh_token") and \
                not await self.ctx.store.get_token(self.name, "refresh_token"):
            missing.append(ENV_NAMES["refresh_token"])
        if missing:
            hint = " (or run `marketd auth stockx`)" if ENV_NAMES["refresh_token"] in missing \
                else ""
            raise AuthError(self.name, f"missing credentials: set {', '.join(missing)}{hint}",
                            credential=", ".join(missing))

    async def _access_token(self, refused: str | None = None) -> str:
        """A valid access token: from memory, else from the store, else minted.
        ``refused`` is a token the API just turned down; it is never handed out again."""
        async with self._lock:
            now = self.ctx.clock.now()
            if self._access and self._access != refused and now < self._refresh_at:
                return self._access
            stored = await self.ctx.store.get_token(self.name, "access_token")
            if stored and stored[0] != refused and stored[1] is not None \
                    and now < stored[1] - TOKEN_REFRESH_MARGIN_S:
                self._access, self._refresh_at = stored[0], stored[1] - TOKEN_REFRESH_MARGIN_S
                log.info("stockx_token_loaded", expires_in_s=round(stored[1] - now))
                return stored[0]
            return await self._mint()

    async def _mint(self) -> str:
        tokens = await self._refresh_tokens()
        if not tokens:
            raise AuthError(self.name, f"missing credentials: set {REFRESH_CREDENTIAL} (or run "
                                       "`marketd auth stockx`)", credential=REFRESH_CREDENTIAL)
        for i, refresh_token in enumerate(tokens):
            resp = await self._send("POST", f"{self._opt('auth_url').rstrip('/')}/oauth/token",
                                    counted=False, headers={"Accept": "application/json"},
                                    data={"grant_type": "refresh_token",
                                          "client_id": self._opt("client_id"),
                                          "client_secret": self._opt("client_secret"),
                                          "audience": AUDIENCE,
                                          "refresh_token": refresh_token})
            if resp.status == 200:
                return await self._accept_token(resp, refresh_token)
            self._raise_token_error(resp, last=i == len(tokens) - 1)
            log.warning("stockx_refresh_token_refused", tried=i + 1, left=len(tokens) - i - 1)
        raise AssertionError("unreachable")  # _raise_token_error raises on the last token

    async def _accept_token(self, resp: Response, used: str) -> str:
        data = self._json(resp, "the token endpoint")
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise TransientError(self.name, "token response without access_token",
                                 status=resp.status)
        try:
            lifetime = float(data.get("expires_in") or DEFAULT_TOKEN_LIFETIME_S)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME_S
        now = self.ctx.clock.now()
        self._access = token
        self._refresh_at = now + lifetime - min(TOKEN_REFRESH_MARGIN_S, lifetime / 2)
        await self.ctx.store.put_token(self.name, "access_token", token, now + lifetime)
        rotated = data.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != used:
            # [?] whether StockX rotates refresh tokens is unknown; keep the newest if it does
            self._refresh_token = rotated
            await self.ctx.store.put_token(self.name, "refresh_token", rotated, None)
            log.info("stockx_refresh_token_rotated")
        elif used != self._opt("refresh_token"):
            self._refresh_token = used
        log.info("stockx_token_minted", expires_in_s=round(lifetime))
        return token

    def _raise_token_error(self, resp: Response, *, last: bool) -> None:
        """Map a refused token request; returns only for invalid_grant with tokens left."""
        detail = error_detail(resp)
        try:
            body = resp.json()
            code = body.get("error") if isinstance(body, dict) else None
        except (ValueError, UnicodeDecodeError):
            code = None
        if code == "invalid_grant":
            if not last:
                return
            raise AuthError(self.name, f"the refresh token was revoked or has expired "
                                       f"(HTTP {resp.status} invalid_grant): run `marketd auth "
                                       f"stockx` again", credential=REFRESH_CREDENTIAL,
                            status=resp.status)
        if resp.status == 429:
            raise RateLimited(self.name, "rate limited by the token endpoint (HTTP 429)",
                              retry_after_s=retry_after_seconds(resp.headers,
                                                                now=self.ctx.clock.now()))
        if resp.status in TRANSIENT_STATUSES or resp.status >= 500:
            raise TransientError(self.name, f"token endpoint: HTTP {resp.status}"
                                            f"{': ' + detail if detail else ''}",
                                 status=resp.status)
        raise AuthError(self.name, f"the token endpoint refused the client (HTTP {resp.status}"
                                   f"{': ' + detail if detail else ''})",
                        credential=CLIENT_CREDENTIAL, status=resp.status)

    # ---- requests ----

    def _auth_headers(self, token: str | None) -> dict[str, str]:
        return {"x-api-key": self._opt("api_key"), "Authorization": f"Bearer {token}",
                "Accept": "application/json"}

    async def _get(self, path: str, what: str, sku: str,
                   params: Mapping[str, str] | None = None) -> Any:
        """One counted GET to the API (a refused token renewed once, in the base)."""
        return await self._request("GET", f"{self.ctx.config.base_url}{path}", what=what,
                                   subject=sku, params=params)

    def _error(self, resp: Response, what: str, subject: str) -> ProviderError:
        """The typed error of a non-2xx answer, with StockX's own message and the SKU."""
        detail = error_detail(resp)
        tail = f"HTTP {resp.status} on {what}" + (f": {detail}" if detail else "")
        log.info("stockx_http_error", status=resp.status, endpoint=what, detail=detail)
        # [?] StockX documents no Retry-After on 429; None lets the worker pick its pause
        return self._status_error(resp, tail, subject)

    # ---- catalog ----

    async def _catalog(self, sku: str) -> tuple[Product, bool]:
        """The SKU's product and variants, and whether they came from the cache."""
        entry = await self.ctx.store.get_catalog(self.name, sku)
        if entry is not None:
            product = Product.from_cache(entry)
            fetched = parse_iso(entry.get("fetched_at"))
            if product and fetched is not None \
                    and self.ctx.clock.now() - fetched < CATALOG_TTL_S:
                return product, True
        return await self._lookup(sku), False

    async def _lookup(self, sku: str) -> Product:
        found = await self._get("/v2/catalog/search", "search", sku, params={
            "query": sku, "pageNumber": "1", "pageSize": SEARCH_PAGE_SIZE})
        products = found.get("products") if isinstance(found, dict) else None
        if not isinstance(products, list):
            raise TransientError(self.name, "search answered without a products list")
        match = match_style(products, sku)
        if match is None:
            log.info("stockx_search_no_match", sku=sku, results=len(products))
            raise NotFound(self.name, f"not found on stockx: {sku}")
        product_id = str(match["productId"])
        raw = await self._get(f"/v2/catalog/products/{quote(product_id, safe='')}/variants",
                              "variants", sku)
        if not isinstance(raw, list):
            raise TransientError(self.name, "variants answered without an array")
        # [?] v2 search shows no image; take one if a product ever carries it
        image = match.get("imageUrl") or as_dict(match.get("media")).get("imageUrl")
        product = Product(
            product_id=product_id, title=_str(match.get("title")), brand=_str(match.get("brand")),
            image_url=_str(image), url_key=_str(match.get("urlKey")),
            variants=tuple(v for v in map(parse_variant, raw) if v is not None))
        await self.ctx.store.put_catalog(
            self.name, sku, product_id=product_id, title=product.title, brand=product.brand,
            image_url=product.image_url, data=product.cache_data(),
            colourway=_str(as_dict(match.get("productAttributes")).get("colorway")))
        log.info("stockx_catalog_cached", sku=sku, product_id=product_id,
                 variants=len(product.variants))
        return product

    # ---- prices ----

    async def fetch_group(self, sku: str, jobs: Sequence[Job]) -> FetchResult:
        if not jobs:
            return FetchResult()
        await self._check_credentials()
        product, cached = await self._catalog(sku)
        try:
            return await self._priced(sku, jobs, product)
        except NotFound:
            if not cached:
                raise
            # product ids can go stale and start answering 404 [OBS]: look the SKU up once more
            log.info("stockx_catalog_stale", sku=sku, product_id=product.product_id)
            await self.ctx.store.delete_catalog(self.name, sku)
            return await self._priced(sku, jobs, await self._lookup(sku))

    async def _priced(self, sku: str, jobs: Sequence[Job], product: Product) -> FetchResult:
        result = FetchResult()
        chosen: dict[str, Variant] = {}
        for job in jobs:
            match = resolve_size(product, job, sku)
            if isinstance(match, ProviderError):
                result.outcomes[job.id] = match
            else:
                chosen[job.id] = match
        if not chosen:
            return result  # no size matched: spend nothing on market data
        currency = self._opt("currency").upper() or "GBP"
        path = f"/v2/catalog/products/{quote(product.product_id, safe='')}/market-data"
        # never send `country`: deprecated, live it answers 400 [DOC + OBS]
        rows = await self._get(path, "market-data", sku, params={"currencyCode": currency})
        if not isinstance(rows, list):
            raise TransientError(self.name, "market-data answered without an array")
        market = {str(r["variantId"]): r for r in rows
                  if isinstance(r, dict) and r.get("variantId")}
        now = self.ctx.clock.now()
        answered = {str(r.get("currencyCode")).upper() for r in market.values()
                    if isinstance(r.get("currencyCode"), str) and r.get("currencyCode")}
        if answered and answered != {currency}:
            # [INF] store what the amounts are in, not what was asked for
            log.warning("stockx_currency_mismatch", sku=sku, asked=currency,
                        answered=sorted(answered))

        def price(key: str | None, variant: Variant) -> Price:
            row = market.get(variant.variant_id) or {}  # absent: no market, null amounts
            std = as_dict(row.get("standardMarketData"))
            ask = row.get("lowestAskAmount")
            got = row.get("currencyCode")
            return Price(provider=self.name, sku=sku, size=key,
                         currency=got.upper() if isinstance(got, str) and got else currency,
                         lowest_ask=to_minor(ask if ask is not None else std.get("lowestAsk")),
                         highest_bid=to_minor(row.get("highestBidAmount")),
                         last_sale=None,  # the public v2 API has no last sale [DOC]
                         fetched_at=now, extra=stockx_extra(row))

        for job in jobs:
            if job.id in chosen:
                result.outcomes[job.id] = price(job.size_key, chosen[job.id])
        served = {v.variant_id for v in chosen.values()}
        taken = {job.size_key for job in jobs}
        uk_counts = Counter(s for v in product.variants for s in set(v.sizes("uk")))
        for variant in product.variants:
            key = extra_key(variant, uk_counts)
            if variant.variant_id in served or variant.variant_id not in market \
                    or key is None or key in taken:
                continue
            taken.add(key)
            result.extra_prices.append(price(key, variant))
        log.info("stockx_market_data", sku=sku, jobs=len(jobs), matched=len(chosen),
                 variants=len(market), extra=len(result.extra_prices))
        return result


# the market-data amounts a seller weighs beside the lowest ask [DOC: api.stockx.com/v2
# market-data: flexLowestAskAmount, earnMoreAmount, sellFasterAmount], by marketd's names
EXTRA_AMOUNTS = (("flex_lowest_ask", "flexLowestAskAmount"), ("earn_more", "earnMoreAmount"),
                 ("sell_faster", "sellFasterAmount"))


def stockx_extra(row: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    out = []
    for name, key in EXTRA_AMOUNTS:
        amount = to_minor(row.get(key))
        if amount is not None:
            out.append((name, amount))
    return tuple(out)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
