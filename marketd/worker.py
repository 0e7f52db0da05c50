"""One batch for one provider: group by SKU, call the client, decide each job's fate by the
type of its outcome, and write every group's results in one transaction (the one that reserves
the next group's call, or the batch's last).

A :class:`Lane` is a provider's runtime state: its client, budget, pause and counters. Only one
batch runs in a lane at a time (its lock); between groups the lane takes in manual jobs that
arrived meanwhile, so a manual refresh does not wait for a long background batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from marketd.budget import ProviderBudget
from marketd.clock import Clock
from marketd.config import SchedulerConfig
from marketd.errors import (
    AuthError,
    BudgetExhausted,
    MarketdError,
    NotFound,
    PermanentError,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    SizeError,
    TransientError,
)
from marketd.models import Job, Price, Priority
from marketd.providers.base import FetchResult, Provider
from marketd.store import Defer, Outcomes, ProviderState, Retry, Store

log = structlog.get_logger(__name__)

DEFAULT_429_PAUSE_S = 60.0
# market_tokens kind of the fingerprint of the credentials a provider refused (never the secret)
FINGERPRINT_KIND = "refused_credentials"


@dataclass
class LaneCounters:
    calls: int = 0
    rate_limited: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    deferred: int = 0


@dataclass
class Lane:
    name: str
    client: Provider | None  # None in offline views (the CLI's status)
    budget: ProviderBudget
    coalesces: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    paused_until: float | None = None
    pause_reason: str | None = None
    credential: str | None = None
    # a hash of the provider's configured secrets: a pause for refused credentials does not
    # outlive a restart with other credentials (restore_pause)
    fingerprint: str = ""
    stopping: bool = False
    # this daemon runs the provider's batches (holds its lane lock: marketd.instance)
    held: bool = True
    manual_waiting: bool = False
    pause_dirty: bool = False  # the pause changed and is not yet in provider_state
    quota_checked_at: float = float("-inf")  # when the provider's own quota was last read
    counters: LaneCounters = field(default_factory=LaneCounters)

    def paused(self, now: float) -> bool:
        return self.paused_until is not None and self.paused_until > now


@dataclass
class BatchStats:
    provider: str
    batch_size: int = 0
    succeeded: int = 0
    failed: int = 0
    deferred: int = 0
    retried: int = 0
    calls: int = 0
    rate_limited: int = 0
    duration_ms: int = 0
    stopped_by: str | None = None  # budget, paused, auth, shutdown
    next_retry_at: float | None = None  # the earliest retry this batch scheduled

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items()
                if k not in ("provider", "next_retry_at")}


def backoff_s(retry_count: int, cfg: SchedulerConfig, rng: random.Random) -> float:
    """base * 2^retry, with +-20% jitter, capped by retry_max_seconds."""
    raw = cfg.retry_base_seconds * (2 ** min(retry_count, 30))
    return float(min(cfg.retry_max_seconds, raw * rng.uniform(0.8, 1.2)))


def group_by_sku(jobs: Sequence[Job], coalesces: bool) -> list[list[Job]]:
    """Jobs of one SKU share a group (one product-level call) where the provider has one."""
    if not coalesces:
        return [[j] for j in jobs]
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.sku, []).append(job)
    return list(groups.values())


class Worker:
    def __init__(self, store: Store, cfg: SchedulerConfig, clock: Clock,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self.rng = rng or random.Random()

    async def run_batch(self, lane: Lane, jobs: Sequence[Job]) -> BatchStats:
        """Process claimed jobs (all 'running'); every job leaves as completed, failed or
        pending. Must be called with ``lane.lock`` held."""
        started = self.clock.monotonic()
        stats = BatchStats(lane.name, batch_size=len(jobs))
        calls_before = lane.budget.calls
        queue = group_by_sku(jobs, lane.coalesces)
        current: list[Job] = []  # the group in flight, until its outcomes are recorded
        try:
            while queue:
                stop = stats.stopped_by or self._stop_reason(lane)
                if stop:
                    stats.stopped_by = stop
                    lane.budget.release()
                    await self._defer_all([j for g in queue for j in g], stats, None)
                    queue = []
                    break
                if lane.manual_waiting:
                    queue = await self._take_manual(lane, queue, stats)
                current = queue.pop(0)
                lane.budget.ahead = len(queue) + 1  # calls it may reserve in one transaction
                # background and hot work stops short of the manual reserve (budget.spend)
                lane.budget.background = all(j.priority < Priority.MANUAL for j in current)
                outcomes = await self._run_group(lane, current, stats)
                # written with the next call's reservation, or once due (store.pending has
                # the rules: a crash loses at most a second of answers)
                self.store.record_soon(outcomes)
                current = []
                await self.store.flush_due()  # (a write finishes whole even if cancelled)
            lane.budget.release()
            await asyncio.shield(self.store.flush())
        except BaseException as exc:
            # shutdown ran out of grace, or the database failed mid-batch: whatever is still
            # claimed goes back to pending now, not after stuck_after_seconds (in the same
            # transaction as the results of the groups already answered)
            lane.budget.release()
            left = current + [j for g in queue for j in g]
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.record(Outcomes(
                    deferred=[Defer(j.id, None, None) for j in left])))
                stats.deferred += len(left)
            stats.stopped_by = "shutdown" if isinstance(exc, asyncio.CancelledError) else "error"
            raise
        finally:
            lane.budget.background = False
            stats.calls = lane.budget.calls - calls_before
            lane.counters.calls += stats.calls
            stats.duration_ms = int((self.clock.monotonic() - started) * 1000)
            log.info("batch_finished", provider=lane.name, **stats.as_dict())
        return stats

    def _stop_reason(self, lane: Lane) -> str | None:
        if lane.stopping:
            return "shutdown"
        if lane.paused(self.clock.now()):
            return "auth" if lane.credential else "paused"
        return None

    async def _take_manual(self, lane: Lane, queue: list[list[Job]],
                           stats: BatchStats) -> list[list[Job]]:
        lane.manual_waiting = False
        extra = await self.store.claim(lane.name, 50, min_priority=int(Priority.MANUAL))
        if not extra:
            return queue
        stats.batch_size += len(extra)
        log.info("manual_jobs_joined_batch", provider=lane.name, jobs=len(extra))
        return group_by_sku(extra, lane.coalesces) + queue

    async def _defer_all(self, jobs: Sequence[Job], stats: BatchStats,
                         until: float | None) -> None:
        if jobs:
            await self.store.record(Outcomes(deferred=[Defer(j.id, until) for j in jobs]))
            stats.deferred += len(jobs)

    async def _run_group(self, lane: Lane, group: list[Job], stats: BatchStats) -> Outcomes:
        sku = group[0].sku
        if lane.client is None:
            raise RuntimeError(f"lane {lane.name} has no client")
        try:
            result = await lane.client.fetch_group(sku, group)
        except MarketdError as exc:
            result = FetchResult(outcomes={j.id: exc for j in group})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a client must not kill the daemon or lose jobs
            log.exception("provider_client_crashed", provider=lane.name, sku=sku)
            err = TransientError(lane.name, f"internal error: {type(exc).__name__}: {exc}")
            result = FetchResult(outcomes={j.id: err for j in group})
        outcomes = self._decide(lane, group, result, stats)
        if lane.pause_dirty:
            lane.pause_dirty = False
            await self.store.set_pause(lane.name, lane.paused_until, lane.pause_reason,
                                       lane.credential)
            if lane.credential:  # which credentials were refused, as a hash
                await self.store.put_token(lane.name, FINGERPRINT_KIND, lane.fingerprint, None)
        return outcomes

    def _decide(self, lane: Lane, group: list[Job], result: FetchResult,
                stats: BatchStats) -> Outcomes:
        now = self.clock.now()
        completed: list[str] = []
        failed: list[tuple[str, str]] = []
        retried: list[Retry] = []
        deferred: list[Defer] = []
        prices: list[Price] = list(result.extra_prices)
        wanted: list[tuple[str, str, str, str | None, str]] = []
        limited = False
        for job in group:
            outcome = result.outcomes.get(job.id)
            if outcome is None:
                outcome = TransientError(lane.name, "the client gave no answer for this job")
            if isinstance(outcome, Price):
                completed.append(job.id)
                prices.append(outcome)
                if job.priority >= Priority.BACKGROUND:  # a user's job, not an idle refresh
                    wanted.append((job.provider, job.sku, job.size_key or "", job.size,
                                   job.size_system))
                continue
            if isinstance(outcome, RateLimited):
                limited = True
                self._pause_rate_limited(lane, outcome, now)
                deferred.append(Defer(job.id, None, f"deferred: {outcome.message}"))
            elif isinstance(outcome, AuthError):
                self._pause_auth(lane, outcome, now)
                deferred.append(Defer(job.id, None, f"waiting: {outcome.message}"))
            elif isinstance(outcome, BudgetExhausted):
                stats.stopped_by = "budget"
                deferred.append(Defer(job.id, None, None))
            elif isinstance(outcome, NotFound | SizeError | PermanentError):
                failed.append((job.id, _text(outcome)))
            elif isinstance(outcome, ProviderError | MarketdError):
                # TransientError and anything unexpected: bounded retries with backoff
                if job.retry_count >= self.cfg.max_retries:
                    failed.append((job.id, f"gave up after {job.retry_count} retries: "
                                           f"{_text(outcome)}"))
                else:
                    at = now + backoff_s(job.retry_count, self.cfg, self.rng)
                    retried.append(Retry(job.id, _text(outcome), at))
        # prices for other sizes may repeat a job's own: keep one per key
        unique = {(p.provider, p.sku, p.size): p for p in prices}
        if limited:  # one 429 answered the group's call
            stats.rate_limited += 1
        if retried:
            first = min(r.next_attempt_at for r in retried)
            stats.next_retry_at = min(first, stats.next_retry_at or first)
        stats.succeeded += len(completed)
        stats.failed += len(failed)
        stats.retried += len(retried)
        stats.deferred += len(deferred) + len(retried)
        lane.counters.succeeded += len(completed)
        lane.counters.failed += len(failed)
        lane.counters.retried += len(retried)
        lane.counters.deferred += len(deferred)
        for job_id, message in failed:
            log.warning("job_failed", provider=lane.name, job_id=job_id, error=message)
        for r in retried:
            log.info("job_retry_scheduled", provider=lane.name, job_id=r.job_id, error=r.error,
                     next_attempt_at=r.next_attempt_at)
        if completed:  # (one info line per batch: batch_finished)
            log.debug("jobs_completed", provider=lane.name, sku=group[0].sku,
                      jobs=len(completed), prices=len(unique))
        return Outcomes(completed=completed, failed=failed, retried=retried, deferred=deferred,
                        prices=list(unique.values()), wanted=wanted)

    def _pause_rate_limited(self, lane: Lane, exc: RateLimited, now: float) -> None:
        if lane.paused(now) and not lane.credential:
            return  # already paused for this incident
        pause = exc.retry_after_s if exc.retry_after_s is not None else DEFAULT_429_PAUSE_S
        lane.counters.rate_limited += 1
        lane.paused_until = now + pause
        kind = "quota_exhausted" if isinstance(exc, QuotaExhausted) else "rate_limited"
        lane.pause_reason = f"{kind}: {exc.message}"
        lane.credential = None
        log.warning("provider_rate_limited", provider=lane.name, pause_s=round(pause, 1),
                    retry_after_given=exc.retry_after_s is not None, reason=kind)
        self._persist_pause(lane)

    def _pause_auth(self, lane: Lane, exc: AuthError, now: float) -> None:
        if lane.paused(now) and lane.credential:
            return
        lane.paused_until = now + self.cfg.auth_pause_seconds
        lane.pause_reason = f"credentials refused: {exc.message}"
        lane.credential = exc.credential
        log.error("provider_auth_failed", provider=lane.name, check=exc.credential,
                  error=exc.message, pause_s=self.cfg.auth_pause_seconds)
        self._persist_pause(lane)

    def _persist_pause(self, lane: Lane) -> None:
        lane.pause_dirty = True


async def restore_pause(lane: Lane, state: ProviderState | None, store: Store,
                        now: float, *, check: bool = True) -> None:
    """Take up a pause recorded in the database (start-up, or a lane taken from another
    daemon); one for refused credentials only while the credentials are the ones refused
    (their fingerprint, ``check``): new credentials get their chance at once."""
    if state is None or not state.paused_until or state.paused_until <= now:
        return
    if state.credential and check:
        refused = await store.get_token(lane.name, FINGERPRINT_KIND)
        if refused is None or refused[0] != lane.fingerprint:
            log.info("auth_pause_dropped", provider=lane.name, check=state.credential,
                     reason="the credentials changed since they were refused")
            await store.set_pause(lane.name, None, None, None)
            return
    lane.paused_until = state.paused_until
    lane.pause_reason = state.pause_reason
    lane.credential = state.credential


def _text(exc: BaseException) -> str:
    return str(exc)
