"""One scheduler run, and the APScheduler job that repeats it.

:meth:`Scheduler.run_once` is a plain coroutine: ensure this hour's budget rows, return stuck
jobs to pending, then per provider select the due jobs that fit its remaining budget (up to
max_batch_size), hand the batch to its lane, and record the run and each batch. Tests, ``POST
/trigger`` and ``marketd trigger`` call it directly; APScheduler only calls it on an interval.

Runs never overlap for one provider: a provider whose lane is busy is skipped by a run (and
takes waiting manual jobs into its batch instead). Each run is its own task, so a caller that
goes away (an HTTP client hanging up) cannot cancel it half-way.

A provider's next run is also woken at an instant (a manual enqueue, the end of a pause, the
moment the rolling window frees a call): a timer on the injected clock, earliest wins, so a
FakeClock fires it when advanced past that instant.
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
from marketd.store import Store
from marketd.worker import BatchStats, Lane, Worker

log = structlog.get_logger(__name__)

JOBS_PER_SKU_CAP = 20  # a run takes at most this many queued sizes per SKU it calls for
QUOTA_CHECK_S = 3600.0  # how often a provider's own quota count is read (eBay's getRateLimits)
IDLE_REFRESH_PRIORITY = 50  # below background: any job a user queued goes first


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
            batches = [self._provider_batch(self.lanes[n], summary)
                       for n in sorted(wanted) if n in self.lanes]
            # one provider's failure must not leave the others' batches untracked
            for outcome in await asyncio.gather(*batches, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    log.error("provider_batch_failed",
                              error=f"{type(outcome).__name__}: {outcome}")
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
            self._wake_later(lane.name, lane.paused_until or now)
            return
        if lane.lock.locked():
            lane.manual_waiting = True
            summary.providers[lane.name] = {"skipped": "busy"}
            return
        async with lane.lock:
            await self._check_quota(lane, now)
            capacity = lane.budget.capacity(now, self.cfg.interval_seconds)
            if capacity <= 0:
                at = lane.budget.next_free(now)
                summary.providers[lane.name] = {"skipped": "budget", "next_free_at": iso(at)}
                self._wake_later(lane.name, at)
                return
            allow = run_allowance(
                now=now, capacity=capacity, hourly_limit=lane.budget.pacing_limit,
                used_this_hour=lane.budget.log.count_since(now - now % 3600),
                interval_s=self.cfg.interval_seconds, max_batch=self.cfg.max_batch_size,
                manual_reserve=self.cfg.manual_reserve, pacing=self.cfg.pacing)
            if allow.capped_by_window:
                # the rolling window cut this run short: run again when its oldest call leaves
                frees = lane.budget.log.frees_at(now)
                if frees is not None:
                    self._wake_later(lane.name, frees + 0.001)
            min_priority = int(Priority.MANUAL) if allow.manual_only else 0
            jobs = await self._claim(lane, allow.calls, min_priority)
            if not allow.manual_only and self.cfg.idle_refresh_seconds > 0:
                used = len({j.sku for j in jobs}) if lane.coalesces else len(jobs)
                jobs += await self._idle_refresh(lane, allow.calls - used)
            if not jobs:
                summary.providers[lane.name] = {"batch_size": 0}
                # a manual job enqueued while this claim ran found the lane busy: run for it
                await self._rewake_if_manual(lane)
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
            if stats.stopped_by in ("paused", "auth") and lane.paused_until is not None:
                self._wake_later(lane.name, lane.paused_until)  # the rest runs when it ends
            else:
                await self._rewake_if_manual(lane)

    async def _claim(self, lane: Lane, calls: int, min_priority: int = 0) -> list[Job]:
        if lane.coalesces:  # one call per SKU: count SKUs, take every size queued
            return await self.store.claim(lane.name, calls * JOBS_PER_SKU_CAP, max_skus=calls,
                                          min_priority=min_priority)
        return await self.store.claim(lane.name, calls, min_priority=min_priority)

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
        jobs = await self._claim(lane, spare)
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

    # ---- waking for manual jobs ----------------------------------------------------------------

    def wake(self, provider: str) -> None:
        """A manual job was enqueued: fetch it within a second if the provider has budget."""
        lane = self.lanes.get(provider)
        if lane is None or self.stopping or not lane.held:
            return
        if lane.lock.locked():
            lane.manual_waiting = True  # the running batch takes it in at its next group
            return
        self._wake_later(provider, self.clock.now() + self.cfg.manual_wake_ms / 1000)

    def _wake_later(self, provider: str, at: float) -> None:
        """Schedule a run for one provider at epoch second ``at`` (now if that has passed;
        earliest wins), on the clock's timer."""
        if self.stopping:
            return
        at = max(at, self.clock.now())
        existing = self._wake_timers.get(provider)
        if existing is not None and not existing.cancelled() and existing.when <= at:
            return
        if existing is not None:
            existing.cancel()

        def fire() -> None:
            self._wake_timers.pop(provider, None)
            if not self.stopping:
                self._spawn(self._run("manual", [provider]))

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
