"""One provider's call budget: the in-memory sliding log, backed by the durable call log.

:meth:`ProviderBudget.spend` is what a provider client awaits before every request. It waits
for a paced window (``1/second``) or the provider's ``delay_ms`` gap, and raises
:class:`~marketd.errors.BudgetExhausted` when the next free slot is further away than that.
The call is committed to SQLite (market_calls and market_budgets) before ``spend`` returns, so
a crash right after it can only under-use the budget, never overspend it.

**Reserving ahead.** When the worker says how many calls its batch will make (:attr:`ahead`)
and the provider has only long limits (no ``1/second``, no ``delay_ms``), one transaction
reserves up to that many calls, each recorded with the send time ``now + RESERVE_LEASE_S``;
``spend`` then hands them out without a database trip until the lease ends. Recording a later
time than the real send is the safe side: a reserved call counts in every window from the
moment it is reserved until its window has passed after the lease's end, so no window the
provider sees ever holds more than the limit (the proof is in ``_reserve``). Calls not sent
when the batch ends or the lease runs out are deleted again (:meth:`release`); after a crash
they stay, counted and unsent, until their windows pass: under-use, never overspend.

**The manual reserve.** While :attr:`ProviderBudget.background` is set (the worker sets it for
a group with no manual job), a call that would leave less than ``manual_reserve`` of any long
limit unspent raises :class:`~marketd.errors.BudgetExhausted` instead: the check runs before
every call, catalog look-ups included, so background and hot work never spends what manual
jobs are kept.
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

RESERVE_LEASE_S = 10.0  # reserved calls must be sent within this (they are recorded as at its end)
RESERVE_MAX = 50  # calls reserved in one transaction at most
RESERVE_GUARD_S = 1.0  # hand none out this close to the lease's end (time to send it)


class ProviderBudget:
    def __init__(self, config: ProviderConfig, store: Store, clock: Clock, *,
                 margin_s: float = 0.25, max_wait_s: float | None = None,
                 manual_reserve: float = 0.0) -> None:
        self.provider = config.name
        self.limits = config.limits
        self.delay_s = config.delay_ms / 1000
        self.store = store
        self.clock = clock
        self.log = SlidingLog(config.limits, margin_s)
        self.rate_limit = hourly_rate_limit(config.limits)
        # the share of every long limit background and hot work leaves for manual jobs
        self.reserve = manual_reserve
        self.background = False  # the calls now spent are background/hot work's (the worker)
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
        # reserving ahead: only where no short window or delay needs the real send time
        self.reserves_ahead = bool(config.limits) and self.delay_s == 0 and not any(
            lim.paced for lim in config.limits)
        self.ahead = 0  # calls the current batch still expects to make (set by the worker)
        self._reserved: list[int] = []  # ids of calls reserved ahead, not yet handed out
        self._reserved_at = 0.0  # when they were reserved (their hour's budget row)
        self._lease_end = 0.0  # their recorded send time: hand none out at or after it
        # the smoothed time between a batch's calls: a slow provider reserves fewer at once
        self._gap_s: float | None = None
        self._handed_at: float | None = None
        # the provider's own count (Provider.quota): calls left before it resets, if it said
        self._quota: tuple[int, float] | None = None

    def calibrate(self, remaining: int, reset_at: float) -> None:
        """The provider says only ``remaining`` calls are left until ``reset_at`` (the key's
        quota, which other apps may be using too): send no more than that before the reset,
        whatever the configured limits would allow. Replaces the last calibration."""
        now = self.clock.now()
        self._quota = (max(0, remaining), reset_at) if reset_at > now else None

    @property
    def quota_resets_at(self) -> float | None:
        return self._quota[1] if self._quota is not None else None

    def quota_left(self, now: float) -> int | None:
        """Calls the provider's own count still allows before its reset (None: no count)."""
        if self._quota is None:
            return None
        left, reset_at = self._quota
        if now >= reset_at:
            self._quota = None
            return None
        return left

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
        at = self.log.next_free(now)
        if self.delay_s:  # (calls reserved ahead carry a later send time: no gap to keep then)
            at = max(at, self._last_sent + self.delay_s)
        if self.quota_left(now) == 0 and self._quota is not None:
            at = max(at, self._quota[1])
        return at

    def capacity(self, now: float, horizon_s: float, *, background: bool = False) -> int:
        """Calls that fit between now and ``now + horizon_s`` (``background``: less the manual
        reserve of every long limit)."""
        cap = self.log.capacity(now, horizon_s, self.reserve if background else 0.0)
        left = self.quota_left(now)
        return cap if left is None else min(cap, left)

    def _with_others(self, rows: list[tuple[int, float]]) -> tuple[SlidingLog, float]:
        """This budget's log and last send time, counting the calls other processes recorded
        after the last this one saw (``rows``). Read in place when there are none (``spend``
        holds the lock, so nothing changes the log meanwhile); copied only when there are.
        Runs in the database's thread."""
        new = [sent_at for call_id, sent_at in rows if call_id > self._last_id]
        if not new:
            return self.log, self._last_sent
        probe = self.log.copy()
        for sent_at in new:
            probe.record(sent_at)
        return probe, max(self._last_sent, *new)

    def _decider(self) -> Callable[[list[tuple[int, float]], float], bool]:
        """The check ``reserve_call`` runs: would one more call now break a limit or the
        delay?"""
        reserve = self.reserve if self.background else 0.0

        def decide(rows: list[tuple[int, float]], t: float) -> bool:
            probe, sent = self._with_others(rows)
            gap = sent + self.delay_s if self.delay_s else t
            if reserve and probe.room(t, reserve) < 1:
                return False  # into the manual reserve: spend() raises once it has the calls
            return max(probe.next_free(t), gap) <= t

        return decide

    async def spend(self) -> None:
        async with self._lock:
            if self._take_reserved():
                return
            while True:
                now = self.clock.now()
                self.log.prune(now)
                at = self.next_free(now)
                if at > now:
                    if at - now > self.max_wait_s:
                        raise BudgetExhausted(self.provider, at)
                    await self.clock.sleep(at - now)
                    continue
                if self.background and self.log.room(now, self.reserve) < 1:
                    # the call would cross into what manual jobs are kept: the next run's
                    raise BudgetExhausted(self.provider, self._reserve_frees(now))
                want = self._reserve_size(now)
                if want > 1:
                    if await self._reserve(want):
                        return
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
                    self._sent()
                    return

    def _reserve_frees(self, now: float) -> float:
        """When background work may spend again: the oldest call of the longest window
        leaves it (a guess: a run looks again then)."""
        frees = self.log.frees_at(now)
        return frees if frees is not None else now + 60.0

    def _reserve_size(self, now: float) -> int:
        """How many calls to reserve at once: what the batch still expects, no more than the
        provider's own count allows, nor than its pace can send within one lease."""
        if not self.reserves_ahead or self.ahead <= 1:
            return 1
        want = min(self.ahead, RESERVE_MAX)
        left = self.quota_left(now)
        if left is not None:
            want = min(want, left)
        if self._gap_s is not None and self._gap_s > 0:
            want = min(want, max(1, int((RESERVE_LEASE_S - RESERVE_GUARD_S) / self._gap_s)))
        return want

    def _sent(self) -> None:
        self.calls += 1
        self.ahead = max(0, self.ahead - 1)
        if self._quota is not None:
            self._quota = (max(0, self._quota[0] - 1), self._quota[1])
        now = self.clock.now()
        if self._handed_at is not None:  # the time between a batch's calls, smoothed
            gap = now - self._handed_at
            self._gap_s = gap if self._gap_s is None else (self._gap_s + gap) / 2
        self._handed_at = now

    def _take_reserved(self) -> bool:
        """Hand out a call reserved ahead, if one is left and its lease has not ended."""
        if not self._reserved:
            return False
        if self.clock.now() >= self._lease_end - RESERVE_GUARD_S:
            self._give_back()
            return False
        self._reserved.pop()
        self._sent()
        return True

    async def _reserve(self, want: int) -> bool:
        """Reserve up to ``want`` calls in one transaction and hand out the first.

        Why it is safe: the calls are recorded at ``L = now + RESERVE_LEASE_S`` and sent at
        some ``s`` in ``[now, L)``. A limit allows them only while ``room(now)`` holds them,
        and ``room`` counts every call recorded after the window's start at ``now``,
        later-recorded ones included; at any later check that count can only shrink as old
        calls leave, so the provider's window ending at any instant from ``now`` on sees at
        most the limit. And the log keeps each reserved call until ``L + window + margin``,
        past ``s + window`` when the provider lets it go.
        """
        background, reserve = self.background, self.reserve

        def decide(rows: list[tuple[int, float]], t: float) -> tuple[int, float]:
            probe, _ = self._with_others(rows)
            # calls beyond this one are for the batch's later groups, which may be background
            # work: those never come out of the manual reserve
            room = probe.room(t, reserve)
            if not background:
                room = max(room, min(probe.room(t), 1))
            return min(want, room), t + RESERVE_LEASE_S

        now = self.clock.now()
        reserved, t, rows = await self.store.reserve_calls(
            self.provider, self.rate_limit, self._last_id, now - self.log.horizon_s, decide)
        self._absorb(rows)
        if not reserved:
            return False
        for call_id, sent_at in reserved:
            self.log.record(sent_at)
            self._last_id = max(self._last_id, call_id)
        self._reserved = [call_id for call_id, _ in reversed(reserved)]
        self._reserved_at = t
        self._lease_end = reserved[0][1]
        log.debug("calls_reserved_ahead", provider=self.provider, calls=len(reserved))
        self._reserved.pop()
        self._sent()
        return True

    def release(self) -> None:
        """The batch is over: give back the calls reserved ahead and not sent."""
        self.ahead = 0
        self._handed_at = None
        self._give_back()

    def _give_back(self) -> None:
        """Unsent reserved calls leave the log now and the database with the store's next
        write (``Store.flush``)."""
        if not self._reserved:
            return
        self.log.remove(self._lease_end, len(self._reserved))
        self.store.release_soon(self.provider, self._reserved, self._reserved_at)
        self._reserved = []
