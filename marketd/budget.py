"""One provider's call budget: the in-memory sliding log, backed by the durable call log.

:meth:`ProviderBudget.spend` is what a provider client awaits before every request. It waits
for a paced window (``1/second``) or the provider's ``delay_ms`` gap, and raises
:class:`~marketd.errors.BudgetExhausted` when the next free slot is further away than that.
The call is committed to SQLite (market_calls and market_budgets) before ``spend`` returns, so
a crash right after it can only under-use the budget, never overspend it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from marketd.clock import Clock
from marketd.config import ProviderConfig
from marketd.errors import BudgetExhausted
from marketd.ratelimit import SlidingLog, hourly_pace, hourly_rate_limit
from marketd.store import Store

log = structlog.get_logger(__name__)


class ProviderBudget:
    def __init__(self, config: ProviderConfig, store: Store, clock: Clock, *,
                 margin_s: float = 0.25, max_wait_s: float | None = None) -> None:
        self.provider = config.name
        self.limits = config.limits
        self.delay_s = config.delay_ms / 1000
        self.store = store
        self.clock = clock
        self.log = SlidingLog(config.limits, margin_s)
        self.rate_limit = hourly_rate_limit(config.limits)
        # what runs pace themselves by: each long window spread evenly over its own length
        # (a 25000/day limit is about 1042 an hour, not 25000 in the first hours)
        self.pacing_limit = hourly_pace(config.limits)
        paced = [lim.window_s + margin_s for lim in config.limits if lim.paced]
        # wait for a paced window or the delay gap, never for a long window
        self.max_wait_s = max_wait_s if max_wait_s is not None else max(
            [*paced, self.delay_s + margin_s, 1.0])
        self.calls = 0  # calls this process has sent (for metrics)
        self._last_id = 0
        self._last_sent = float("-inf")
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Rebuild the sliding log from the durable call log (start-up)."""
        now = self.clock.now()
        rows = await self.store.load_calls(self.provider, now - self.log.horizon_s)
        self._absorb(rows)

    def _absorb(self, rows: list[tuple[int, float]]) -> None:
        """Calls recorded (by any process) after the last one this log has seen."""
        for call_id, sent_at in rows:
            if call_id > self._last_id:
                self.log.record(sent_at)
                self._last_id = call_id
                self._last_sent = max(self._last_sent, sent_at)  # delay_ms holds across processes

    def next_free(self, now: float) -> float:
        return max(self.log.next_free(now), self._last_sent + self.delay_s)

    def capacity(self, now: float, horizon_s: float) -> int:
        return self.log.capacity(now, horizon_s)

    def _decider(self) -> Callable[[list[tuple[int, float]], float], bool]:
        """The check ``reserve_call`` runs in the database's thread: would one more call now
        break a limit or the delay, counting calls other processes recorded meanwhile?

        It reads this budget's log in place (``spend`` holds the lock, so nothing changes it
        meanwhile) and copies it only when another process's calls must be added.
        """
        log_, last_id, last_sent = self.log, self._last_id, self._last_sent

        def decide(rows: list[tuple[int, float]], t: float) -> bool:
            new = [(call_id, sent_at) for call_id, sent_at in rows if call_id > last_id]
            probe, sent = log_, last_sent
            if new:
                probe = log_.copy()
                for _, sent_at in new:
                    probe.record(sent_at)
                    sent = max(sent, sent_at)
            return max(probe.next_free(t), sent + self.delay_s) <= t

        return decide

    async def spend(self) -> None:
        async with self._lock:
            while True:
                now = self.clock.now()
                self.log.prune(now)
                at = self.next_free(now)
                if at > now:
                    if at - now > self.max_wait_s:
                        raise BudgetExhausted(self.provider, at)
                    await self.clock.sleep(at - now)
                    continue

                allowed, sent_at, rows = await self.store.reserve_call(
                    self.provider, self.rate_limit, self._last_id,
                    now - self.log.horizon_s, self._decider())
                self._absorb(rows[:-1] if allowed else rows)
                if allowed:
                    # our own call, whatever its id: counted here, never filtered out
                    call_id, _ = rows[-1]
                    self.log.record(sent_at)
                    self._last_id = max(self._last_id, call_id)
                    self._last_sent = sent_at
                    self.calls += 1
                    return
