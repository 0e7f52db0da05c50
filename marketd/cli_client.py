"""What the command line does against a daemon: HTTP to the running one where that matters
(trigger; enqueue, so a manual job wakes it), the database directly otherwise (status, prices,
reset-failed work whether or not the daemon runs).

None of it creates a database: only ``migrate`` and ``serve`` do. A command that reads one
first checks, without writing a byte, that the file exists and holds a marketd schema this
version knows (:func:`require_database`).

(Apps use :mod:`marketd.client`, the public API; these helpers are the command line's and
take its :class:`~marketd.config.Config`.)"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import aiohttp

from marketd import sql
from marketd.clock import Clock
from marketd.config import Config
from marketd.errors import MarketdError, StoreError
from marketd.models import JobSpec
from marketd.store import Store, open_store
from marketd.views import price_view, status_view

Progress = Callable[[str], None]


def daemon_url(config: Config) -> str:
    """Where the CLI reaches the daemon: over ``server.socket`` when one is configured (the
    URL's host is then only a name), else TCP."""
    if config.server.socket:
        return "http://localhost"
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - we connect, not bind
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


def require_database(config: Config) -> None:
    """Raise unless the configured SQLite file exists and holds a schema this marketd knows
    (checked read-only: no file, folder or table is created). PostgreSQL creates nothing on
    connect, so a URL is left to the store."""
    if config.database.url:
        return
    path = Path(config.database.path)
    where = f"database.path of {config.source}" if config.source else "the built-in default"
    if not path.is_file():
        raise StoreError(f"cannot open database {path}: no such file ({where}); check -c FILE "
                         "or $MARKETD_CONFIG, or create it with `marketd migrate`")
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = "
                                "'schema_migrations'").fetchone():
                raise StoreError(f"{path} is not a marketd database (no schema_migrations "
                                 "table): check database.path")
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from None
    known = {v for v, _, _ in sql.migrations()}
    if done - known:
        raise StoreError(f"{path} was written by a newer marketd (schema {max(done)}; this one "
                         f"knows up to {max(known)}): upgrade marketd")
    if known - done:
        raise StoreError(f"{path} needs migrations {', '.join(map(str, sorted(known - done)))}:"
                         " run `marketd migrate` (serve does it at start-up)")


@asynccontextmanager
async def read_store(config: Config) -> AsyncIterator[Store]:
    """The configured database for a CLI command, opened without migrating it (it must exist
    and hold a schema this marketd knows: require_database), closed after."""
    require_database(config)
    store = await open_store(config.database, Clock(), migrate=False)
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
        async with daemon_session(config) as session, session.post(
                url, json=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=10)) as resp:
            data = await _json(resp, url)
            if resp.status != 202:
                raise MarketdError(f"the daemon refused the job: {data.get('error')}")
            return dict(data["jobs"][0]) | {"via": "daemon"}
    except (aiohttp.ClientConnectionError, TimeoutError):
        pass  # no daemon listening: write to the database; it runs when the daemon starts
    try:
        require_database(config)
    except StoreError as exc:
        raise MarketdError(f"no daemon answers at {daemon_url(config)}, and {exc}") from None
    async with read_store(config) as store:
        result = (await store.enqueue([spec], config.scheduler.fresh_for_seconds))[0]
    return result.as_dict() | {"via": "database"}


async def trigger(config: Config, *, progress: Progress | None = None, every_s: float = 5.0,
                  timeout_s: float | None = None) -> dict[str, Any]:
    """POST /trigger and wait for the run's summary, however long the run takes (or
    ``timeout_s``). While it lasts, ``progress`` hears the queue every ``every_s`` seconds
    (from GET /status). Only a failed connect means the daemon is unreachable: a run that is
    slow is waited for, and a connection dropped during it is said to be so."""
    base = daemon_url(config)
    url = f"{base}/trigger"
    headers = {"x-cron-secret": config.security.cron_secret}
    started = time.monotonic()
    async with daemon_session(config) as session:
        post = asyncio.ensure_future(_post_trigger(session, url, headers))
        try:
            while True:
                left = None if timeout_s is None else timeout_s - (time.monotonic() - started)
                wait = every_s if progress is not None and every_s > 0 else None
                if left is not None:
                    wait = left if wait is None else min(wait, left)
                done, _ = await asyncio.wait({post}, timeout=wait)
                if done:
                    return post.result()
                elapsed = time.monotonic() - started
                if timeout_s is not None and elapsed >= timeout_s:
                    raise MarketdError(
                        f"the run asked of {url} had not finished after {elapsed:.0f} s; it "
                        "goes on in the daemon (see `marketd status`; raise --timeout)")
                if progress is not None:
                    progress(await _progress_line(session, base, elapsed))
        finally:
            if not post.done():
                post.cancel()
                with contextlib.suppress(BaseException):
                    await post


def daemon_session(config: Config) -> aiohttp.ClientSession:
    """A client session to the daemon: over the Unix socket when ``server.socket`` is set, so
    the cron secret and API token go only to a process behind that file's permissions (never
    to whatever listens on the TCP port)."""
    if config.server.socket:
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=config.server.socket))
    return aiohttp.ClientSession()


async def _post_trigger(session: aiohttp.ClientSession, url: str,
                        headers: dict[str, str]) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)
    try:
        async with session.post(url, headers=headers, timeout=timeout) as resp:
            data = await _json(resp, url)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
        raise MarketdError(f"cannot reach marketd at {url}: is the daemon running? "
                           "(systemctl status marketd)") from None
    except aiohttp.ClientConnectionError as exc:
        raise MarketdError(f"marketd at {url} accepted the run but the connection dropped "
                           f"before its summary ({type(exc).__name__}): did the daemon restart? "
                           "(journalctl -u marketd)") from None
    if resp.status != 200:
        hint = (" (check security.cron_secret or CRON_SECRET; as root: --env-file "
                "/etc/marketd/secrets.env)" if resp.status == 401 else "")
        raise MarketdError(f"the daemon answered {resp.status}: {data.get('error')}{hint}")
    return data


async def _progress_line(session: aiohttp.ClientSession, base: str, elapsed: float) -> str:
    line = f"run in progress for {elapsed:.0f} s"
    try:
        async with session.get(f"{base}/status", timeout=aiohttp.ClientTimeout(total=5)) as r:
            data = await r.json(content_type=None)
        counts = data["jobs"]["by_provider"]
        parts = [f"{name} {c['running']} running, {c['pending']} pending"
                 for name, c in sorted(counts.items()) if c["running"] or c["pending"]]
        return f"{line}: {'; '.join(parts) or 'nothing queued'}"
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        return f"{line} (the daemon's /status did not answer)"


async def status(config: Config) -> dict[str, Any]:
    from marketd.app import build_lanes

    async with read_store(config) as store:
        lanes = await build_lanes(config, store, store.clock, None)
        return await status_view(store, lanes, store.clock.now())


async def reset_failed(config: Config, provider: str | None) -> int:
    async with read_store(config) as store:
        return await store.reset_failed(provider)


async def prices(config: Config, provider: str | None, sku: str | None) -> list[dict[str, Any]]:
    async with read_store(config) as store:
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
    shown = data["recent_runs"][:5]
    lines += ["", f"recent runs (the last {len(shown)}; --json has {len(data['recent_runs'])}):"
              if shown else "recent runs:"]
    for r in shown:
        lines.append(f"  {r['started_at']} {r['trigger']:8} selected={r['selected']} "
                     f"ok={r['succeeded']} failed={r['failed']} deferred={r['deferred']} "
                     f"{r['duration_ms'] or 0} ms")
    if not data["recent_runs"]:
        lines.append("  none yet")
    return "\n".join(lines)
