"""The rows of the table: which scheduler runs the simulated day.

"marketd" is marketd's own ``Scheduler``, unchanged (the judged row). "before" and
"batch_in_calls_only" are counterfactuals kept for comparison: the scheduling marketd had before
its policy (marketd/policy.py), written as subclasses that replace ``Scheduler._provider_batch``
for a coalescing provider (the only private method the bench still overrides: these rows are a
different selection policy, not marketd's). Every row's wakes are marketd's own, on the clock.
"""

from __future__ import annotations

from typing import Any

POLICIES = ("marketd", "before", "batch_in_calls_only")
JUDGED = "marketd"


def scheduler_classes() -> dict[str, Any]:
    """The policies by row name: "marketd" (the real Scheduler), "before" and
    "batch_in_calls_only"."""
    from marketd.scheduler import JOBS_PER_SKU_CAP, RunSummary, Scheduler
    from marketd.worker import BatchStats, Lane

    class BeforeScheduler(Scheduler):
        """The scheduling marketd had before its policy (marketd/policy.py, commit a4b803b),
        for a coalescing provider: a run claims up to ``max_batch_size`` jobs (not SKUs) of at
        most the rolling window's remaining capacity in SKUs; no pacing (a run may spend the
        whole window), no reserve for manual jobs, and no re-wake when the rolling window cuts
        a run short (the next chance is the next interval run). Manual jobs still get their
        wake (``_rewake_if_manual``) as they did then.
        """

        BATCH_IN_CALLS = False

        async def _provider_batch(self, lane: Lane, summary: RunSummary) -> None:
            now = self.clock.now()
            if (not lane.coalesces or self.stopping or lane.stopping or lane.paused(now)
                    or lane.lock.locked()):
                await super()._provider_batch(lane, summary)
                return
            async with lane.lock:
                capacity = lane.budget.capacity(now, self.cfg.interval_seconds)
                if capacity <= 0:
                    summary.providers[lane.name] = {"skipped": "budget"}
                    self._wake_later(lane.name, lane.budget.next_free(now))
                    return
                if self.BATCH_IN_CALLS:  # up to max_batch_size SKUs, every size queued
                    jobs = await self.store.claim(
                        lane.name, self.cfg.max_batch_size * JOBS_PER_SKU_CAP,
                        max_skus=min(capacity, self.cfg.max_batch_size))
                else:  # up to max_batch_size jobs
                    jobs = await self.store.claim(lane.name, self.cfg.max_batch_size,
                                                  max_skus=capacity)
                if not jobs:
                    summary.providers[lane.name] = {"batch_size": 0}
                    return
                stats: BatchStats = await self.worker.run_batch(lane, jobs)
                summary.providers[lane.name] = stats.as_dict()
                self.store.record_metrics_soon(
                    run_id=summary.run_id, provider=lane.name, batch_size=stats.batch_size,
                    succeeded=stats.succeeded, failed=stats.failed, deferred=stats.deferred,
                    calls=stats.calls, rate_limited=stats.rate_limited,
                    duration_ms=stats.duration_ms)
                if stats.stopped_by in ("budget", None) and not self.stopping:
                    await self._rewake_if_manual(lane)

    class CallsOnlyScheduler(BeforeScheduler):
        """The policy's first rule alone: a run's batch counted in calls (SKUs, up to
        max_batch_size), every size queued for them; no pacing, reserve or re-wake."""

        BATCH_IN_CALLS = True

    return {"marketd": Scheduler, "before": BeforeScheduler,
            "batch_in_calls_only": CallsOnlyScheduler}
