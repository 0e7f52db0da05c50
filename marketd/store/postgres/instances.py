"""Who works, on PostgreSQL: instance rows and heartbeats, the dead daemons' running jobs,
and the lane locks.

A daemon runs a provider's batches while it holds that provider's session advisory lock
(``pg_try_advisory_lock(hashtext('marketd-lane:' || provider))``), taken on a connection of
its own outside the pool: the server releases it when that connection ends, so when a daemon
dies (SIGKILL, a lost host) another takes the lane at its next try. The same connection
LISTENs on ``marketd_wake``: a daemon that enqueues a manual job NOTIFYs the provider there,
and the lane's holder runs it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

import asyncpg
import structlog

from marketd.store.postgres.base import Q, Tables, count, epoch, row_dict, ts
from marketd.store.postgres.database import CONNECT_TIMEOUT_S, DRIVER_ERRORS, Conn
from marketd.store.shared import AGE_BATCH_ROWS, in_batches

log = structlog.get_logger(__name__)

WAKE_CHANNEL = "marketd_wake"
FORGET_AFTER_S = 3600.0  # a dead instance's row stays this long (the status page shows it)


class InstanceTables(Tables):
    url: str
    _instance_row: dict[str, Any] | None = None

    async def register_instance(self, instance_id: str, host: str, pid: int) -> None:
        self.instance_id = instance_id
        self._instance_row = {"id": instance_id, "host": host, "pid": pid,
                              "started_at": self.now_ts()}
        await self.heartbeat(())

    async def heartbeat(self, lanes: Sequence[str]) -> None:
        if self._instance_row is None:
            raise RuntimeError("heartbeat before register_instance")
        await self._write_one("upsert_instance", {
            **self._instance_row, "now": self.now_ts(), "lanes": json.dumps(sorted(lanes))})

    async def outside_writes(self) -> bool:
        return False  # other daemons and the CLI NOTIFY marketd_wake instead

    async def age_jobs(self, provider: str, *, above: int, to: int,
                       enqueued_before: float) -> int:
        params = {"provider": provider, "floor": above, "to": to,
                  "before": ts(enqueued_before), "now": self.now_ts()}

        async def age(batch: int) -> int:
            return count(await self._write_one("age_jobs", {**params, "batch": batch}))

        return await in_batches(age, AGE_BATCH_ROWS)

    async def next_attempt_at(self, provider: str) -> float | None:
        rows = await self._fetch("next_attempt_at", {"provider": provider,
                                                     "now": self.now_ts()})
        return epoch(rows[0]["at"]) if rows else None

    async def rescue_dead(self, stale_after_s: float) -> int:
        now = self.clock.now()
        rescue, forget = Q["rescue_dead"], Q["forget_instances"]
        rescue_args = rescue.args({"now": ts(now), "stale": ts(now - stale_after_s),
                                   "instance": self.instance_id})
        forget_args = forget.args({"before": ts(now - FORGET_AFTER_S),
                                   "instance": self.instance_id})

        async def work(conn: Conn) -> int:
            n = count(await conn.execute(rescue.sql, *rescue_args))
            await conn.execute(forget.sql, *forget_args)
            return n

        return await self.db.write(work)

    async def retire_instance(self) -> int:
        back, delete = Q["return_own_running"], Q["delete_instance"]
        params = {"now": self.now_ts(), "instance": self.instance_id}

        async def work(conn: Conn) -> int:
            n = count(await conn.execute(back.sql, *back.args(params)))
            await conn.execute(delete.sql, *delete.args(params))
            return n

        return await self.db.write(work)

    async def instances(self) -> list[dict[str, Any]]:
        return [r | {"lanes": json.loads(r["lanes"])}
                for r in map(row_dict, await self._fetch("list_instances"))]

    def lane_locks(self) -> PgLaneLocks:
        return PgLaneLocks(self.url)


class PgLaneLocks:
    """Session advisory locks per provider and LISTEN, on one connection outside the pool."""

    shared = True

    def __init__(self, url: str) -> None:
        self.url = url
        self._session: asyncpg.Connection | None = None
        self._held: set[str] = set()
        self._on_wake: Callable[[str], None] | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self._closed = False

    async def open(self, on_wake: Callable[[str], None]) -> None:
        self._on_wake = on_wake
        async with self._lock:
            await self._connect()

    async def _connect(self) -> asyncpg.Connection | None:
        """The connection, (re)opened if it has gone; None if the server does not answer."""
        if self._session is not None and not self._session.is_closed():
            return self._session
        self._lost()
        if self._closed:
            return None
        try:
            conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S,
                                         server_settings={"application_name": "marketd-lanes"})
            await conn.add_listener(WAKE_CHANNEL, self._notified)
        except DRIVER_ERRORS as exc:
            log.warning("lane_connection_failed", error=f"{type(exc).__name__}: {exc}")
            return None
        conn.add_termination_listener(lambda _conn: self._lost())
        self._session = conn
        return conn

    def _lost(self) -> None:
        """The connection ended: the server has released every lock it held."""
        if self._held:
            log.warning("lanes_lost", lanes=sorted(self._held))
        self._held.clear()
        self._session = None

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if self._on_wake is not None and isinstance(payload, str) and payload:
            self._on_wake(payload)

    async def _query(self, name: str, provider: str | None = None) -> Any:
        """One statement on the lanes' connection; None if the connection is gone."""
        conn = await self._connect()
        if conn is None:
            return None
        q = Q[name]
        try:
            return await conn.fetchval(q.sql, *q.args({"provider": provider}))
        except DRIVER_ERRORS as exc:
            log.warning("lane_query_failed", query=name, error=f"{type(exc).__name__}: {exc}")
            with suppress(*DRIVER_ERRORS):
                conn.terminate()
            self._lost()
            return None

    async def try_acquire(self, provider: str) -> bool:
        async with self._lock:
            if provider in self._held and self._session is not None:
                return True
            if await self._query("lane_try_lock", provider):
                self._held.add(provider)
                return True
            return False

    async def release(self, provider: str) -> None:
        async with self._lock:
            if provider in self._held:
                self._held.discard(provider)
                await self._query("lane_unlock", provider)

    def server_pid(self) -> int | None:
        """The PostgreSQL backend pid of the lanes' session (None while it is down)."""
        return None if self._session is None else self._session.get_server_pid()

    def holds(self, provider: str) -> bool:
        return provider in self._held and self._session is not None

    async def check(self) -> bool:
        async with self._lock:
            return bool(await self._query("lane_session_ping") == 1)

    async def notify_wake(self, provider: str, reason: str = "manual") -> None:
        payload = provider if reason == "manual" else f"{provider} {reason}"
        async with self._lock:
            await self._query("notify_wake", payload)

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            conn, self._session = self._session, None
            self._held.clear()
            if conn is not None and not conn.is_closed():
                try:  # closing the session releases its locks: the others take them at once
                    await asyncio.wait_for(conn.close(), 5)
                except DRIVER_ERRORS:
                    conn.terminate()
