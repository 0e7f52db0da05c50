"""The provider seam: what a provider client implements and what it is given.

The worker hands a client the jobs of one SKU (:meth:`Provider.fetch_group`). The client makes
the HTTP requests it needs, calling ``ctx.budget.spend()`` before **every** request to the
provider's API (catalog look-ups included; OAuth token endpoints excepted), and answers with a
:class:`FetchResult`: per job a :class:`~marketd.models.Price` or an exception, plus any other
prices the same responses carried (other sizes of the SKU).

Every call to a provider's API goes through :meth:`Provider._request`: the budget token, the
credential's headers (a refused token renewed once), the timeout, the status mapped to a typed
error and the JSON body parsed. A client supplies only what is its own: its endpoints, its
token (:meth:`Provider._access_token`) and headers (:meth:`Provider._auth_headers`), how it
reads its error envelope (:meth:`Provider._error`) and the shapes of its answers.

An exception raised out of ``fetch_group`` applies to every job of the group. The worker acts on
its type (see :mod:`marketd.errors`): RateLimited and AuthError pause the provider, BudgetExhausted
defers, TransientError retries with backoff, NotFound/SizeError/PermanentError fail the job.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol

import aiohttp
import structlog

from marketd.clock import Clock, parse_iso
from marketd.config import ProviderConfig
from marketd.errors import (
    AuthError,
    MarketdError,
    NotFound,
    PermanentError,
    ProviderError,
    RateLimited,
    TransientError,
)
from marketd.models import Job, Price

log = structlog.get_logger(__name__)


class CallBudget(Protocol):
    async def spend(self) -> None:
        """Reserve one call durably, waiting briefly for a paced window; or raise
        BudgetExhausted."""


class TokenStore(Protocol):
    async def get_token(self, provider: str, kind: str) -> tuple[str, float | None] | None: ...

    async def put_token(self, provider: str, kind: str, value: str,
                        expires_at: float | None) -> None: ...


class CatalogCache(Protocol):
    async def get_catalog(self, provider: str, sku: str) -> dict[str, Any] | None: ...

    async def put_catalog(self, provider: str, sku: str, *, product_id: str | None,
                          title: str | None = None, brand: str | None = None,
                          image_url: str | None = None,
                          data: Mapping[str, Any] | None = None,
                          colourway: str | None = None) -> None: ...

    async def delete_catalog(self, provider: str, sku: str) -> None: ...


class KeyValueStore(TokenStore, CatalogCache, Protocol):
    """What a client may persist: tokens and catalog entries (the Store implements it)."""


@dataclass
class ProviderContext:
    config: ProviderConfig
    session: aiohttp.ClientSession
    budget: CallBudget
    store: KeyValueStore
    clock: Clock


@dataclass
class FetchResult:
    outcomes: dict[str, Price | MarketdError] = field(default_factory=dict)  # by job id
    extra_prices: list[Price] = field(default_factory=list)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (ValueError if it is not; :meth:`Provider._json` makes that a
        TransientError)."""
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Quota:
    """What a provider itself says is left of the key's quota (other apps may share the key)."""

    remaining: int
    reset_at: float  # epoch seconds when the provider starts counting afresh
    limit: int | None = None


class Provider:
    """Base class of the StockX, Alias and eBay clients."""

    name: ClassVar[str] = ""
    credential: ClassVar[str] = ""  # what a person checks when the API refuses the client
    renewal_event: ClassVar[str] = "token_rejected"  # logged when a refused token is renewed
    # calls a fetch of a SKU not in market_catalog adds (its catalog look-ups), and how long
    # a cached entry serves (None: for ever)
    lookup_calls: ClassVar[int] = 0
    catalog_ttl_s: ClassVar[float | None] = None

    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx

    async def fetch_group(self, sku: str, jobs: Sequence[Job]) -> FetchResult:
        raise NotImplementedError

    async def calls_for(self, sku: str) -> int:
        """The calls a fetch of ``sku`` is expected to spend: its price call, plus the catalog
        look-ups when the SKU is not cached. A run counts them before they happen, so it
        selects only what its allowance pays for."""
        if not self.lookup_calls:
            return 1
        entry = await self.ctx.store.get_catalog(self.name, sku)
        cached = entry is not None and bool(entry.get("product_id"))
        if cached and entry is not None and self.catalog_ttl_s is not None:
            fetched = parse_iso(entry.get("fetched_at"))
            cached = fetched is not None and \
                self.ctx.clock.now() - fetched < self.catalog_ttl_s
        return 1 if cached else 1 + self.lookup_calls

    async def quota(self) -> Quota | None:
        """The provider's own count of the calls left, where it has an API for that (the
        scheduler asks hourly and lowers the budget to it); None where it has none."""
        return None

    async def close(self) -> None:
        """Release what the client holds (the session belongs to the caller)."""

    # ---- what a client supplies ----

    async def _access_token(self, refused: str | None = None) -> str | None:
        """The token to send, for a client whose credential can be renewed; None for one
        whose credential is fixed. ``refused`` is a token the API just turned down: it is
        never handed out again."""
        return None

    def _auth_headers(self, token: str | None) -> dict[str, str]:
        """The headers every API call carries, the credential's among them."""
        return {}

    def _error(self, resp: Response, what: str, subject: str) -> ProviderError:
        """The typed error of a non-2xx answer from ``what`` (an endpoint's name). Clients
        override it to read and log their error envelope and to handle their own cases, then
        fall back to :meth:`_status_error`."""
        return self._status_error(resp, f"HTTP {resp.status} on {what}", subject)

    # ---- the one request method ----

    async def _request(self, method: str, url: str, *, what: str, subject: str = "",
                       counted: bool = True, headers: Mapping[str, str] | None = None,
                       params: Mapping[str, str] | None = None) -> Any:
        """One call to the provider's API, answered as parsed JSON.

        Spends a budget token first (``counted``), sends the credential's headers, and on a
        401/403 renews the token once and sends again (a second token spent). A non-2xx answer
        after that is raised as :meth:`_error` types it; a body that is not JSON is a
        TransientError. ``what`` names the endpoint in logs and errors, ``subject`` what was
        looked for (a 404 names it)."""
        token = await self._access_token()
        resp = await self._send(method, url, counted=counted, params=params,
                                headers={**(headers or {}), **self._auth_headers(token)})
        if resp.status in (401, 403) and token is not None:
            log.info(self.renewal_event, status=resp.status, endpoint=what)
            token = await self._access_token(refused=token)
            resp = await self._send(method, url, counted=counted, params=params,
                                    headers={**(headers or {}), **self._auth_headers(token)})
        return self._parse(resp, what, subject)

    def _parse(self, resp: Response, what: str, subject: str = "") -> Any:
        """A 2xx answer's JSON body; any other answer raised as its typed error."""
        if not 200 <= resp.status < 300:
            raise self._error(resp, what, subject)
        return self._json(resp, what)

    def _json(self, resp: Response, what: str) -> Any:
        """The body as JSON; a truncated or non-JSON body is a TransientError."""
        try:
            return resp.json()
        except ValueError:  # UnicodeDecodeError included
            raise TransientError(self.name, f"bad JSON from {what} (HTTP {resp.status}, "
                                            f"{len(resp.body)} bytes)",
                                 status=resp.status) from None

    def _status_error(self, resp: Response, detail: str, subject: str = "") -> ProviderError:
        """:func:`error_for_status` for this client, its credential and its clock."""
        return error_for_status(self.name, resp.status, detail, headers=resp.headers,
                                credential=self.credential, subject=subject,
                                now=self.ctx.clock.now())

    async def _send(
        self,
        method: str,
        url: str,
        *,
        counted: bool = True,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> Response:
        """One HTTP request, a budget token spent first (``counted``; OAuth token endpoints
        are not). Status codes are the caller's to map: :meth:`_request` does it for API
        calls, the clients' token code for their token endpoints."""
        if counted:
            await self.ctx.budget.spend()
        return await send(self.ctx.session, method, url, provider=self.name,
                          timeout_s=self.ctx.config.timeout_s, headers=headers, params=params,
                          data=data)


async def send(session: aiohttp.ClientSession, method: str, url: str, *, provider: str,
               timeout_s: float, headers: Mapping[str, str] | None = None,
               params: Mapping[str, str] | None = None,
               data: Mapping[str, str] | None = None) -> Response:
    """One HTTP request with its whole body read: the timeout owned here, redirects not
    followed, and network failures and timeouts turned into TransientError."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.request(method, url, headers=headers, params=params, data=data,
                                   timeout=timeout, allow_redirects=False) as resp:
            body = await resp.read()
            return Response(resp.status, dict(resp.headers), body)
    except TimeoutError:
        raise TransientError(provider, f"timed out after {timeout_s:g} s") from None
    except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
        cause = exc.cause if isinstance(exc, ConnectionDropped) else exc
        raise TransientError(provider, f"network error: {type(cause).__name__}: {cause}")\
            from None


class ConnectionDropped(aiohttp.ClientConnectionError):
    """A connection failed after a request may have gone out (``cause`` is aiohttp's own
    ServerDisconnectedError or ClientOSError), raised in its place so that aiohttp does not
    send the request again."""

    def __init__(self, cause: aiohttp.ClientConnectionError) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


async def _never_resend(request: aiohttp.ClientRequest,
                        handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
    """A client middleware: aiohttp (3.9 on) sends a GET again, once, when the connection
    fails with ServerDisconnectedError or ClientOSError between sending it and reading the
    answer's headers (RFC 9112 §9.3.1 lets a client retry idempotent requests). The provider
    may well have received and counted the first one, and the second would be a call the
    budget never recorded. The retry happens around the handler a middleware wraps and only
    for those two types, so the failure leaves here as ConnectionDropped: the request fails
    as a TransientError, and its retry by the worker spends a budget token of its own."""
    try:
        return await handler(request)
    except aiohttp.ClientConnectorError:
        raise  # connecting failed, nothing was sent (and aiohttp never retries these)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise ConnectionDropped(exc) from exc


def new_session(user_agent: str, *,
                trace_configs: list[aiohttp.TraceConfig] | None = None) -> aiohttp.ClientSession:
    """The HTTP session every provider client shares: no request is ever sent twice by
    aiohttp itself (see :func:`_never_resend`; client middlewares need aiohttp 3.12).
    ``trace_configs`` let a caller watch the answers (``marketd doctor`` reads their Date)."""
    return aiohttp.ClientSession(headers={"User-Agent": user_agent},
                                 middlewares=(_never_resend,), trace_configs=trace_configs)


TRANSIENT_STATUSES = frozenset({408, 500, 502, 503, 504})


def error_for_status(provider: str, status: int, detail: str, *, headers: Mapping[str, str],
                     credential: str, now: float, subject: str = "") -> ProviderError:
    """The typed error of a non-2xx answer, as INTERFACE §6 maps them. Clients handle their
    own special cases first (eBay's daily quota, Alias's 403 scope); a 401/403 reaching here
    is one the token renewal did not cure. ``detail`` is what the answer said
    (``HTTP 404: ...``), ``subject`` what was looked for, ``now`` the caller's clock."""
    if status == 429:
        return RateLimited(provider, f"rate limited ({detail})",
                           retry_after_s=retry_after_seconds(headers, now=now))
    if status in (401, 403):
        return AuthError(provider, f"credentials refused ({detail})", credential=credential,
                         status=status)
    if status == 404:
        where = f"not found on {provider}" + (f": {subject}" if subject else "")
        return NotFound(provider, f"{where} ({detail})", status=status)
    if status in TRANSIENT_STATUSES or status >= 500:
        return TransientError(provider, f"{provider} unavailable ({detail})", status=status)
    if 400 <= status < 500:
        return PermanentError(provider, f"request refused ({detail})", status=status)
    return TransientError(provider, f"unexpected answer ({detail})", status=status)


MAX_RETRY_AFTER_S = 86400.0  # a provider asking for more than a day is capped at a day


def retry_after_seconds(headers: Mapping[str, str], default: float | None = None, *,
                        now: float) -> float | None:
    """Retry-After as seconds, finite and at most a day (delta-seconds or an HTTP date;
    anything else gives ``default``). ``now`` is the caller's clock, for the date form."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return default
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return default
        seconds = when - now
    if not math.isfinite(seconds):
        return default
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)
