"""The eBay client: Browse API item search, one call per job, with a cached application token.

Requests (providers.md §3):

- ``POST /identity/v1/oauth2/token`` (client_credentials): minting is limited to 1,000 a day, so
  the token is kept in memory and in the store (a restart reuses it) and renewed a few minutes
  before it expires; the call is not counted against the Browse budget.
- ``GET /buy/browse/v1/item_summary/search``: active fixed-price new listings, cheapest first.
  Browse has no product-level call and no sold data, so each job costs one call and only
  ``lowest_ask`` (price + first shipping cost) is ever known.
- ``GET /developer/analytics/v1_beta/rate_limit/`` (:meth:`EbayClient.quota`): what is left
  of the daily Browse quota (shared by every app on the key); the scheduler asks hourly and
  never plans more calls than that before the reset. Not counted: Analytics has its own quota.

A 429 with errorId 2001 means the daily quota is spent: QuotaExhausted until the next midnight
in America/Los_Angeles, when eBay resets it.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import structlog

from marketd.clock import parse_iso
from marketd.errors import (
    AuthError,
    MarketdError,
    ProviderError,
    QuotaExhausted,
    SizeError,
    TransientError,
)
from marketd.models import Job, Price
from marketd.providers.base import (
    FetchResult,
    Provider,
    ProviderContext,
    Quota,
    Response,
)
from marketd.providers.sizes import split_suffix
from marketd.providers.stockx_catalog import Product, resolve_size

log = structlog.get_logger(__name__)

CREDENTIAL = "EBAY_CLIENT_ID / EBAY_CLIENT_SECRET"
SCOPE = "https://api.ebay.com/oauth/api_scope"
TOKEN_KIND = "access_token"  # noqa: S105 -- the store key of the token, not a secret
TOKEN_RENEW_EARLY_S = 300.0
TOKEN_DEFAULT_LIFETIME_S = 7200.0
SEARCH_LIMIT = 200  # Browse's maximum page [DOC]; the default 50 let cheap junk crowd sizes out
MAX_PAGES = 2  # searches per SKU at most: a second page only while some size has no listing
QUOTA_ERROR_ID = 2001
QUOTA_TZ = ZoneInfo("America/Los_Angeles")
MARKETPLACE_CURRENCY = {
    "EBAY_GB": "GBP", "EBAY_US": "USD", "EBAY_DE": "EUR", "EBAY_FR": "EUR", "EBAY_IT": "EUR",
    "EBAY_ES": "EUR", "EBAY_IE": "EUR", "EBAY_NL": "EUR", "EBAY_AT": "EUR", "EBAY_BE": "EUR",
    "EBAY_AU": "AUD", "EBAY_CA": "CAD", "EBAY_CH": "CHF", "EBAY_PL": "PLN", "EBAY_HK": "HKD",
    "EBAY_SG": "SGD",
}
MARKETPLACE_COUNTRY = {
    "EBAY_GB": "GB", "EBAY_US": "US", "EBAY_DE": "DE", "EBAY_FR": "FR", "EBAY_IT": "IT",
    "EBAY_ES": "ES", "EBAY_IE": "IE", "EBAY_NL": "NL", "EBAY_AT": "AT", "EBAY_BE": "BE",
    "EBAY_AU": "AU", "EBAY_CA": "CA", "EBAY_CH": "CH", "EBAY_PL": "PL", "EBAY_HK": "HK",
    "EBAY_SG": "SG",
}
# [?] the shoe-size aspect of trainer categories, by marketplace, and the size system its
# values are in; used only with a configured category_ids (aspect_filter needs the category)
MARKETPLACE_SIZE_ASPECT = {"EBAY_GB": "UK Shoe Size", "EBAY_US": "US Shoe Size"}


class EbayClient(Provider):
    name = "ebay"
    credential = CREDENTIAL
    renewal_event = "ebay_token_refused"

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(ctx)
        self._token: tuple[str, float] | None = None  # (value, expires_at)
        self._token_lock = asyncio.Lock()  # one mint at a time, even for concurrent groups

    async def fetch_group(self, sku: str, jobs: Sequence[Job]) -> FetchResult:
        """Every size of the SKU from one search (a second page only while a size has no
        listing yet; at most MAX_PAGES): listings are matched to each job's size from that one
        answer. A lone sized job whose GTIN StockX's catalog gave is searched by ``gtin=``
        first, falling back to the SKU search when that finds nothing."""
        if not jobs:
            return FetchResult()
        pages_left = MAX_PAGES
        gtin = await self._gtin(sku, jobs[0]) if len(jobs) == 1 and jobs[0].size else None
        if gtin is not None:
            found = _list(await self._search(sku, jobs, gtin=gtin), "itemSummaries")
            if found:  # a GTIN names one variant: every listing is that size
                return self._result(sku, jobs, found, by_gtin=True)
            pages_left -= 1
        items: list[Mapping[str, Any]] = []
        offset = 0
        stop: MarketdError | None = None
        while pages_left > 0:
            try:
                body = await self._search(sku, jobs, offset=offset)
            except MarketdError as exc:
                if not offset:
                    raise  # the first page: the whole group shares the failure
                stop = exc  # a later page: it is the outcome of each size still unpriced
                break
            pages_left -= 1
            items += _list(body, "itemSummaries")
            if all(self._matching(items, sku, j) for j in jobs) \
                    or not isinstance(body, Mapping) or not body.get("next"):
                break
            offset += SEARCH_LIMIT
        return self._result(sku, jobs, items, stop=stop)

    def _result(self, sku: str, jobs: Sequence[Job], items: Sequence[Mapping[str, Any]], *,
                by_gtin: bool = False, stop: MarketdError | None = None) -> FetchResult:
        result = FetchResult()
        for job in jobs:
            matching = items if by_gtin else self._matching(items, sku, job)
            result.outcomes[job.id] = stop if stop is not None and not matching \
                else self._price(sku, job, matching)
        log.info("ebay_search_priced", sku=sku, jobs=len(jobs), listings=len(items),
                 by_gtin=by_gtin)
        return result

    @staticmethod
    def _matching(items: Sequence[Mapping[str, Any]], sku: str,
                  job: Job) -> list[Mapping[str, Any]]:
        return [it for it in items
                if title_matches(str(it.get("title") or ""), sku, job.size, job.size_system)]

    async def quota(self) -> Quota | None:
        """What is left of today's Browse quota (getRateLimits), or None if eBay does not say.
        Analytics has a quota of its own, so the call is not counted against Browse's."""
        body = await self._get("/developer/analytics/v1_beta/rate_limit/",
                               {"api_context": "buy", "api_name": "browse"}, counted=False)
        for api in _list(body, "rateLimits"):
            for resource in _list(api, "resources"):
                if str(resource.get("name", "")).lower() != "buy.browse":
                    continue
                for rate in _list(resource, "rates"):
                    remaining = rate.get("remaining")
                    if not isinstance(remaining, int) or isinstance(remaining, bool):
                        continue
                    now = self.ctx.clock.now()
                    reset_at = _reset_at(rate.get("reset"))
                    if reset_at is None or reset_at <= now:
                        reset_at = now + seconds_until_quota_reset(now)
                    limit = rate.get("limit")
                    return Quota(max(0, remaining), reset_at,
                                 limit if isinstance(limit, int) else None)
        return None

    async def remaining_quota(self) -> int | None:
        """Calls left today on the Browse API (see :meth:`quota`)."""
        quota = await self.quota()
        return None if quota is None else quota.remaining

    # ---- search ----------------------------------------------------------------------------

    async def _search(self, sku: str, jobs: Sequence[Job], *, offset: int = 0,
                      gtin: str | None = None) -> Any:
        """One ``item_summary/search``: the SKU (or a GTIN), new fixed-price listings that
        deliver to the user's country, cheapest first, 200 a page; the category and its shoe
        size aspect when configured; shipping priced for ``contextualLocation``."""
        marketplace = self._marketplace()
        country = self._country()
        filters = ["conditionIds:{1000}", "buyingOptions:{FIXED_PRICE}"]
        if country:
            filters.append(f"deliveryCountry:{country}")
        params = {"filter": ",".join(filters), "limit": str(SEARCH_LIMIT), "sort": "price"}
        if gtin is not None:
            params["gtin"] = gtin
        else:
            params["q"] = sku
        if offset:
            params["offset"] = str(offset)
        category = str(self.ctx.config.options.get("category_ids") or "").strip()
        if category:
            params["category_ids"] = category
            aspect = size_aspect_filter(category, self._size_aspect(), jobs)
            if aspect and gtin is None:
                params["aspect_filter"] = aspect
        headers = {"X-EBAY-C-MARKETPLACE-ID": marketplace}
        if country:
            location = quote(f"country={country}", safe="")
            postcode = str(self.ctx.config.options.get("delivery_postcode") or "").strip()
            if postcode:
                location += quote(f",zip={postcode}", safe="")
            headers["X-EBAY-C-ENDUSERCTX"] = f"contextualLocation={location}"
        return await self._get("/buy/browse/v1/item_summary/search", params, headers)

    def _price(self, sku: str, job: Job, items: Sequence[Mapping[str, Any]]) -> Price:
        """The lowest total (price + first shipping) in the marketplace's currency."""
        currency = MARKETPLACE_CURRENCY.get(self._marketplace())
        asks: list[int] = []
        for item in items:
            ask = _total_cost(item)
            if ask is not None:
                currency = currency or ask[1]
                if ask[1] == currency:
                    asks.append(ask[0])
        return Price(provider=self.name, sku=sku, size=job.size_key,
                     currency=currency or "USD", lowest_ask=min(asks, default=None),
                     highest_bid=None, last_sale=None, fetched_at=self.ctx.clock.now())

    async def _gtin(self, sku: str, job: Job) -> str | None:
        """The UPC of the job's variant from StockX's cached catalog (no call), if any."""
        entry = await self.ctx.store.get_catalog("stockx", sku)
        product = Product.from_cache(entry) if entry else None
        if product is None:
            return None
        variant = resolve_size(product, job, sku)
        if isinstance(variant, SizeError):
            return None
        return next((g for kind, g in variant.gtins if kind.upper() in ("UPC", "")), None)

    def _country(self) -> str:
        """The delivery country shipping is priced for: the option, else the marketplace's."""
        configured = str(self.ctx.config.options.get("delivery_country") or "").strip()
        return (configured or MARKETPLACE_COUNTRY.get(self._marketplace(), "")).upper()

    def _size_aspect(self) -> str:
        value = str(self.ctx.config.options.get("size_aspect", "auto")).strip()
        if value.lower() == "auto":
            return MARKETPLACE_SIZE_ASPECT.get(self._marketplace(), "")
        return value

    def _marketplace(self) -> str:
        return str(self.ctx.config.options.get("marketplace") or "EBAY_GB").upper()

    # ---- token -----------------------------------------------------------------------------

    async def _access_token(self, refused: str | None = None) -> str:
        """A live token: memory, then the store, then a new one. ``refused`` is a token eBay
        just turned down, never to be handed out again."""
        async with self._token_lock:
            return await self._live_token(refused)

    async def _live_token(self, refused: str | None) -> str:
        now = self.ctx.clock.now()
        if self._token and self._token[0] != refused \
                and self._token[1] - TOKEN_RENEW_EARLY_S > now:
            return self._token[0]
        stored = await self.ctx.store.get_token(self.name, TOKEN_KIND)
        if stored and stored[0] != refused and stored[1] is not None \
                and stored[1] - TOKEN_RENEW_EARLY_S > now:
            self._token = (stored[0], stored[1])
            return stored[0]
        return await self._mint()

    async def _mint(self) -> str:
        """``POST /identity/v1/oauth2/token``: not counted against the Browse budget."""
        options = self.ctx.config.options
        client_id = str(options.get("client_id") or "")
        secret = str(options.get("client_secret") or "")
        if not client_id or not secret:
            raise AuthError(self.name, "no eBay client id and secret are configured",
                            credential=CREDENTIAL)
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")
        resp = await self._send(
            "POST", f"{self.ctx.config.base_url}/identity/v1/oauth2/token", counted=False,
            headers={"Authorization": f"Basic {basic}"},
            data={"grant_type": "client_credentials", "scope": SCOPE})
        if resp.status in (400, 401, 403):
            # invalid_client and friends: the credentials themselves are wrong
            self._log_failure(resp, "/identity/v1/oauth2/token")
            raise AuthError(self.name, f"eBay refused the client credentials (HTTP "
                                       f"{resp.status})", credential=CREDENTIAL,
                            status=resp.status)
        body = self._parse(resp, "/identity/v1/oauth2/token")
        token = body.get("access_token") if isinstance(body, Mapping) else None
        if not isinstance(token, str) or not token:
            raise TransientError(self.name, "token response without access_token")
        lifetime = body.get("expires_in")
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool):
            lifetime = TOKEN_DEFAULT_LIFETIME_S
        expires_at = self.ctx.clock.now() + float(lifetime)
        self._token = (token, expires_at)
        await self.ctx.store.put_token(self.name, TOKEN_KIND, token, expires_at)
        log.info("ebay_token_minted", expires_at=expires_at)
        return token

    # ---- HTTP ------------------------------------------------------------------------------

    def _auth_headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def _get(self, path: str, params: Mapping[str, str],
                   headers: Mapping[str, str] | None = None, *, counted: bool = True) -> Any:
        """A GET with the app token (counted against the budget unless told otherwise; a
        refused token renewed once, in the base)."""
        return await self._request("GET", f"{self.ctx.config.base_url}{path}", what=path,
                                   counted=counted, headers=headers, params=params)

    def _error(self, resp: Response, what: str, subject: str) -> ProviderError:
        """The typed error of a non-2xx answer (envelope ``{"errors": [{errorId, …}]}``)."""
        status = resp.status
        error_id, message = self._log_failure(resp, what)
        detail = f"HTTP {status}" + (f", errorId {error_id}" if error_id is not None else "") \
            + (f": {message}" if message else "")
        if status == 429 and error_id == QUOTA_ERROR_ID:
            wait = seconds_until_quota_reset(self.ctx.clock.now())
            return QuotaExhausted(self.name, f"daily quota spent ({detail})",
                                  retry_after_s=wait)
        if status in (401, 403):
            return AuthError(self.name, f"eBay refused the application token ({detail})",
                             credential=CREDENTIAL, status=status)
        return self._status_error(resp, detail)

    def _log_failure(self, resp: Response, path: str) -> tuple[int | None, str]:
        error_id, message = _error_body(resp)
        log.warning("ebay_request_failed", path=path, status=resp.status, error_id=error_id,
                    message=message)
        return error_id, message


# ---- pure helpers --------------------------------------------------------------------------------


def size_aspect_filter(category: str, aspect: str, jobs: Sequence[Job]) -> str | None:
    """``aspect_filter`` for the jobs' sizes: ``categoryId:15709,UK Shoe Size:{9|10}`` when
    every job has a size in the aspect's own system (the aspect name starts with it); None
    otherwise, since one search serves every size and an aspect filter would hide the rest."""
    system = aspect.split(" ", 1)[0].upper() if aspect else ""
    if not aspect or not jobs or system not in ("UK", "US", "EU") \
            or "," in category or "|" in aspect:
        return None
    sizes = []
    for job in jobs:
        if job.size is None or job.size_system != system:
            return None
        sizes.append(split_suffix(job.size)[0])
    return f"categoryId:{category},{aspect}:{{{'|'.join(dict.fromkeys(sizes))}}}"


# listings that name the SKU (and often a size) but are not the shoe [INF]
_ACCESSORY = re.compile(r"\b(?:BOX ONLY|EMPTY BOX|NO SHOES|(?:SHOE\s?)?LACES|INSOLES?|"
                        r"CREASE (?:PROTECTORS?|GUARDS?)|KEY ?RING|KEYCHAIN|DUST ?BAG)\b")
_LABEL = r"\b(UK|US|EUR?|CM|JP)"
_LABEL_BEFORE = re.compile(
    _LABEL + r"\s*(?:SIZE|SZ)?[\s.:]*(?:MEN'?S|WOMEN'?S|M|W)?\s*$")
_LABEL_AFTER = re.compile(r"^\s*" + _LABEL + r"\b(?!\s*(?:SIZE\s*)?\d)")


def title_matches(title: str, sku: str, size: str | None, system: str) -> bool:
    """Whether a listing title is about this SKU and, when given, this size.

    - SKU: its parts, split at spaces and hyphens, must appear in order with only spaces or
      hyphens (or nothing) between them and no letter or digit either side; case is ignored.
      ``DD1391 100`` and ``dd1391-100`` match ``DD1391-100``; ``DD1391-101`` and ``DD1391-1001``
      do not.
    - Size (with the SKU cut out of the title first, so its digits cannot count): the number
      must stand alone, not inside another number or fraction (``10`` is not in ``10.5``,
      ``100`` or ``10 1/3``), and must not be labelled with another size system. The label is
      the system word just before the number (``UK 10``, ``UK10``, ``US M 10``, ``UK size 10``)
      or, failing that, just after it (``10 UK``). An unlabelled number (``Size 10``) counts.
      A W/Y/C suffix on the job's size is ignored.
    - Accessories (laces, an empty box, insoles) never match, whatever size they name."""
    text = " ".join(title.upper().split())
    if _ACCESSORY.search(text):
        return False
    parts = [re.escape(p) for p in sku.upper().replace("-", " ").split()]
    if not parts:
        return False
    sku_re = re.compile(r"(?<![A-Z0-9])" + r"[\s-]*".join(parts) + r"(?![A-Z0-9])")
    if not sku_re.search(text):
        return False
    if size is None:
        return True
    number = split_suffix(size)[0].upper()
    m = re.fullmatch(r"(\d+)(?:\.(\d+))?(?:\s*([12])/3)?", number)
    if not m:
        return False
    pattern = m.group(1) + (rf"[.,]{m.group(2)}" if m.group(2) else "") \
        + (rf"\s?{m.group(3)}/3" if m.group(3) else "")
    size_re = re.compile(rf"(?<![\d.,/]){pattern}(?!\d|[.,]\d|\s?[12]/3)")
    rest = sku_re.sub(" ", text)
    for hit in size_re.finditer(rest):
        before = _LABEL_BEFORE.search(rest[max(0, hit.start() - 16):hit.start()])
        label = before.group(1) if before else None
        if label is None:
            after = _LABEL_AFTER.match(rest[hit.end():])
            label = after.group(1) if after else None
        if label is None or label.replace("EUR", "EU") == system:
            return True
    return False


def _reset_at(text: Any) -> float | None:
    """getRateLimits' ``reset`` (ISO-8601 UTC) as epoch seconds; None if absent or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        return parse_iso(text)
    except ValueError:
        return None


def seconds_until_quota_reset(now: float) -> float:
    """Seconds from ``now`` to the next midnight in America/Los_Angeles (eBay's daily reset)."""
    local = datetime.fromtimestamp(now, QUOTA_TZ)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=QUOTA_TZ)
    return midnight.timestamp() - now


def _total_cost(item: Mapping[str, Any]) -> tuple[int, str] | None:
    """Price plus the first shipping option's cost (when given, in the same currency), in minor
    units with the price's currency; None when the price is unreadable."""
    price = item.get("price")
    if not isinstance(price, Mapping):
        return None
    amount = _minor(price.get("value"))
    cur = price.get("currency")
    if amount is None or not isinstance(cur, str):
        return None
    options = item.get("shippingOptions")
    first = options[0] if isinstance(options, list) and options else None
    cost = first.get("shippingCost") if isinstance(first, Mapping) else None
    if isinstance(cost, Mapping) and cost.get("currency", cur) == cur:
        shipping = _minor(cost.get("value"))
        amount += shipping or 0
    return amount, cur


def _minor(value: Any) -> int | None:
    """``"140.00"`` -> 14000."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    try:
        return int((Decimal(str(value)) * 100).to_integral_value(ROUND_HALF_UP))
    except InvalidOperation:
        return None


def _list(body: Any, key: str) -> list[Mapping[str, Any]]:
    value = body.get(key) if isinstance(body, Mapping) else None
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _error_body(resp: Response) -> tuple[int | None, str]:
    """The first error of eBay's envelope: (errorId, longMessage or message)."""
    try:
        body = resp.json()
    except ValueError:
        return None, resp.body[:200].decode("utf-8", "replace").strip()
    errors = _list(body, "errors")
    if not errors:
        return None, ""
    first = errors[0]
    error_id = first.get("errorId")
    message = first.get("longMessage") or first.get("message") or ""
    return (error_id if isinstance(error_id, int) else None), str(message)
