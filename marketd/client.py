"""marketd's Python client for apps: a typed public API over the HTTP API, async and sync.

::

    from marketd.client import Client

    with Client("http://127.0.0.1:8787", api_token="...") as md:
        md.enqueue("stockx", "DD1391-100", "10", priority="manual", user_id="alice")
        md.enqueue_items([{"sku": "DD1391-100", "size_uk": "10"}], provider="alias")
        md.refresh([{"sku": "DD1391-100", "size": "10"}], provider="ebay")
        for p in md.prices(skus=["DD1391-100"], user_id="alice"):   # every page, followed
            print(p.provider, p.size, p.lowest_ask, p.currency, p.title)
        points = md.history("stockx", "DD1391-100", "10")          # one per change

    async with AsyncClient("http://127.0.0.1:8787") as md:          # the same, awaited
        jobs = await md.enqueue_many([JobRequest("stockx", "DD1391-100", "10")])

Amounts are :class:`~decimal.Decimal` in major units (``Decimal("96.00")``) in the price's
own ``currency``, or None; times are aware UTC :class:`~datetime.datetime`. A refused
request raises :class:`MarketdClientError` with the HTTP status and marketd's ``error`` and
``field``; a daemon that cannot be reached raises it with ``status`` 0. :meth:`Client.prices`
follows ``next_cursor`` to the last page: nothing is cut. The sync :class:`Client` runs its
own event loop: use :class:`AsyncClient` inside async code.

Public names: :data:`__all__`. (The command line's own helpers are :mod:`marketd.cli_client`.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, TypeVar

import aiohttp

__all__ = ["AsyncClient", "Client", "EnqueuedJob", "HistoryPoint", "JobRequest",
           "MarketdClientError", "PriceRecord", "Priority"]

T = TypeVar("T")
Priority = int | Literal["manual", "hot", "background"]
DEFAULT_URL = "http://127.0.0.1:8787"


class MarketdClientError(Exception):
    """marketd refused a request (``status`` its HTTP status, ``error`` and ``field`` from
    its answer), or could not be reached (``status`` 0)."""

    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(f"marketd answered {status}: {error}" + (f" ({field})" if field else "")
                         if status else error)
        self.status, self.error, self.field = status, error, field


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job to enqueue: sizes are UK unless ``size_system`` says US or EU."""

    provider: str
    sku: str
    size: str | None = None
    size_system: str = "UK"
    priority: Priority = "background"
    user_id: str | None = None

    def body(self) -> dict[str, Any]:
        return {"provider": self.provider, "sku": self.sku, "size": self.size,
                "size_system": self.size_system, "priority": self.priority,
                "user_id": self.user_id}


@dataclass(frozen=True, slots=True)
class EnqueuedJob:
    """What /enqueue answered for one job: ``status`` pending, running, or fresh (``id`` None:
    a fresh price made the fetch needless)."""

    id: str | None
    dedupe_key: str
    status: str
    priority: int
    deduplicated: bool


@dataclass(frozen=True, slots=True)
class PriceRecord:
    provider: str
    sku: str
    size: str | None
    currency: str
    lowest_ask: Decimal | None
    highest_bid: Decimal | None
    last_sale: Decimal | None
    fetched_at: datetime
    title: str | None = None
    brand: str | None = None
    colourway: str | None = None
    image_url: str | None = None
    extra: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    fetched_at: datetime
    currency: str
    lowest_ask: Decimal | None
    highest_bid: Decimal | None
    last_sale: Decimal | None


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _price(raw: Mapping[str, Any]) -> PriceRecord:
    return PriceRecord(
        provider=raw["provider"], sku=raw["sku"], size=raw["size"], currency=raw["currency"],
        lowest_ask=_dec(raw["lowest_ask"]), highest_bid=_dec(raw["highest_bid"]),
        last_sale=_dec(raw["last_sale"]), fetched_at=_time(raw["fetched_at"]),
        title=raw.get("title"), brand=raw.get("brand"), colourway=raw.get("colourway"),
        image_url=raw.get("image_url"),
        extra={k: d for k, v in (raw.get("extra") or {}).items() if (d := _dec(v)) is not None})


def _point(raw: Mapping[str, Any]) -> HistoryPoint:
    return HistoryPoint(fetched_at=_time(raw["fetched_at"]), currency=raw["currency"],
                        lowest_ask=_dec(raw["lowest_ask"]), highest_bid=_dec(raw["highest_bid"]),
                        last_sale=_dec(raw["last_sale"]))


def _jobs(data: Mapping[str, Any]) -> list[EnqueuedJob]:
    return [EnqueuedJob(j["id"], j["dedupe_key"], j["status"], j["priority"], j["deduplicated"])
            for j in data["jobs"]]


def _query(**params: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            out += [(key, str(v)) for v in value]
        elif isinstance(value, datetime):
            out.append((key, value.isoformat()))
        else:
            out.append((key, str(value)))
    return out


class AsyncClient:
    """The async client; one aiohttp session per client (pass ``session`` to share yours)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_token: str | None = None,
                 cron_secret: str | None = None, timeout_s: float = 30.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_token, self.cron_secret = api_token, cron_secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session, self._own = session, session is None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own and self._session is not None:
            await self._session.close()
        self._session = None

    async def _request(self, method: str, path: str, *, body: Any = None,
                       params: Sequence[tuple[str, str]] = (),
                       headers: Mapping[str, str] | None = None,
                       wait: aiohttp.ClientTimeout | None = None) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._own = True
        url = f"{self.base_url}{path}"
        try:
            async with self._session.request(
                    method, url, json=body, params=list(params), headers=dict(headers or {}),
                    timeout=wait or self.timeout) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
                if not isinstance(data, dict):
                    raise MarketdClientError(resp.status, f"{url} did not answer JSON")
                if resp.status >= 400:
                    raise MarketdClientError(resp.status, str(data.get("error")),
                                             data.get("field"))
                return data
        except aiohttp.ClientError as exc:
            raise MarketdClientError(0, f"cannot reach marketd at {url}: {exc}") from None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}

    # ---- enqueue -----------------------------------------------------------------------------

    async def enqueue(self, provider: str, sku: str, size: str | None = None, *,
                      size_system: str = "UK", priority: Priority = "background",
                      user_id: str | None = None) -> EnqueuedJob:
        """Enqueue one job (a duplicate of an active job returns it, priority raised)."""
        job = JobRequest(provider, sku, size, size_system, priority, user_id)
        return _jobs(await self._request("POST", "/enqueue", body=job.body(),
                                         headers=self._auth()))[0]

    async def enqueue_many(self, jobs: Sequence[JobRequest]) -> list[EnqueuedJob]:
        """Up to 1,000 jobs, accepted whole or not at all, answered in order."""
        body = {"jobs": [j.body() for j in jobs]}
        return _jobs(await self._request("POST", "/enqueue", body=body, headers=self._auth()))

    async def enqueue_items(self, items: Sequence[Mapping[str, Any]], *, provider: str,
                            priority: Priority = "hot",
                            user_id: str | None = None) -> list[EnqueuedJob]:
        """The seed's enqueueForItems: inventory items (``sku``, ``size_uk`` or ``size``)."""
        body = {"items": [dict(i) for i in items], "provider": provider,
                "priority": priority, "user_id": user_id}
        return _jobs(await self._request("POST", "/enqueue", body=body, headers=self._auth()))

    async def refresh(self, keys: Sequence[Mapping[str, Any]], *, provider: str,
                      user_id: str | None = None) -> list[EnqueuedJob]:
        """The seed's enqueueRefresh: (``sku``, ``size``) keys at manual priority."""
        body = {"refresh": [dict(k) for k in keys], "provider": provider, "user_id": user_id}
        return _jobs(await self._request("POST", "/enqueue", body=body, headers=self._auth()))

    # ---- prices ------------------------------------------------------------------------------

    async def iter_prices(self, *, provider: str | None = None,
                          skus: Sequence[str] | None = None, size: str | None = None,
                          size_system: str | None = None, user_id: str | None = None,
                          page_size: int = 1000) -> AsyncIterator[PriceRecord]:
        """Every latest price the filters match, page after page (``next_cursor``)."""
        cursor: str | None = None
        while True:
            data = await self._request("GET", "/prices", params=_query(
                provider=provider, sku=list(skus) if skus else None, size=size,
                size_system=size_system, user_id=user_id, limit=page_size, cursor=cursor))
            for raw in data["prices"]:
                yield _price(raw)
            cursor = data.get("next_cursor")
            if not cursor:
                return

    async def prices(self, *, provider: str | None = None, skus: Sequence[str] | None = None,
                     size: str | None = None, size_system: str | None = None,
                     user_id: str | None = None) -> list[PriceRecord]:
        """All of them (every page): see :meth:`iter_prices`."""
        return [p async for p in self.iter_prices(provider=provider, skus=skus, size=size,
                                                  size_system=size_system, user_id=user_id)]

    async def history(self, provider: str, sku: str, size: str | None = None, *,
                      size_system: str | None = None,
                      since: datetime | None = None) -> list[HistoryPoint]:
        """One price's history, oldest first: a point per change."""
        data = await self._request("GET", "/prices/history", params=_query(
            provider=provider, sku=sku, size=size, size_system=size_system, since=since))
        return [_point(p) for p in data["history"]]

    # ---- the daemon --------------------------------------------------------------------------

    async def trigger(self) -> dict[str, Any]:
        """One scheduler run now (needs the cron secret); its summary."""
        headers = {"x-cron-secret": self.cron_secret} if self.cron_secret else {}
        return await self._request("POST", "/trigger", headers=headers,
                                   wait=aiohttp.ClientTimeout(total=None, connect=10))

    async def status(self) -> dict[str, Any]:
        return await self._request("GET", "/status")


class Client:
    """The same API, blocking: each call runs on this client's own event loop. Not for use
    inside a running event loop (use :class:`AsyncClient` there)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_token: str | None = None,
                 cron_secret: str | None = None, timeout_s: float = 30.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._async = AsyncClient(base_url, api_token=api_token, cron_secret=cron_secret,
                                  timeout_s=timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _run(self, coro: Awaitable[T]) -> T:
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._run(self._async.close())
            self._loop.close()

    def enqueue(self, provider: str, sku: str, size: str | None = None, *,
                size_system: str = "UK", priority: Priority = "background",
                user_id: str | None = None) -> EnqueuedJob:
        return self._run(self._async.enqueue(provider, sku, size, size_system=size_system,
                                             priority=priority, user_id=user_id))

    def enqueue_many(self, jobs: Sequence[JobRequest]) -> list[EnqueuedJob]:
        return self._run(self._async.enqueue_many(jobs))

    def enqueue_items(self, items: Sequence[Mapping[str, Any]], *, provider: str,
                      priority: Priority = "hot", user_id: str | None = None) -> list[EnqueuedJob]:
        return self._run(self._async.enqueue_items(items, provider=provider, priority=priority,
                                                   user_id=user_id))

    def refresh(self, keys: Sequence[Mapping[str, Any]], *, provider: str,
                user_id: str | None = None) -> list[EnqueuedJob]:
        return self._run(self._async.refresh(keys, provider=provider, user_id=user_id))

    def prices(self, *, provider: str | None = None, skus: Sequence[str] | None = None,
               size: str | None = None, size_system: str | None = None,
               user_id: str | None = None) -> list[PriceRecord]:
        return self._run(self._async.prices(provider=provider, skus=skus, size=size,
                                            size_system=size_system, user_id=user_id))

    def iter_prices(self, **filters: Any) -> Iterator[PriceRecord]:
        """Every price, a page fetched at a time."""
        pages = self._async.iter_prices(**filters)
        while True:
            try:
                yield self._run(anext(pages))
            except StopAsyncIteration:
                return

    def history(self, provider: str, sku: str, size: str | None = None, *,
                size_system: str | None = None,
                since: datetime | None = None) -> list[HistoryPoint]:
        return self._run(self._async.history(provider, sku, size, size_system=size_system,
                                             since=since))

    def trigger(self) -> dict[str, Any]:
        return self._run(self._async.trigger())

    def status(self) -> dict[str, Any]:
        return self._run(self._async.status())
