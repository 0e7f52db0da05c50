"""The provider seam: what a provider client implements and what it is given.

The worker hands a client the jobs of one SKU (:meth:`Provider.fetch_group`). The client makes
the HTTP requests it needs, calling ``ctx.budget.spend()`` before **every** request to the
provider's API (catalog look-ups included; OAuth token endpoints excepted), and answers with a
:class:`FetchResult`: per job a :class:`~marketd.models.Price` or an exception, plus any other
prices the same responses carried (other sizes of the SKU).

An exception raised out of ``fetch_group`` applies to every job of the group. The worker acts on
its type (see :mod:`marketd.errors`): RateLimited and AuthError pause the provider, BudgetExhausted
defers, TransientError retries with backoff, NotFound/SizeError/PermanentError fail the job.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol

import aiohttp

from marketd.clock import Clock
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
                          data: Mapping[str, Any] | None = None) -> None: ...

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
        """The body as JSON; a truncated or non-JSON body is a TransientError upstream."""
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

    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx

    async def fetch_group(self, sku: str, jobs: Sequence[Job]) -> FetchResult:
        raise NotImplementedError

    async def quota(self) -> Quota | None:
        """The provider's own count of the calls left, where it has an API for that (the
        scheduler asks hourly and lowers the budget to it); None where it has none."""
        return None

    async def close(self) -> None:
        """Release what the client holds (the session belongs to the caller)."""

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
        """One HTTP request: spend a budget token first (``counted``), own the timeout, and
        turn network failures into TransientError. Status codes are the caller's to map."""
        if counted:
            await self.ctx.budget.spend()
        timeout = aiohttp.ClientTimeout(total=self.ctx.config.timeout_s)
        try:
            async with self.ctx.session.request(
                method, url, headers=headers, params=params, data=data, timeout=timeout,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                return Response(resp.status, dict(resp.headers), body)
        except TimeoutError:
            raise TransientError(self.name, f"timed out after {self.ctx.config.timeout_s:g} s")\
                from None
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
            raise TransientError(self.name, f"network error: {type(exc).__name__}: {exc}")\
                from None


def new_session(user_agent: str) -> aiohttp.ClientSession:
    """The HTTP session every provider client shares.

    aiohttp silently re-sends an idempotent request (GET) when a kept-alive connection drops
    after the request went out. That second request was never recorded in the budget, so it is
    turned off: a dropped request becomes a TransientError and its retry spends a token.
    """
    session = aiohttp.ClientSession(headers={"User-Agent": user_agent})
    if hasattr(session, "_retry_connection"):  # aiohttp >= 3.10; private, as in its test_utils
        session._retry_connection = False
    return session


TRANSIENT_STATUSES = frozenset({408, 500, 502, 503, 504})


def error_for_status(provider: str, status: int, detail: str, *, headers: Mapping[str, str],
                     credential: str, subject: str = "") -> ProviderError:
    """The typed error of a non-2xx answer, as INTERFACE §6 maps them. Clients handle their
    own special cases first (eBay's daily quota, a token renewal on 401, Alias's 403 scope).
    ``detail`` is what the answer said (``HTTP 404: ...``); ``subject`` what was looked for."""
    if status == 429:
        return RateLimited(provider, f"rate limited ({detail})",
                           retry_after_s=retry_after_seconds(headers))
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
                        now: float | None = None) -> float | None:
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
        seconds = when - (now if now is not None else time.time())
    if not math.isfinite(seconds):
        return default
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)
