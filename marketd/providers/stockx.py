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
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import structlog

from marketd.clock import parse_iso
from marketd.errors import (
    AuthError,
    NotFound,
    PermanentError,
    ProviderError,
    RateLimited,
    SizeError,
    TransientError,
    ValidationError,
)
from marketd.models import Job, Price, normalize_size, size_key
from marketd.providers.base import (
    FetchResult,
    Provider,
    ProviderContext,
    Response,
    retry_after_seconds,
)

log = structlog.get_logger(__name__)

AUDIENCE = "gateway.stockx.com"
DEFAULT_TOKEN_LIFETIME_S = 43200.0  # [OBS] 12 h; only used when expires_in is missing
TOKEN_REFRESH_MARGIN_S = 300.0  # refresh this long before the access token expires
SEARCH_PAGE_SIZE = "50"  # [DOC] the default pageSize is 1 and the maximum 50
CATALOG_TTL_S = 7 * 86400.0  # [INF] look a SKU up again weekly, in case variants were added
CATALOG_FORMAT = 1
TRANSIENT_STATUSES = frozenset({408, 500, 502, 503, 504})

ENV_NAMES = {"api_key": "STOCKX_API_KEY", "client_id": "STOCKX_CLIENT_ID",
             "client_secret": "STOCKX_CLIENT_SECRET", "refresh_token": "STOCKX_REFRESH_TOKEN"}
API_CREDENTIAL = "STOCKX_API_KEY / STOCKX_REFRESH_TOKEN"
CLIENT_CREDENTIAL = "STOCKX_CLIENT_ID / STOCKX_CLIENT_SECRET"
REFRESH_CREDENTIAL = "STOCKX_REFRESH_TOKEN"

_PAREN_RE = re.compile(r"\([^)]*\)")
_PREFIX_RE = re.compile(r"^(?:US\s+[MW]|[A-Z]{2})\s+", re.IGNORECASE)


# ---- catalog model and size matching (pure) ----------------------------------------------------


def label_size(label: str) -> str | None:
    """A conversion label to a normalised size: ``"UK 6 (EU 39)"`` -> ``"6"``,
    ``"EU 42 2/3"`` -> ``"42 2/3"``, ``"US W 8.5"`` -> ``"8.5"``; None if it is no size."""
    text = _PREFIX_RE.sub("", _PAREN_RE.sub("", label).strip()).strip()
    try:
        return normalize_size(text)
    except ValidationError:
        return None


@dataclass(frozen=True)
class Variant:
    variant_id: str
    value: str  # variantValue: "10" (US M), "8.5W" (US W), "5.5Y" (US youth)
    conversions: tuple[tuple[str, str], ...]  # (type, label): ("uk", "UK 6 (EU 39)")

    def sizes(self, kind: str) -> list[str]:
        """The normalised sizes of one conversion type (``"uk"`` -> ``["6"]``)."""
        return [s for t, label in self.conversions if t == kind and (s := label_size(label))]

    def describe(self) -> str:
        """How a person tells this variant apart: its EU size, else its US size."""
        for kind in ("eu", "us m", "us w", "us"):
            for t, label in self.conversions:
                if t == kind:
                    return _PAREN_RE.sub("", label).strip()
        return f"US {self.value}"


@dataclass(frozen=True)
class Product:
    product_id: str
    title: str | None
    brand: str | None
    image_url: str | None
    url_key: str | None
    variants: tuple[Variant, ...]

    def cache_data(self) -> dict[str, Any]:
        """What ``market_catalog.data`` holds. Other clients read it (alias.py sizes through
        ``sizes.options_from_stockx``), so keep the shape: ``{"format": 1, "url_key",
        "variants": [{"id", "value", "conversions": [[type, label], ...]}]}``."""
        return {"format": CATALOG_FORMAT, "url_key": self.url_key,
                "variants": [{"id": v.variant_id, "value": v.value,
                              "conversions": [list(c) for c in v.conversions]}
                             for v in self.variants]}

    @classmethod
    def from_cache(cls, entry: Mapping[str, Any]) -> Product | None:
        """A cached catalog entry back to a Product; None if it is missing or malformed."""
        data = entry.get("data")
        if not entry.get("product_id") or not isinstance(data, dict) \
                or data.get("format") != CATALOG_FORMAT:
            return None
        try:
            variants = tuple(
                Variant(str(v["id"]), str(v["value"]),
                        tuple((str(t), str(label)) for t, label in v["conversions"]))
                for v in data["variants"])
        except (KeyError, TypeError, ValueError):
            return None
        return cls(str(entry["product_id"]), entry.get("title"), entry.get("brand"),
                   entry.get("image_url"), data.get("url_key"), variants)


def parse_variant(raw: Any) -> Variant | None:
    """One ProductVariant of ``/variants``; None if it has no id."""
    if not isinstance(raw, dict) or not raw.get("variantId"):
        return None
    chart = _dict(raw.get("sizeChart"))
    conversions = tuple(
        (str(c["type"]).lower(), str(c["size"]))
        for c in (chart.get("availableConversions") or [])
        if isinstance(c, dict) and c.get("type") and c.get("size"))
    return Variant(str(raw["variantId"]), str(raw.get("variantValue") or ""), conversions)


def style_key(text: str) -> str:
    """A styleId compared loosely: case-insensitive, space and hyphen alike."""
    return re.sub(r"[\s\-]+", "-", text.strip().upper())


def match_style(products: Sequence[Any], sku: str) -> dict[str, Any] | None:
    """The search result whose styleId is exactly the SKU (search results are fuzzy [OBS])."""
    want = style_key(sku)
    for p in products:
        # [INF] a few products list several style ids separated by "/"
        if isinstance(p, dict) and p.get("productId") and isinstance(p.get("styleId"), str) \
                and want in {style_key(s) for s in p["styleId"].split("/")}:
            return p
    return None


def _wanted(job: Job) -> tuple[str, str, str, str]:
    """(conversion type, normalised size, scale name, label) for a job with a size.

    The system names the scale; under US the suffix picks it: bare = US M, W = US W,
    Y/C = US youth/child (type "us", whose labels keep the suffix [?]). Under UK and EU a
    suffix only says whose shoe it is: the number is matched in that system."""
    size = job.size or ""
    suffix = size[-1] if size[-1:] in ("W", "Y", "C") else ""
    number = size[:-1] if suffix else size
    if job.size_system == "EU":
        return "eu", number, "EU", f"EU {size}"
    if job.size_system == "US":
        if suffix == "W":
            return "us w", number, "US W", f"US W {number}"
        if suffix:
            return "us", size, "US", f"US {size}"
        return "us m", size, "US M", f"US M {size}"
    return "uk", number, "UK", f"UK {size}"


def _size_sort(value: str) -> tuple[float, str]:
    m = re.match(r"\d+(?:\.\d+)?", value)
    return (float(m.group()) if m else 1e9, value)


def resolve_size(product: Product, job: Job, sku: str) -> Variant | SizeError:
    """The one variant a job's size names, through StockX's own conversions (never a formula)."""
    variants = product.variants
    if job.size is None:
        if len(variants) == 1:
            return variants[0]
        some = ", ".join(v.describe() for v in variants[:6])
        return SizeError("stockx", f"{sku} has {len(variants)} sizes on stockx, the job none: "
                                   f"enqueue a size ({some}…)")
    kind, value, scale, label = _wanted(job)
    found: dict[str, Variant] = {}
    for v in variants:
        sizes = v.sizes(kind)
        hit = value in sizes or (kind == "us" and value[:-1] in sizes)
        if job.size_system == "US":  # variantValue is StockX's own US size with its suffix [OBS]
            hit = hit or label_size(v.value) == job.size
        if hit:
            found[v.variant_id] = v
    if len(found) == 1:
        return next(iter(found.values()))
    if found:
        names = " or ".join(v.describe() for v in found.values())
        hint = "enqueue the EU size" if job.size_system != "EU" else "enqueue the US size"
        return SizeError("stockx", f"{label} is ambiguous on stockx: {names}; {hint}")
    available = sorted({s for v in variants for s in v.sizes(kind)}, key=_size_sort)
    if not available:
        available = [v.value for v in variants if v.value]
        scale = "its"
    listed = ", ".join(available[:12]) + (", …" if len(available) > 12 else "")
    where = f"{scale} sizes: {listed}" if available else "it has no sizes: enqueue none"
    return SizeError("stockx", f"{label} not found on stockx for {sku} ({where})")


def extra_key(variant: Variant, uk_counts: Counter[str]) -> str | None:
    """The size key another variant's price is stored under: its UK size when that names only
    this variant, else ``EU 44``-style, else ``US 10``-style."""
    uk = variant.sizes("uk")
    if len(uk) == 1 and uk_counts[uk[0]] == 1:
        return uk[0]
    eu = variant.sizes("eu")
    if eu:
        return size_key(eu[0], "EU")
    us = label_size(variant.value)
    return size_key(us, "US") if us else None


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


def _json(resp: Response, what: str) -> Any:
    try:
        return resp.json()
    except (ValueError, UnicodeDecodeError):
        raise TransientError("stockx", f"bad JSON from {what} (HTTP {resp.status}, "
                                       f"{len(resp.body)} bytes)", status=resp.status) from None


# ---- the client --------------------------------------------------------------------------------


class StockXClient(Provider):
    """Prices for one SKU's sizes from StockX, spending as few counted calls as it can."""

    name = "stockx"

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

    async def _access_token(self, rejected: str | None = None) -> str:
        """A valid access token: from memory, else from the store, else minted.
        ``rejected`` is a token the API just refused; it is never handed out again."""
        async with self._lock:
            now = self.ctx.clock.now()
            if self._access and self._access != rejected and now < self._refresh_at:
                return self._access
            stored = await self.ctx.store.get_token(self.name, "access_token")
            if stored and stored[0] != rejected and stored[1] is not None \
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
        data = _json(resp, "the token endpoint")
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
                              retry_after_s=retry_after_seconds(resp.headers))
        if resp.status in TRANSIENT_STATUSES or resp.status >= 500:
            raise TransientError(self.name, f"token endpoint: HTTP {resp.status}"
                                            f"{': ' + detail if detail else ''}",
                                 status=resp.status)
        raise AuthError(self.name, f"the token endpoint refused the client (HTTP {resp.status}"
                                   f"{': ' + detail if detail else ''})",
                        credential=CLIENT_CREDENTIAL, status=resp.status)

    # ---- requests ----

    def _headers(self, token: str) -> dict[str, str]:
        return {"x-api-key": self._opt("api_key"), "Authorization": f"Bearer {token}",
                "Accept": "application/json"}

    async def _get(self, path: str, what: str, sku: str,
                   params: Mapping[str, str] | None = None) -> Any:
        """One counted GET to the API; a 401/403 renews the token and tries once more."""
        url = f"{self.ctx.config.base_url}{path}"
        token = await self._access_token()
        resp = await self._send("GET", url, headers=self._headers(token), params=params)
        if resp.status in (401, 403):
            log.info("stockx_token_rejected", status=resp.status, endpoint=what)
            token = await self._access_token(rejected=token)
            resp = await self._send("GET", url, headers=self._headers(token), params=params)
        self._raise_for_status(resp, what, sku)
        return _json(resp, what)

    def _raise_for_status(self, resp: Response, what: str, sku: str) -> None:
        status = resp.status
        if status == 200:
            return
        detail = error_detail(resp)
        tail = f"HTTP {status} on {what}" + (f": {detail}" if detail else "")
        log.info("stockx_http_error", status=status, endpoint=what, detail=detail)
        if status == 429:
            # [?] StockX documents no Retry-After; None lets the worker pick its pause
            raise RateLimited(self.name, f"rate limited ({tail})",
                              retry_after_s=retry_after_seconds(resp.headers))
        if status == 404:
            raise NotFound(self.name, f"not found on stockx: {sku} ({tail})", status=status)
        if status in (401, 403):
            raise AuthError(self.name, f"credentials refused after renewing the token ({tail})",
                            credential=API_CREDENTIAL, status=status)
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientError(self.name, tail, status=status)
        if 400 <= status < 500:
            raise PermanentError(self.name, tail, status=status)
        raise TransientError(self.name, f"unexpected answer ({tail})", status=status)

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
        image = match.get("imageUrl") or _dict(match.get("media")).get("imageUrl")
        product = Product(
            product_id=product_id, title=_str(match.get("title")), brand=_str(match.get("brand")),
            image_url=_str(image), url_key=_str(match.get("urlKey")),
            variants=tuple(v for v in map(parse_variant, raw) if v is not None))
        await self.ctx.store.put_catalog(
            self.name, sku, product_id=product_id, title=product.title, brand=product.brand,
            image_url=product.image_url, data=product.cache_data())
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
            std = _dict(row.get("standardMarketData"))
            ask = row.get("lowestAskAmount")
            got = row.get("currencyCode")
            return Price(provider=self.name, sku=sku, size=key,
                         currency=got.upper() if isinstance(got, str) and got else currency,
                         lowest_ask=to_minor(ask if ask is not None else std.get("lowestAsk")),
                         highest_bid=to_minor(row.get("highestBidAmount")),
                         last_sale=None,  # the public v2 API has no last sale [DOC]
                         fetched_at=now)

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


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
