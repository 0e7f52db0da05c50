"""The Alias (GOAT Group) client: one catalog look-up per SKU, cached, and one price call per group.

Requests (providers.md §2), all under ``{base_url}/api/v1`` with ``Authorization: Bearer <PAT>``:

- ``GET /catalog?query=<sku>``: the item whose ``sku`` equals ours, space and hyphen alike
  (Alias writes ``DD1391 100``). Cached in the store, so a refresh costs one call.
- ``GET /pricing_insights/availabilities/{catalog_id}``: every size and condition in one call.
- ``GET /pricing_insights/availability?catalog_id&size&…``: one size, used when a size is absent
  from the list above or that endpoint answers 404.

Prices are USD cents as strings; ``"0"`` means no data. Only NEW + GOOD_CONDITION rows count.
Alias sizes are numeric US sizes in the product's own scale; UK/EU jobs are converted with
:mod:`marketd.providers.sizes` (the StockX catalog entry of the SKU first, then brand charts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any
from urllib.parse import quote as url_quote

import structlog

from marketd.errors import (
    AuthError,
    BudgetExhausted,
    MarketdError,
    NotFound,
    PermanentError,
    ProviderError,
    RateLimited,
    SizeError,
    TransientError,
)
from marketd.models import Job, Price
from marketd.providers.base import FetchResult, Provider, Response
from marketd.providers.sizes import (
    SCALE_NAMES,
    choose,
    format_size,
    options_from_chart,
    options_from_stockx,
    product_scale,
    size_value,
    split_suffix,
)

log = structlog.get_logger(__name__)

CREDENTIAL = "ALIAS_API_TOKEN"
CURRENCY = "USD"  # Alias answers in USD cents whatever the region (providers.md §2)
NEW = "PRODUCT_CONDITION_NEW"
GOOD_BOX = "PACKAGING_CONDITION_GOOD_CONDITION"
# Only the ids a source gives (providers.md §2: 1/2/3 observed in archvd's
# src/lib/services/alias/regions.ts, inferred from prices; /regions itself answers 415). "GLOBAL"
# (or "") sends no region_id, which docs.alias.org documents as global. No source gives AU, CA
# or JP ids, so they are not offered: a guessed id would price another market silently.
REGION_IDS = {"US": "1", "EU": "2", "UK": "3"}
REGIONS = (*REGION_IDS, "GLOBAL")
US_UNIT = "SIZE_UNIT_US"
CATALOG_PAGE = 20
# after one of these, further calls of the same group would fare no better: stop calling
_STOP = (RateLimited, AuthError, BudgetExhausted, TransientError)


@dataclass(frozen=True, slots=True)
class Quote:
    lowest_ask: int | None
    highest_bid: int | None
    last_sale: int | None

    @classmethod
    def parse(cls, availability: Any) -> Quote:
        a = availability if isinstance(availability, Mapping) else {}
        return cls(_cents(a.get("lowest_listing_price_cents")),
                   _cents(a.get("highest_offer_price_cents")),
                   _cents(a.get("last_sold_listing_price_cents")))

    def merge(self, other: Quote) -> Quote:
        """Two rows of one size (consigned and not): the lowest ask, the highest bid, and the
        lower last sale (the rows carry no sale time, so "most recent" cannot be known)."""
        return Quote(_pick(min, self.lowest_ask, other.lowest_ask),
                     _pick(max, self.highest_bid, other.highest_bid),
                     _pick(min, self.last_sale, other.last_sale))


@dataclass(frozen=True, slots=True)
class CatalogItem:
    catalog_id: str
    name: str | None
    brand: str | None
    gender: str | None
    image_url: str | None
    allowed_sizes: tuple[Fraction, ...]  # allowed_sizes[].value, in the item's size_unit
    cached: bool = False
    size_unit: str | None = None
    us_equivalents: tuple[Fraction | None, ...] = ()  # allowed_sizes[].us_size_equivalent

    @property
    def us_native(self) -> bool:
        return self.size_unit in (None, "", US_UNIT)

    def us_sizes(self) -> tuple[Fraction, ...]:
        """The item's sizes as US numbers: ``value`` where the item is sized in US, else each
        size's ``us_size_equivalent`` (providers.md §2)."""
        # [?] price rows' ``size`` is taken to be in the unit the ``size`` parameter is sent
        # in (the US equivalent): no public capture shows a non-US item's rows
        if self.us_native:
            return self.allowed_sizes
        return tuple(us for us in self.us_equivalents if us is not None)


class AliasClient(Provider):
    name = "alias"
    credential = CREDENTIAL
    lookup_calls = 1  # the catalog search

    async def fetch_group(self, sku: str, jobs: Sequence[Job]) -> FetchResult:
        """Catalog (cached: no call), each job's Alias size, then one call for every size.

        A 404 on a cached catalog id looks the SKU up again once; a 404 with a fresh id, or a
        size missing from the list, falls back to one per-size call."""
        self._auth_headers(None)  # no token configured fails here, before any call is spent
        self._market_params()  # and so does a bad region
        item = await self._catalog_item(sku)
        sizes = await self._resolve_sizes(sku, item, jobs)
        if not any(isinstance(s, Fraction) for s in sizes.values()):
            return FetchResult(outcomes=dict(_errors(sizes)))
        quotes = await self._availabilities(item)
        if quotes is None and item.cached:
            # the cached id may be stale: drop it and look the SKU up again, once
            log.info("alias_catalog_stale", sku=sku, catalog_id=item.catalog_id)
            await self.ctx.store.delete_catalog(self.name, sku)
            fresh = await self._search(sku)
            if fresh.catalog_id != item.catalog_id:
                sizes = await self._resolve_sizes(sku, fresh, jobs)
                quotes = await self._availabilities(fresh)
            item = fresh
        return await self._result(sku, item, jobs, sizes, quotes or {})

    # ---- catalog ---------------------------------------------------------------------------

    async def _catalog_item(self, sku: str) -> CatalogItem:
        entry = await self.ctx.store.get_catalog(self.name, sku)
        if entry and entry.get("product_id"):
            data = entry.get("data") or {}
            return CatalogItem(
                catalog_id=entry["product_id"], name=entry.get("title"), brand=entry.get("brand"),
                gender=data.get("gender"), image_url=entry.get("image_url"),
                allowed_sizes=_allowed(data.get("allowed_sizes")), cached=True,
                size_unit=data.get("size_unit"),
                us_equivalents=_allowed(data.get("allowed_sizes"), "us_size_equivalent"))
        return await self._search(sku)

    async def _search(self, sku: str) -> CatalogItem:
        """``GET /catalog?query=``: the first item whose SKU is ours; stored for next time."""
        body = await self._get("/catalog", {"query": sku, "limit": str(CATALOG_PAGE)})
        items = body.get("catalog_items") if isinstance(body, Mapping) else None
        wanted = _sku_key(sku)
        match = next((it for it in items or () if isinstance(it, Mapping)
                      and isinstance(it.get("sku"), str) and _sku_key(it["sku"]) == wanted
                      and it.get("catalog_id")), None)
        if match is None:
            raise NotFound(self.name, f"not found on alias: {sku}")
        raw_sizes = match.get("allowed_sizes") or []
        item = CatalogItem(
            catalog_id=str(match["catalog_id"]), name=match.get("name"), brand=match.get("brand"),
            gender=match.get("gender"), image_url=match.get("main_picture_url"),
            allowed_sizes=_allowed(raw_sizes), size_unit=match.get("size_unit"),
            us_equivalents=_allowed(raw_sizes, "us_size_equivalent"))
        await self.ctx.store.put_catalog(
            self.name, sku, product_id=item.catalog_id, title=item.name, brand=item.brand,
            image_url=item.image_url, colourway=_text(match.get("colorway")),
            data={"sku": match.get("sku"), "gender": item.gender, "allowed_sizes": raw_sizes,
                  "size_unit": match.get("size_unit")})
        return item

    # ---- sizes -----------------------------------------------------------------------------

    async def _resolve_sizes(self, sku: str, item: CatalogItem,
                             jobs: Sequence[Job]) -> dict[str, Fraction | SizeError]:
        """Each job's Alias size (US, the product's own scale), or why it has none."""
        variants: list[Any] | None = None
        out: dict[str, Fraction | SizeError] = {}
        for job in jobs:
            if job.size is not None and variants is None:
                variants = await self._stockx_variants(sku)  # a store read, no call
            try:
                out[job.id] = self._alias_size(job, item, variants or [])
            except SizeError as exc:
                out[job.id] = exc
        return out

    async def _stockx_variants(self, sku: str) -> list[Any]:
        """StockX's variants of the SKU when its client has cached them, as ``data["variants"]``
        (either shape :func:`~marketd.providers.sizes.options_from_stockx` reads)."""
        entry = await self.ctx.store.get_catalog("stockx", sku)
        data = entry.get("data") if entry else None
        variants = data.get("variants") if isinstance(data, Mapping) else None
        return variants if isinstance(variants, list) else []

    def _alias_size(self, job: Job, item: CatalogItem, variants: Sequence[Any]) -> Fraction:
        """The job's size as Alias prices it: a US number in the item's own scale (US M, US W
        or US youth by the item's gender). A US size in another scale (8.5W asked of a men's
        item) and UK/EU sizes are converted through StockX's cached variants, then the brand's
        chart; what neither can convert is a SizeError that says what to enqueue instead."""
        if job.size is None:
            if len(item.us_sizes()) == 1:
                return item.us_sizes()[0]
            raise SizeError(self.name, "alias prices are per size: enqueue the job with a size")
        number, suffix = split_suffix(job.size)
        target = product_scale(item.gender)
        if target is None:
            raise SizeError(self.name, (
                f"alias lists this item as {item.gender!r}, a size scale marketd has no "
                f"conversion for: enqueue it on another provider"))
        asked = f"{job.size_system} {job.size}"
        if job.size_system == "US" and (suffix or "M") == target:
            us = size_value(number)
            if us is None:
                raise SizeError(self.name, f"US {job.size} is not a size")
        else:
            options = options_from_stockx(variants, job.size_system, job.size, target)
            if not options:
                chart = options_from_chart(item.brand, item.gender, job.size_system, job.size)
                if chart is None:
                    raise SizeError(self.name, _unconvertible(asked, suffix, target, item))
                options = chart
            us = choose(options, provider=self.name, system=job.size_system, size=job.size).us
        allowed = item.us_sizes()
        if allowed and us not in allowed:
            raise SizeError(self.name, f"{asked} (US {format_size(us)}{_SUFFIX[target]}) "
                                       f"is not a size of this product on alias")
        return us

    # ---- prices ----------------------------------------------------------------------------

    async def _availabilities(self, item: CatalogItem) -> dict[Fraction, Quote] | None:
        """Every size's NEW + GOOD_CONDITION quote in one call; None when the endpoint 404s."""
        try:
            # catalog_id comes from Alias's answer: quoted, so it stays one path segment
            body = await self._get(
                f"/pricing_insights/availabilities/{url_quote(item.catalog_id, safe='')}",
                self._market_params())
        except NotFound:
            return None
        quotes: dict[Fraction, Quote] = {}
        wanted = self._consigned()
        rows = body.get("variants") if isinstance(body, Mapping) else None
        for row in rows if isinstance(rows, list) else ():
            if not isinstance(row, Mapping) or row.get("product_condition") != NEW \
                    or row.get("packaging_condition") != GOOD_BOX:
                continue
            if wanted is not None and isinstance(row.get("consigned"), bool) \
                    and row["consigned"] != wanted:
                continue
            size = size_value(row.get("size"))
            if size is None:
                continue
            quote = Quote.parse(row.get("availability"))
            quotes[size] = quotes[size].merge(quote) if size in quotes else quote
        return quotes

    async def _availability(self, item: CatalogItem, size: Fraction) -> Quote:
        """One size's quote: the fallback when the list lacks it."""
        log.debug("alias_size_fallback", catalog_id=item.catalog_id, size=format_size(size))
        params = {"catalog_id": item.catalog_id, "size": format_size(size),
                  "product_condition": NEW, "packaging_condition": GOOD_BOX,
                  **self._market_params()}
        body = await self._get("/pricing_insights/availability", params)
        return Quote.parse(body.get("availability") if isinstance(body, Mapping) else None)

    async def _result(self, sku: str, item: CatalogItem, jobs: Sequence[Job],
                      sizes: Mapping[str, Fraction | SizeError],
                      quotes: dict[Fraction, Quote]) -> FetchResult:
        """Prices from the list, then one fallback call per size the list lacked.

        A fallback failure of a kind that the next call would share (429, refused token, spent
        budget, transient) stops the fallbacks: it is raised for the whole group when nothing
        was priced yet, otherwise it becomes the outcome of each job still unpriced."""
        result = FetchResult(outcomes=dict(_errors(sizes)))
        wanted = {s for s in sizes.values() if isinstance(s, Fraction)}
        stop: MarketdError | None = None
        for size in sorted(wanted - quotes.keys()):
            try:
                quotes[size] = await self._availability(item, size)
            except _STOP as exc:
                if not quotes:
                    raise
                stop = exc
                break
            except ProviderError as exc:
                result.outcomes.update({j.id: exc for j in jobs if sizes[j.id] == size})
        now = self.ctx.clock.now()
        for job in jobs:
            job_size = sizes[job.id]
            if isinstance(job_size, Fraction) and job_size in quotes:
                result.outcomes[job.id] = self._price(sku, job.size_key, quotes[job_size], now)
            elif stop is not None and job.id not in result.outcomes:
                result.outcomes[job.id] = stop
        suffix = _SUFFIX.get(product_scale(item.gender) or "M", "")
        for size, quote in sorted(quotes.items()):
            if size not in wanted and quote != Quote(None, None, None):
                result.extra_prices.append(
                    self._price(sku, f"US {format_size(size)}{suffix}", quote, now))
        return result

    def _price(self, sku: str, size_key: str | None, quote: Quote, now: float) -> Price:
        return Price(provider=self.name, sku=sku, size=size_key, currency=CURRENCY,
                     lowest_ask=quote.lowest_ask, highest_bid=quote.highest_bid,
                     last_sale=quote.last_sale, fetched_at=now)

    # ---- configuration ---------------------------------------------------------------------

    def _auth_headers(self, token: str | None) -> dict[str, str]:
        """The personal access token (fixed: nothing to renew on a 401)."""
        pat = str(self.ctx.config.options.get("api_token") or "")
        if not pat:
            raise AuthError(self.name, "no Alias API token is configured", credential=CREDENTIAL)
        return {"Authorization": f"Bearer {pat}", "Accept": "application/json"}

    def _consigned(self) -> bool | None:
        value = str(self.ctx.config.options.get("consigned", "any")).lower()
        return {"true": True, "false": False}.get(value)

    def _market_params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        region = str(self.ctx.config.options.get("region") or "GLOBAL").upper()
        if region != "GLOBAL":
            if region not in REGION_IDS:
                # config validation refuses it first; a client built around it still says so
                raise PermanentError(self.name, (
                    f"providers.alias.region {region!r} is unknown: use one of "
                    f"{', '.join(REGIONS)}"))
            params["region_id"] = REGION_IDS[region]
        consigned = self._consigned()
        if consigned is not None:
            params["consigned"] = "true" if consigned else "false"
        return params

    # ---- HTTP ------------------------------------------------------------------------------

    async def _get(self, path: str, params: Mapping[str, str]) -> Any:
        return await self._request("GET", f"{self.ctx.config.base_url}/api/v1{path}",
                                   what=path, params=params)

    def _json(self, resp: Response, what: str) -> Any:
        try:
            return super()._json(resp, what)
        except TransientError:
            log.warning("alias_bad_response", path=what, status=resp.status,
                        request_id=_header(resp, "x-request-id"), bytes=len(resp.body))
            raise

    def _error(self, resp: Response, what: str, subject: str) -> ProviderError:
        """The typed error of a non-2xx answer, logged with Alias's request id."""
        status = resp.status
        code, message = _error_body(resp)
        log.warning("alias_request_failed", path=what, status=status, code=code,
                    message=message, request_id=_header(resp, "x-request-id"))
        detail = f"HTTP {status}" + (f": {message}" if message else "")
        if status == 403:
            return AuthError(self.name, f"alias API token lacks the scope ({detail})",
                             credential=CREDENTIAL, status=status)
        return self._status_error(resp, detail)


# ---- helpers -----------------------------------------------------------------------------------


def _sku_key(sku: str) -> str:
    """``"DD1391 100"`` and ``"dd1391-100"`` alike."""
    return "-".join(sku.upper().replace("-", " ").split())


def _cents(value: Any) -> int | None:
    """``"9600"`` -> 9600; ``"0"``, empty or unreadable -> None (Alias's "no data")."""
    if value is None or isinstance(value, bool):
        return None
    try:
        cents = int(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None
    return cents if cents > 0 else None


def _pick(fn: Callable[[list[int]], int], a: int | None, b: int | None) -> int | None:
    values = [v for v in (a, b) if v is not None]
    return fn(values) if values else None


def _allowed(raw: Any, key: str = "value") -> tuple[Any, ...]:
    """``allowed_sizes[].value`` (entries without one skipped), or with ``key`` another field
    of the same entries, None where unreadable."""
    out: list[Fraction | None] = []
    for entry in raw if isinstance(raw, list) else ():
        if not isinstance(entry, Mapping) or size_value(entry.get("value")) is None:
            continue
        out.append(size_value(entry.get(key)))
    return tuple(out)


def _errors(sizes: Mapping[str, Fraction | SizeError]) -> list[tuple[str, SizeError]]:
    return [(job_id, s) for job_id, s in sizes.items() if isinstance(s, SizeError)]


_SUFFIX = {"M": "", "W": "W", "Y": "Y", "C": "C"}


def _unconvertible(asked: str, suffix: str, target: str, item: CatalogItem) -> str:
    """Why a size cannot be put in the item's scale, and what to enqueue instead."""
    brand = item.brand or "this brand"
    scale = SCALE_NAMES[target]
    if asked.startswith("US ") and suffix:
        return (f"{asked} is a {SCALE_NAMES.get(suffix, suffix)} size and this {brand} item "
                f"is priced in {scale} sizes; neither StockX's size chart nor marketd's "
                f"{brand} chart converts it: enqueue the {scale} US size or the EU size")
    return (f"no size conversion data for {asked} on {brand} ({scale} sizes): enqueue the "
            f"US size")


def _header(resp: Response, name: str) -> str | None:
    return next((v for k, v in resp.headers.items() if k.lower() == name), None)


def _error_body(resp: Response) -> tuple[int | None, str]:
    """Alias's ``{code, message, details}``, or the start of whatever else came back."""
    try:
        body = resp.json()
    except ValueError:
        return None, resp.body[:200].decode("utf-8", "replace").strip()
    if isinstance(body, Mapping):
        code = body.get("code")
        return (code if isinstance(code, int) else None), str(body.get("message") or "")
    return None, ""


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
