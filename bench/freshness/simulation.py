"""One simulated day on a FakeClock, driving the real daemon.

The day's events (interval runs, items added, page loads, manual refreshes, samples) are timers
on the FakeClock, armed before the day starts; the scheduler's own wakes (a manual enqueue, a
pause's or the budget's end, the rolling window freeing a call) are timers on the same clock,
armed by marketd's ``Scheduler`` as in the daemon. :meth:`FakeClock.fire_next` fires them one
at a time in time order (ties in the order armed: the day's events before a wake at the same
instant), and each is carried out to its end before the next: an event by the loop here, a
wake's run by awaiting :meth:`Scheduler.idle`. Time moves only that way (and by the budget's
own ``clock.sleep``); nothing waits.
"""

from __future__ import annotations

import bisect
import functools
import math
import random
import sqlite3
from pathlib import Path
from typing import Any

from bench._common import make_config, pct
from bench.freshness.params import Params
from bench.freshness.policies import scheduler_classes
from bench.freshness.world import Item, build_world, provider_factory

SAMPLE_EVERY_S = 60.0


async def simulate(tmp: Path, policy: str, p: Params) -> dict[str, Any]:
    """One day of ``p`` under ``policy`` (a key of :func:`scheduler_classes`); the database
    goes in ``tmp``."""
    from marketd.app import create_daemon
    from marketd.clock import FakeClock, parse_iso
    from marketd.models import JobSpec, Priority

    warmup_h, day_h = p.warmup, p.day_h
    rng = random.Random(p.seed)
    clock = FakeClock()
    t0 = clock.now()
    start, end = t0 + warmup_h * 3600, t0 + (warmup_h + day_h) * 3600
    world, items = build_world(clock, rng, p)
    late = rng.sample(range(len(items)), p.late)
    for i, item in enumerate(items):
        item.added_at = rng.uniform(start, end) if i in late else t0
    db = tmp / f"{policy}-{p.limit_per_hour}-{p.seed}.db"
    config = make_config(db, providers={"stockx": {"limits": [f"{p.limit_per_hour}/hour"]}})
    daemon = await create_daemon(config, clock=clock, clients={"stockx": provider_factory(world)})
    sched_cls = scheduler_classes()[policy]
    sched = sched_cls(config, daemon.store, daemon.lanes, clock)
    daemon.scheduler = sched  # (a manual enqueue wakes this one)
    for sku in world.skus:  # the catalog is cached, as after the first day
        await daemon.store.put_catalog("stockx", sku, product_id=sku)

    # the day's events: timers whose callbacks hand the event to the loop below
    due: list[tuple[str, Any]] = []

    def arm(at: float, kind: str, payload: Any = None) -> None:
        clock.call_at(at, functools.partial(due.append, (kind, payload)))

    t = t0
    while t < end:
        arm(t, "interval")
        t += config.scheduler.interval_seconds
    for kind, rate in (("page", p.page_loads_per_hour), ("manual", p.manual_per_hour)):
        t = t0
        while rate > 0:
            t += rng.expovariate(rate / 3600)
            if t >= end:
                break
            arm(t, kind)
    arm(t0, "add", [it for it in items if it.added_at == t0])
    for it in items:
        if it.added_at > t0:
            arm(it.added_at, "add", [it])
    t = start
    while t <= end:
        arm(t, "sample")
        t += SAMPLE_EVERY_S

    reader = sqlite3.connect(db)
    fetched: dict[tuple[str, str], float] = {}
    dirty = True
    present: list[Item] = []
    ages: list[float] = []
    series: list[dict[str, float]] = []
    manual_asks: list[tuple[float, str | None]] = []  # (asked at, the job's id)

    def refresh_prices() -> None:
        nonlocal dirty
        if dirty:
            for sku, size, at in reader.execute(
                    "SELECT sku, size, fetched_at FROM market_prices WHERE provider = 'stockx'"):
                fetched[(sku, size)] = parse_iso(at) or 0.0
            dirty = False

    def age(item: Item, now: float) -> float:
        return now - fetched.get(item.key, item.added_at)

    runs_seen = 0
    try:
        while clock.fire_next(until=end):
            while due:
                kind, payload = due.pop(0)
                now = clock.now()
                if kind == "interval":
                    await sched.run_once("interval")
                    dirty = True
                elif kind == "add":
                    present.extend(payload)
                    await daemon.enqueue([JobSpec("stockx", it.sku, it.size,
                                                  priority=int(Priority.HOT)) for it in payload])
                elif kind == "page":
                    refresh_prices()
                    stale = [it for it in present if age(it, now) > p.stale_after_s]
                    if stale:
                        await daemon.enqueue([JobSpec("stockx", it.sku, it.size,
                                                      priority=int(Priority.BACKGROUND))
                                              for it in stale])
                elif kind == "manual":
                    it = rng.choice(present)
                    [asked] = await daemon.enqueue([JobSpec("stockx", it.sku, it.size,
                                                            priority=int(Priority.MANUAL))])
                    manual_asks.append((now, asked.id))
                elif kind == "sample":
                    refresh_prices()
                    now_ages = sorted(age(it, now) / 60 for it in present)
                    ages.extend(now_ages)
                    lo = bisect.bisect_right(world.calls, now - 3600)
                    series.append({"t_h": (now - start) / 3600, "p50": pct(now_ages, 50),
                                   "p95": pct(now_ages, 95), "max": now_ages[-1],
                                   "calls_last_hour": len(world.calls) - lo})
            await sched.idle()  # the run a wake started (the timer fired was the scheduler's)
            if sched.runs_started != runs_seen:
                runs_seen = sched.runs_started
                dirty = True
        # measured-window figures
        day_calls = [c for c in world.calls if start <= c <= end]
        keys = {it.key for it in items}
        # prices delivered: jobs of the portfolio's keys completed in the window (history keeps
        # only changes, so it no longer counts fetches)
        refreshed = sum(1 for sku, size, at in reader.execute(
            "SELECT sku, size, completed_at FROM market_jobs "
            "WHERE provider = 'stockx' AND status = 'completed'")
            if (sku, size) in keys and start <= (parse_iso(at) or 0) <= end)
        completed = sum(1 for (s,) in reader.execute(
            "SELECT completed_at FROM market_jobs WHERE status = 'completed'")
            if start <= (parse_iso(s) or 0) <= end)
        latencies = []
        for asked, job_id in manual_asks:
            if asked < start:
                continue
            row = reader.execute("SELECT completed_at FROM market_jobs WHERE id = ?",
                                 (job_id,)).fetchone()
            done = parse_iso(row[0]) if row and row[0] else None
            latencies.append((done - asked) if done is not None else end - asked)
        stats = world.meter.stats(clock.now())
        runs = sched.runs_started
    finally:
        reader.close()
        await daemon.close()
    bins = [0] * math.ceil(day_h * 4)
    for c in day_calls:
        bins[min(len(bins) - 1, int((c - start) // 900))] += 1
    return {
        "policy": policy,
        "p50_age_min": pct(ages, 50), "p95_age_min": pct(ages, 95), "max_age_min": max(ages),
        "calls": len(day_calls), "budget_used": len(day_calls) / (p.limit_per_hour * day_h),
        "refreshed_prices": refreshed, "completed_jobs": completed,
        "calls_per_refreshed_price": len(day_calls) / refreshed if refreshed else float("inf"),
        "calls_per_completed_job": len(day_calls) / completed if completed else float("inf"),
        "rate_limited_429": world.rejected,
        "max_calls_in_any_hour": stats["limits"][0]["max_seen"],
        "manual_refreshes": len(latencies),
        "manual_latency_p50_s": pct(latencies, 50) if latencies else None,
        "manual_latency_max_s": max(latencies) if latencies else None,
        "scheduler_runs": runs,
        "series": series, "calls_per_15min": bins,
    }


def _iso(ts: float) -> str:
    from marketd.clock import iso

    return iso(ts) or ""
