"""The running daemon's state, as the HTTP handlers see it.

:class:`Daemon` holds what one daemon owns (config, store, clock, lanes, scheduler, HTTP session,
failure-rate alerts, the /metrics collector) and :data:`DAEMON` is the typed app key through
which every handler reaches it. It is built, started and closed by :mod:`marketd.app`, the
wiring module; web, page, page_forms and metrics depend on this module and never on that one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import structlog
from aiohttp import web

from marketd.alerts import FailureAlerts
from marketd.clock import Clock
from marketd.config import Config
from marketd.errors import QueueFull
from marketd.instance import Instance
from marketd.metrics import PageMetrics
from marketd.models import EnqueueResult, JobSpec, Priority
from marketd.scheduler import Scheduler
from marketd.store import Store
from marketd.worker import Lane

log = structlog.get_logger(__name__)


class Service(Protocol):
    async def stop(self) -> None: ...


@dataclass
class Daemon:
    config: Config
    store: Store
    clock: Clock
    lanes: dict[str, Lane]
    scheduler: Scheduler
    session: aiohttp.ClientSession
    alerts: FailureAlerts
    metrics: PageMetrics
    instance: Instance | None = None  # who works (None: lanes always held, as in tools)
    _pending_at: tuple[float, int] | None = None  # (when, pending jobs) for the queue cap
    # background work beside the scheduler (retention, webhook deliveries), stopped first
    services: dict[str, Service] = field(default_factory=dict)
    _counting: asyncio.Future[dict[str, dict[str, int]]] | None = None

    async def job_counts(self) -> dict[str, dict[str, int]]:
        """The store's job counts by provider and status. Callers that ask while a count runs
        share it: one count over every job takes about 0.1 s at 1M jobs on SQLite, and many
        clients polling /status or the page at once make one count at a time, not one each.
        Nothing is kept after it: a caller gets a count begun at most one count's time before
        it asked, never an older one."""
        if self._counting is None:
            counting = self._counting = asyncio.ensure_future(self.store.job_counts())

            def done(fut: asyncio.Future[dict[str, dict[str, int]]]) -> None:
                self._counting = None
                if not fut.cancelled():
                    fut.exception()  # retrieved here too: every caller may have gone

            counting.add_done_callback(done)
        # shielded: one caller going away does not cancel the count the others wait for
        return await asyncio.shield(self._counting)

    async def enqueue(self, specs: Sequence[JobSpec]) -> list[EnqueueResult]:
        """Store the jobs; a pending manual job wakes a run for its provider (within
        manual_wake_ms), a pending hot one within hot_wake_seconds."""
        await self.check_queue_room(len(specs))
        results = await self.store.enqueue(specs, self.config.scheduler.fresh_for_seconds)
        woken: dict[str, str] = {}
        for spec, res in zip(specs, results, strict=True):
            if res.status != "pending":
                continue
            if spec.priority >= Priority.MANUAL:
                woken[spec.provider] = "manual"
            elif spec.priority >= Priority.HOT:
                woken.setdefault(spec.provider, "hot")
        for provider, reason in woken.items():
            await self.wake(provider, reason)
        return results

    async def reset_failed(self, provider: str | None = None) -> int:
        """Failed jobs back to pending (one provider's, or all), and a run for each provider
        with due work now (not at the next interval)."""
        n = await self.store.reset_failed(provider)
        if n:
            for name in sorted(self.lanes) if provider is None else [provider]:
                if await self.store.any_due(name):
                    await self.wake(name, "reset")
        return n

    async def wake(self, provider: str, reason: str) -> None:
        """A run for ``provider`` on whichever daemon runs it (Scheduler.wake's reasons)."""
        lane = self.lanes.get(provider)
        if self.instance is not None and lane is not None and not lane.held:
            await self.instance.wake(provider, reason)  # another daemon runs this provider
        else:
            self.scheduler.wake(provider, reason)

    async def check_queue_room(self, adding: int) -> None:
        """Raise QueueFull when ``adding`` more would pass scheduler.max_pending_jobs. The
        count is the store's, at most a second old, plus what was added since."""
        cap = self.config.scheduler.max_pending_jobs
        if not cap:
            return
        now = self.clock.monotonic()
        if self._pending_at is None or now - self._pending_at[0] >= 1.0:
            self._pending_at = (now, await self.store.pending_count())
        at, pending = self._pending_at
        if pending + adding > cap:
            raise QueueFull(pending, cap, retry_after_s=60)
        self._pending_at = (at, pending + adding)

    async def close(self) -> None:
        """Stop the scheduler (in-flight calls get the grace period), close the clients and
        the session, return anything still claimed to pending, close the store."""
        await self.scheduler.stop(self.config.scheduler.shutdown_grace_seconds)
        for name, service in self.services.items():
            try:
                await service.stop()
            except Exception:  # closing must go on for the others
                log.exception("service_stop_failed", service=name)
        for lane in self.lanes.values():
            try:
                if lane.client is not None:
                    await lane.client.close()
            except Exception:  # closing must go on for the others
                log.exception("client_close_failed", provider=lane.name)
        await self.session.close()
        # anything this daemon still has claimed (a batch cut short) goes back to pending, no
        # job is lost; then its lanes go to another daemon
        try:
            if self.instance is not None:
                returned = await self.instance.stop()
            else:
                returned = await self.store.rescue_stuck(0)
            if returned:
                log.info("jobs_returned_to_pending", jobs=returned)
        finally:
            await self.store.close()


DAEMON: web.AppKey[Daemon] = web.AppKey("daemon", Daemon)
