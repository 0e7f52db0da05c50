"""What the command line does against a daemon: HTTP to the running one where that matters
(trigger; enqueue, so a manual job wakes it), the database directly otherwise (status, prices,
reset-failed work whether or not the daemon runs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from marketd.clock import Clock
from marketd.config import Config
from marketd.errors import MarketdError
from marketd.models import JobSpec
from marketd.store import Store, open_store
from marketd.views import price_view, status_view


def daemon_url(config: Config) -> str:
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - we connect, not bind
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


@asynccontextmanager
async def _store(config: Config) -> AsyncIterator[Store]:
    store = await open_store(config.database, Clock())
    try:
        yield store
    finally:
        await store.close()


async def enqueue(config: Config, spec: JobSpec) -> dict[str, Any]:
    body = {"provider": spec.provider, "sku": spec.sku, "size": spec.size,
            "size_system": spec.size_system, "priority": spec.priority, "user_id": spec.user_id}
    headers = {}
    if config.security.api_token:
        headers["Authorization"] = f"Bearer {config.security.api_token}"
    try:
        url = f"{daemon_url(config)}/enqueue"
        async with aiohttp.ClientSession() as session, session.post(
                url, json=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=10)) as resp:
            data = await _json(resp, url)
            if resp.status != 202:
                raise MarketdError(f"the daemon refused the job: {data.get('error')}")
            return dict(data["jobs"][0]) | {"via": "daemon"}
    except (aiohttp.ClientConnectionError, TimeoutError):
        pass  # no daemon listening: write to the database; it runs when the daemon starts
    async with _store(config) as store:
        result = (await store.enqueue([spec], config.scheduler.fresh_for_seconds))[0]
    return result.as_dict() | {"via": "database"}


async def trigger(config: Config) -> dict[str, Any]:
    url = f"{daemon_url(config)}/trigger"
    headers = {"x-cron-secret": config.security.cron_secret}
    try:
        async with aiohttp.ClientSession() as session, session.post(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=600)) as resp:
            data = await _json(resp, url)
            if resp.status != 200:
                raise MarketdError(f"the daemon answered {resp.status}: {data.get('error')}"
                                   " (check security.cron_secret or CRON_SECRET)")
            return data
    except (aiohttp.ClientConnectionError, TimeoutError):
        raise MarketdError(f"cannot reach marketd at {url}: is the daemon running? "
                           "(systemctl status marketd)") from None


async def status(config: Config) -> dict[str, Any]:
    from marketd.app import build_lanes

    async with _store(config) as store:
        lanes = await build_lanes(config, store, store.clock, None)
        return await status_view(store, lanes, store.clock.now())


async def reset_failed(config: Config, provider: str | None) -> int:
    async with _store(config) as store:
        return await store.reset_failed(provider)


async def prices(config: Config, provider: str | None, sku: str | None) -> list[dict[str, Any]]:
    async with _store(config) as store:
        return [price_view(r) for r in await store.list_prices(provider=provider, sku=sku)]


async def _json(resp: aiohttp.ClientResponse, url: str) -> dict[str, Any]:
    try:
        data = await resp.json(content_type=None)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise MarketdError(f"{url} answered HTTP {resp.status} with something that is not "
                           "marketd: check server.host and server.port")
    return data


def format_status(data: dict[str, Any]) -> str:
    lines = [f"marketd status at {data['now']}", "", "budgets (this hour):"]
    for name, b in data["budgets"].items():
        windows = ", ".join(f"{w['limit']}: {w['used']} used" for w in b["limits"])
        state = (f"PAUSED until {b['paused_until']} ({b['pause_reason']})" if b["paused"]
                 else "active")
        lines.append(f"  {name:7} {b['used']}/{b['rate_limit']} calls  [{windows}]  {state}")
    lines += ["", "jobs:", f"  {'provider':8} {'pending':>8} {'running':>8} {'completed':>10}"
                           f" {'failed':>7}"]
    for name, c in data["jobs"]["by_provider"].items():
        lines.append(f"  {name:8} {c['pending']:>8} {c['running']:>8} {c['completed']:>10}"
                     f" {c['failed']:>7}")
    lines += ["", "recent runs:"]
    for r in data["recent_runs"][:5]:
        lines.append(f"  {r['started_at']} {r['trigger']:8} selected={r['selected']} "
                     f"ok={r['succeeded']} failed={r['failed']} deferred={r['deferred']} "
                     f"{r['duration_ms'] or 0} ms")
    if not data["recent_runs"]:
        lines.append("  none yet")
    return "\n".join(lines)
