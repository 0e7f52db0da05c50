"""One scheduler run, and the APScheduler job that repeats it.

:meth:`Scheduler.run_once` is a plain coroutine: ensure this hour's budget rows, return stuck
jobs to pending, then per provider select the due jobs that fit its remaining budget (up to
max_batch_size), hand the batch to its lane, and record the run and each batch. Tests, ``POST
/trigger`` and ``marketd trigger`` call it directly; APScheduler only calls it on an interval.

Runs never overlap for one provider: a provider whose lane is busy is skipped by a run (and
takes waiting manual jobs into its batch instead). Each run is its own task, so a caller that
goes away (an HTTP client hanging up) cannot cancel it half-way.

A provider's next run is also woken at an instant, so due work never waits for the interval:
a manual enqueue (``manual_wake_ms``), a hot one (``hot_wake_seconds``: a burst of adds makes
one run), jobs moved back by reset-failed or written by another process, the end of a pause,
the earliest retry's backoff, the moment the rolling window frees a call, the next pacing
slot. Each is a timer on the injected clock, one per provider, earliest wins (a FakeClock
fires it when advanced past that instant); every run of a provider arms the next from what it
finds, so a wake replaced by an earlier one is not lost. The run it starts records the wake's
reason as its trigger.

**Aging** (starvation): before a run selects a provider's jobs, pending jobs enqueued more
than ``aging_seconds`` ago rise to hot (150), more than twice that to 199, just below manual;
idle refreshes (priority 50 and below) and jobs already that high are left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from marketd.clock import Clock, Timer, iso
from marketd.config import Config
from marketd.errors import MarketdError
from marketd.models import Job, Priority
from marketd.policy import run_allowance
from marketd.store import Defer, Outcomes, Store
from marketd.worker import BatchStats, Lane, Worker, group_by_sku

log = structlog.get_logger(__name__)

JOBS_PER_SKU_CAP = 20  # a run takes at most this many queued sizes per SKU it calls for
QUOTA_CHECK_S = 3600.0  # how often a provider's own quota count is read (eBay's getRateLimits)
IDLE_REFRESH_PRIORITY = 50  # below background: any job a user queued goes first
AGED_PRIORITY = int(Priority.MANUAL) - 1  # what aging raises a job to at most: below manual


@dataclass
class RunSummary:
    run_id: int
    trigger: str
    started_at: float
    finished_at: float = 0.0
    rescued: int = 0
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def total(self, key: str) -> int:
        return sum(int(p.get(key, 0)) for p in self.providers.values())

    @property
    def outcome(self) -> str:
        if any("error" in p for p in self.providers.values()):
            return "error"  # a provider's batch crashed
        if not self.total("batch_size"):
            return "idle"
        if self.total("failed") or self.total("deferred"):
            return "partial"
        return "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "trigger": self.trigger,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_ms": int((self.finished_at - self.started_at) * 1000),
            "rescued": self.rescued,
            "selected": self.total("batch_size"),
            "succeeded": self.total("succeeded"),
            "failed": self.total("failed"),
            "deferred": self.total("deferred"),
            "calls": self.total("calls"),
            "outcome": self.outcome,
            "providers": self.providers,
        }


class Scheduler:
    def __init__(self, config: Config, store: Store, lanes: Mapping[str, Lane], clock: Clock,
                 worker: Worker | None = None) -> None:
        self.config = config
        self.cfg = config.scheduler
        self.store = store
        self.lanes = dict(lanes)
        self.clock = clock
        self.worker = worker or Worker(store, config.scheduler, clock)
        self.stopping = False
        self.last_run_at: float | None = None
        self.runs_started = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake_timers: dict[str, Timer] = {}
        self._wake_reasons: dict[str, str] = {}
        self._aged_at: dict[str, float] = {}
        self._aps: AsyncIOScheduler | None = None
        self._interval_task: asyncio.Task[Any] | None = None
        # called after every run (queue samples, failure-rate alerts); errors are logged only
        self.after_run: list[Callable[[RunSummary], Awaitable[None]]] = []

    # ---- one run -------------------------------------------------------------------------------

    async def run_once(self, trigger: str = "manual",
                       providers: Iterable[str] | None = None) -> RunSummary:
        """Start a run as its own task and wait for its summary (shielded from the caller)."""
        task = self._spawn(self._run(trigger, providers))
        return await asyncio.shield(task)

    async def _run(self, trigger: str, providers: Iterable[str] | None) -> RunSummary:
        wanted = set(providers) if providers is not None else set(self.lanes)
        now = self.clock.now()
        self.runs_started += 1
        # calls no limit window can see any more go (kept a day at least, for the page)
        keep = max([ln.budget.log.horizon_s for ln in self.lanes.values()] + [86400.0])
        run_id, rescued = await self.store.begin_run(
            trigger, {n: ln.budget.rate_limit for n, ln in self.lanes.items()},
            self.cfg.stuck_after_seconds, now - keep - 3600)
        summary = RunSummary(run_id, trigger, now, rescued=rescued)
        try:
            if summary.rescued:
                log.warning("stuck_jobs_rescued", jobs=summary.rescued)
            names = [n for n in sorted(wanted) if n in self.lanes]
            batches = [self._provider_batch(self.lanes[n], summary) for n in names]
            # one provider's failure must not leave the others' batches untracked
            outcomes = await asyncio.gather(*batches, return_exceptions=True)
            for name, outcome in zip(names, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    error = f"{type(outcome).__name__}: {outcome}"
                    log.error("provider_batch_failed", provider=name, error=error)
                    summary.providers[name] = {**summary.providers.get(name, {}),
                                               "error": error}
        finally:
            summary.finished_at = self.clock.now()
            self.last_run_at = summary.finished_at
            result = summary.as_dict()
            await asyncio.shield(self.store.finish_run(
                run_id, selected=result["selected"], succeeded=result["succeeded"],
                failed=result["failed"], deferred=result["deferred"], rescued=summary.rescued,
                duration_ms=result["duration_ms"], outcome=summary.outcome))
        log.info("scheduler_run_finished", **{k: v for k, v in result.items()
                                              if k != "providers"})
        for hook in self.after_run:
            try:
                await hook(summary)
            except Exception:
                log.exception("after_run_hook_failed")
        return summary

    async def _provider_batch(self, lane: Lane, summary: RunSummary) -> None:
        now = self.clock.now()
        if self.stopping or lane.stopping:
            summary.providers[lane.name] = {"skipped": "shutting down"}
            return
        if not lane.held:  # another daemon on the database runs this provider
            summary.providers[lane.name] = {"skipped": "another daemon runs it"}
            return
        if lane.paused(now):
            summary.providers[lane.name] = {
                "skipped": "paused", "paused_until": iso(lane.paused_until),
                "reason": lane.pause_reason}
            self._wake_later(lane.name, lane.paused_until or now, "pause_end")
            return
        if lane.lock.locked():
            lane.manual_waiting = True
            summary.providers[lane.name] = {"skipped": "busy"}
            return
        try:
            async with lane.lock:
                await self._provider_batch_locked(lane, summary, now)
        finally:
            # a manual job enqueued while the lock was held after the batch's last look set
            # manual_waiting and armed nothing: arm its run now that the lane is free
            if lane.manual_waiting and not self.is_stopping():
                lane.manual_waiting = False
                self._wake_later(lane.name, lane.budget.next_free(self.clock.now()), "manual")

    async def _provider_batch_locked(self, lane: Lane, summary: RunSummary, now: float) -> None:
        await self._check_quota(lane, now)
        capacity = lane.budget.capacity(now, self.cfg.interval_seconds)
        if capacity <= 0:
            at = lane.budget.next_free(now)
            summary.providers[lane.name] = {"skipped": "budget", "next_free_at": iso(at)}
            self._wake_later(lane.name, at, "budget")
            return
        await self._age(lane, now)
        allow = run_allowance(
            now=now, capacity=capacity, hourly_limit=lane.budget.pacing_limit,
            used_this_hour=lane.budget.log.count_since(now - now % 3600),
            interval_s=self.cfg.interval_seconds, max_batch=self.cfg.max_batch_size,
            manual_reserve=self.cfg.manual_reserve, pacing=self.cfg.pacing,
            background_capacity=lane.budget.capacity(now, self.cfg.interval_seconds,
                                                     background=True))
        if allow.capped_by_window:
            # the rolling window cut this run short: run again when its oldest call leaves
            frees = lane.budget.log.frees_at(now)
            if frees is not None:
                self._wake_later(lane.name, frees + 0.001, "budget")
        min_priority = int(Priority.MANUAL) if allow.manual_only else 0
        jobs = await self._claim(lane, allow.calls, min_priority)
        if not allow.manual_only:
            jobs, cost = await self._fit(lane, jobs, allow.calls)
            if self.cfg.idle_refresh_seconds > 0:
                jobs += await self._idle_refresh(lane, allow.calls - cost)
        if not jobs:
            summary.providers[lane.name] = {"batch_size": 0}
            # a manual job enqueued while this claim ran found the lane busy: run for it
            await self._rewake_if_manual(lane)
            await self._wake_when_due(lane)
            return
        log.info("batch_started", provider=lane.name, jobs=len(jobs), capacity=capacity)
        stats: BatchStats = await self.worker.run_batch(lane, jobs)
        summary.providers[lane.name] = stats.as_dict()
        self.store.record_metrics_soon(  # written with the run's finish
            run_id=summary.run_id, provider=lane.name, batch_size=stats.batch_size,
            succeeded=stats.succeeded, failed=stats.failed, deferred=stats.deferred,
            calls=stats.calls, rate_limited=stats.rate_limited,
            duration_ms=stats.duration_ms)
        if self.is_stopping():  # (a method: mypy narrows the attribute across awaits)
            return
        if not lane.paused(self.clock.now()):
            await self._rewake_if_manual(lane)
        await self._wake_when_due(lane)  # the pause's end, the next retry

    async def _claim(self, lane: Lane, calls: int, min_priority: int = 0) -> list[Job]:
        if lane.coalesces:  # one call per SKU: count SKUs, take every size queued
            return await self.store.claim(lane.name, calls * JOBS_PER_SKU_CAP, max_skus=calls,
                                          min_priority=min_priority)
        return await self.store.claim(lane.name, calls, min_priority=min_priority)

    async def _fit(self, lane: Lane, jobs: list[Job], calls: int) -> tuple[list[Job], int]:
        """Keep the claimed jobs whose calls, catalog look-ups counted before they happen
        (:meth:`Provider.calls_for`), fit the run's ``calls``; the rest go back to pending for
        the next run, no retry spent. Manual jobs always stay (they may use the reserve).
        Returns the jobs kept and the calls they are expected to spend."""
        if lane.client is None or not jobs:
            return jobs, len(group_by_sku(jobs, lane.coalesces))
        kept: list[Job] = []
        back: list[Job] = []
        cost = 0
        for group in group_by_sku(jobs, lane.coalesces):
            need = await lane.client.calls_for(group[0].sku)
            if cost + need <= calls or any(j.priority >= Priority.MANUAL for j in group):
                kept += group
                cost += need
            else:
                back += group
        if back:
            await self.store.record(Outcomes(deferred=[Defer(j.id) for j in back]))
            log.info("jobs_left_for_next_run", provider=lane.name, jobs=len(back),
                     reason="catalog look-ups do not fit this run's calls")
        return kept, cost

    async def _age(self, lane: Lane, now: float) -> None:
        """Starvation: jobs that waited ``aging_seconds`` rise to hot, twice that to just
        below manual (at most every tenth of aging_seconds, and every minute)."""
        aging = self.cfg.aging_seconds
        if aging <= 0 or now < self._aged_at.get(lane.name, float("-inf")) + min(60, aging / 10):
            return
        self._aged_at[lane.name] = now
        raised = 0
        for waited, to in ((2 * aging, AGED_PRIORITY), (aging, int(Priority.HOT))):
            raised += await self.store.age_jobs(lane.name, above=IDLE_REFRESH_PRIORITY, to=to,
                                                enqueued_before=now - waited)
        if raised:
            log.info("jobs_aged", provider=lane.name, jobs=raised, aging_s=aging)

    async def _wake_when_due(self, lane: Lane) -> None:
        """After a provider's run: wake it when its pause ends; else when its earliest retry
        comes due, and, if work is left due (pacing cut the run short), when the next pacing
        slot opens rather than at the next interval tick."""
        now = self.clock.now()
        if lane.paused(now) and lane.paused_until is not None:
            self._wake_later(lane.name, lane.paused_until, "pause_end")
            return
        at = await self.store.next_attempt_at(lane.name)
        if at is not None:
            self._wake_later(lane.name, at, "retry")
        if self.cfg.pacing and await self.store.any_due(lane.name):
            hour = now - now % 3600
            step = min(self.cfg.interval_seconds, 3600.0)
            slot = min(hour + ((now - hour) // step + 1) * step, hour + 3600)
            self._wake_later(lane.name, slot, "pacing")

    async def _idle_refresh(self, lane: Lane, spare: int) -> list[Job]:
        """Calls this run may make that no queued job needs refresh the oldest prices users
        asked for (older than idle_refresh_seconds), instead of going unused."""
        if spare <= 0:
            return []
        queued = await self.store.enqueue_stale(
            lane.name, spare, per_sku=lane.coalesces,
            older_than_s=self.cfg.idle_refresh_seconds,
            asked_within_s=self.cfg.idle_refresh_keep_days * 86400,
            priority=IDLE_REFRESH_PRIORITY)
        if not queued:
            return []
        jobs, _ = await self._fit(lane, await self._claim(lane, spare), spare)
        log.info("idle_refresh", provider=lane.name, spare_calls=spare, jobs=len(jobs))
        return jobs

    async def _check_quota(self, lane: Lane, now: float) -> None:
        """Hourly (and in the first run), lower the budget to what the provider itself says is
        left of the key's quota: other apps on the same key spend it too."""
        if lane.client is None or now < lane.quota_checked_at + QUOTA_CHECK_S:
            return
        lane.quota_checked_at = now
        try:
            quota = await lane.client.quota()
        except MarketdError as exc:
            log.warning("quota_check_failed", provider=lane.name, error=str(exc))
            return
        except Exception:  # optional: a bug in reading it must not stop the provider's runs
            log.exception("quota_check_crashed", provider=lane.name)
            return
        if quota is None:
            return
        lane.budget.calibrate(quota.remaining, quota.reset_at)
        log.info("quota_checked", provider=lane.name, remaining=quota.remaining,
                 limit=quota.limit, resets_at=iso(quota.reset_at))

    async def _rewake_if_manual(self, lane: Lane) -> None:
        """Manual jobs that arrived after the batch's last look get a run of their own."""
        if lane.manual_waiting or await self.store.any_due(lane.name, int(Priority.MANUAL)):
            lane.manual_waiting = False
            at = lane.budget.next_free(self.clock.now())
            self._wake_later(lane.name, at)

    # ---- wakes -----------------------------------------------------------------------------------

    def wake(self, provider: str, reason: str = "manual") -> None:
        """Due work for ``provider``: a manual job (a run within manual_wake_ms; a running
        batch takes it in at its next group), a hot one (within hot_wake_seconds: a burst of
        adds makes one run), or jobs moved back to pending (``reset``, ``written`` by another
        process: within manual_wake_ms)."""
        lane = self.lanes.get(provider)
        if lane is None or self.stopping or not lane.held:
            return
        if reason == "manual" and lane.lock.locked():
            lane.manual_waiting = True  # the running batch takes it in at its next group
            return
        delay = self.cfg.hot_wake_seconds if reason == "hot" else self.cfg.manual_wake_ms / 1000
        self._wake_later(provider, self.clock.now() + delay, reason)

    def _wake_later(self, provider: str, at: float, reason: str = "manual") -> None:
        """Schedule a run for one provider at epoch second ``at`` (now if that has passed;
        earliest wins), on the clock's timer; the run's trigger is ``reason``."""
        if self.stopping:
            return
        at = max(at, self.clock.now())
        existing = self._wake_timers.get(provider)
        if existing is not None and not existing.cancelled() and existing.when <= at:
            return
        if existing is not None:
            existing.cancel()
        self._wake_reasons[provider] = reason

        def fire() -> None:
            self._wake_timers.pop(provider, None)
            trigger = self._wake_reasons.pop(provider, reason)
            if not self.stopping:
                self._spawn(self._run(trigger, [provider]))

        self._wake_timers[provider] = self.clock.call_at(at, fire)

    def wake_at(self, provider: str) -> float | None:
        """When a run for ``provider`` is woken next (None: no wake is armed)."""
        timer = self._wake_timers.get(provider)
        return None if timer is None or timer.cancelled() else timer.when

    async def idle(self) -> None:
        """Wait until no run is in flight, runs started meanwhile included (a wake fired by
        advancing a FakeClock starts one without anyone awaiting it)."""
        while pending := [t for t in self._tasks if not t.done()]:
            await asyncio.wait(pending)

    # ---- the interval job and shutdown ---------------------------------------------------------

    def start(self) -> None:
        """Run every interval_seconds (the first run now), never two interval runs at once."""
        self._aps = AsyncIOScheduler(timezone="UTC")
        self._aps.add_job(self._interval_tick, IntervalTrigger(seconds=self.cfg.interval_seconds),
                          id="marketd-run", max_instances=1, coalesce=True,
                          misfire_grace_time=None,
                          next_run_time=datetime.fromtimestamp(self.clock.now(), UTC))
        self._aps.start()

    async def _interval_tick(self) -> None:
        """APScheduler's job: start an interval run as our own task and return at once, so
        shutdown drains it with the other runs (and APScheduler never holds a cancelled job).
        A tick while the previous interval run is still going is skipped."""
        if self.stopping:
            return
        if self._interval_task is not None and not self._interval_task.done():
            log.info("interval_run_skipped", reason="previous run still going")
            return
        self._interval_task = self._spawn(self._run("interval", None))

    def is_stopping(self) -> bool:
        return self.stopping

    def alive(self) -> bool:
        return self._aps is not None and bool(self._aps.running) and not self.stopping

    async def stop(self, grace_s: float) -> None:
        """Stop taking work, let in-flight calls finish for ``grace_s``, cancel the rest."""
        self.stopping = True
        for timer in self._wake_timers.values():
            timer.cancel()
        self._wake_timers.clear()
        if self._aps is not None:
            aps, self._aps = self._aps, None
            if aps.running:
                # a tick already handed to the executor returns at once (stopping is set);
                # let it, or the executor cancels it and logs that as an error
                for _ in range(3):
                    await asyncio.sleep(0)
                aps.shutdown(wait=False)
        for lane in self.lanes.values():
            lane.stopping = True
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            started = self.clock.monotonic()
            _, still = await asyncio.wait(pending, timeout=grace_s)
            for t in still:
                t.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
            log.info("scheduler_drained", in_flight=len(pending), cancelled=len(still),
                     waited_s=round(self.clock.monotonic() - started, 2))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("scheduler_task_failed", error=f"{type(exc).__name__}: {exc}")
