"""``GET /metrics`` in the Prometheus text format.

Each daemon has its own :class:`CollectorRegistry` (never the process-wide one, so tests and
several daemons in one process do not collide) holding one collector. A scrape reads the store and
the lanes asynchronously into metric families, then renders them under a lock, so two scrapes
never mix their snapshots. Counters that live in the lanes count since the daemon started.

It also keeps the status page's queue-depth time series: after a scheduler run, one row per
provider in market_queue_samples (at most one a minute), pruned after 48 hours. It sees the
store, the clock, the lanes and the alerts it is given (by :mod:`marketd.app`), not the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from marketd.clock import Clock, iso, parse_iso
from marketd.models import JOB_STATUSES
from marketd.views import budget_view

if TYPE_CHECKING:
    from marketd.alerts import FailureAlerts
    from marketd.scheduler import RunSummary
    from marketd.store import Store
    from marketd.worker import Lane

__all__ = ["CONTENT_TYPE_LATEST", "PageMetrics"]

SAMPLE_EVERY_S = 60.0
SAMPLES_KEEP_S = 48 * 3600


class _Snapshot:
    """A collector that yields the families the last scrape built."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.families)


class PageMetrics:
    """The /metrics collector over one daemon's store, clock, lanes and alerts."""

    def __init__(self, store: Store, clock: Clock, lanes: Mapping[str, Lane],
                 alerts: FailureAlerts | None = None) -> None:
        self.store, self.clock, self.lanes = store, clock, lanes
        self.alerts = alerts
        self.registry = CollectorRegistry(auto_describe=False)
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        # process_* (CPU, memory, open files, start time), python_info, marketd_build_info
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Info("marketd_build", "The marketd that serves these metrics.",
             registry=self.registry).info(build_info(store))
        self._lock = asyncio.Lock()
        self.last_sample_at: float | None = None

    async def render(self) -> bytes:
        async with self._lock:
            self._snapshot.families = await families(self.store, self.clock.now(), self.lanes,
                                                     self.alerts)
            return bytes(generate_latest(self.registry))

    async def sample(self, summary: RunSummary | None = None) -> None:
        """One queue-depth row per provider (an after-run hook)."""
        now = self.clock.now()
        if self.last_sample_at is not None and now - self.last_sample_at < SAMPLE_EVERY_S:
            return
        self.last_sample_at = now
        counts = await self.store.job_counts()
        rows = [{"sampled_at": iso(now), "provider": p,
                 **{s: counts.get(p, {}).get(s, 0) for s in JOB_STATUSES}}
                for p in sorted(set(self.lanes) | set(counts))]
        # shielded like the scheduler's own writes: a shutdown never cuts a transaction short
        await asyncio.shield(self.store.record_queue_samples(rows, now - SAMPLES_KEEP_S))


def build_info(store: Store) -> dict[str, str]:
    import platform

    import aiohttp

    from marketd import __version__

    return {"version": __version__, "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "database": "postgresql" if type(store).__name__.startswith("Postgres") else "sqlite"}


async def families(store: Store, now: float, lanes: Mapping[str, Lane],
                   alerts: FailureAlerts | None) -> list[Metric]:
    out: list[Metric] = []

    jobs = GaugeMetricFamily("marketd_jobs", "Jobs in the queue by provider and status.",
                             labels=["provider", "status"])
    counts = await store.job_counts()
    for provider in sorted(set(lanes) | set(counts)):
        for status in JOB_STATUSES:
            jobs.add_metric([provider, status], counts.get(provider, {}).get(status, 0))
    out.append(jobs)

    calls = CounterMetricFamily("marketd_provider_calls",
                                "Calls sent to the provider since the daemon started.",
                                labels=["provider"])
    limited = CounterMetricFamily("marketd_provider_rate_limited",
                                  "HTTP 429 answers (pauses) since the daemon started.",
                                  labels=["provider"])
    outcomes = CounterMetricFamily("marketd_provider_jobs",
                                   "Job outcomes since the daemon started.",
                                   labels=["provider", "outcome"])
    paused = GaugeMetricFamily("marketd_provider_paused",
                               "1 while the provider is paused (429 or refused credentials).",
                               labels=["provider"])
    for name, lane in sorted(lanes.items()):
        c = lane.counters
        calls.add_metric([name], c.calls)
        limited.add_metric([name], c.rate_limited)
        for outcome in ("succeeded", "failed", "retried", "deferred"):
            outcomes.add_metric([name, outcome], getattr(c, outcome))
        paused.add_metric([name], 1 if lane.paused(now) else 0)
    out += [calls, limited, outcomes, paused]

    remaining = GaugeMetricFamily("marketd_budget_remaining",
                                  "Calls left in each limit's current window.",
                                  labels=["provider", "limit"])
    used = GaugeMetricFamily("marketd_budget_used_this_hour",
                             "Calls counted in this clock hour's budget row.",
                             labels=["provider"])
    hourly = GaugeMetricFamily("marketd_budget_rate_limit",
                               "The most calls a clock hour may hold.", labels=["provider"])
    for name, b in sorted(budget_view(lanes, await store.budgets(), now).items()):
        used.add_metric([name], b["used"])
        hourly.add_metric([name], b["rate_limit"])
        for lim in b["limits"]:
            remaining.add_metric([name, lim["limit"]], lim["remaining"])
    out += [remaining, used, hourly]

    buckets, runs, total_s = await store.run_durations()
    out.append(HistogramMetricFamily(
        "marketd_scheduler_run_duration_seconds", "Scheduler run durations (market_job_runs).",
        buckets=[*((str(le), float(n)) for le, n in buckets), ("+Inf", float(runs))],
        sum_value=total_s))

    count = GaugeMetricFamily("marketd_prices", "Latest prices held.", labels=["provider"])
    age = GaugeMetricFamily("marketd_price_age_seconds",
                            "Age of the oldest and the newest latest price.",
                            labels=["provider", "which"])
    for r in await store.price_ages():
        count.add_metric([r["provider"]], r["n"])
        for which in ("oldest", "newest"):
            at = parse_iso(r[which])
            if at is not None:
                age.add_metric([r["provider"], which], max(0.0, now - at))
    out += [count, age]

    if alerts is not None:
        rate = GaugeMetricFamily("marketd_provider_failure_rate",
                                 "Failed share of attempts in the alert window.",
                                 labels=["provider"])
        firing = GaugeMetricFamily("marketd_alert_firing",
                                   "1 while a failure-rate incident is open.",
                                   labels=["provider"])
        for name in sorted(lanes):
            failed, attempts = alerts.rate(name, now)
            rate.add_metric([name], failed / attempts if attempts else 0.0)
            firing.add_metric([name], 1 if name in alerts.active else 0)
        out += [rate, firing]
    return out
