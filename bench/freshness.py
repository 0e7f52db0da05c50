"""Freshness under budget: a simulated day on an injected clock, with the real scheduler, queue
and rate-limit code and the simulator's prices.

What runs: the real ``Daemon`` (Store on a SQLite file, ProviderBudget, lanes, Worker) and a
``Scheduler`` whose only change is ``_wake_later``: the real one arms an asyncio loop timer,
which does not follow a FakeClock, so here the same wake (same time, earliest wins) goes into
the simulation's event queue and fires ``run_once("manual", [provider])`` at that simulated
instant. Time only moves by ``FakeClock.advance`` (and the budget's own ``clock.sleep``);
nothing waits.

The provider: an in-process client whose answers come from the simulator's catalog and price
functions (``marketd.simulator.catalog.catalog`` / ``quote``), not the StockX client over HTTP
against the simulator app. Why: the simulator's catalog has 40 products and the portfolio needs
150 SKUs (SKUs past the 39 with a market are aliases of them, priced by the same functions);
and an HTTP round trip per call would add real waiting to a run that should take seconds. It
behaves as StockX's client does where the budget is concerned: ``budget.spend()`` before every
request, three requests for a SKU whose catalog entry is not cached (search, variants, market
data; the catalog is cached before the day, as after the first day) and one product-level
request that prices every size of the SKU otherwise. Each request arrives at the simulator's
own limit meter (``marketd.simulator.limits.ProviderMeter``, counted at arrival), which answers
429 when the limit is broken.

The day: 500 items over 150 SKUs (50 SKUs with 4 sizes, 100 with 3), StockX limited to
100/hour, scheduler defaults (a run every 15 min, max_batch_size 50, fresh_for_seconds 3600).
The seed's enqueue pattern: hot (150) when an item is added (480 items at the start of a
warm-up, 20 more during the day), background (100) on every page load for the items whose
price is older than 60 minutes (page loads at random, 6 an hour), and manual (200) refreshes
of random items (1 an hour). The figures cover the day after the warm-up.

Optimum: one product-level call per SKU per refresh with the budget fully used refreshes
every SKU every 150/100 h = 90 min, so price ages spread evenly over 0-90 min: p50 45 min,
p95 85.5 min. Goal: p95 within 1.2x of that, and no 429.

"proposed" (reported beside, not judged) is the same day with the scheduling change described
in bench/README.md, made here by subclassing Scheduler in this file (marketd is not changed);
"batch_in_calls_only" is its first part alone.

    python -m bench.freshness [--quick] [--hours 24]
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import math
import random
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import Report, make_config, parser, pct, quiet_logging

LIMIT_PER_HOUR = 100
N_SKUS, N_ITEMS, N_LATE = 150, 500, 20
PAGE_LOADS_PER_HOUR = 6.0
MANUAL_PER_HOUR = 1.0
STALE_AFTER_S = 3600.0
SAMPLE_EVERY_S = 60.0
SEED = 7


@dataclass
class Item:
    sku: str
    size: str
    added_at: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.sku, self.size)


@dataclass
class World:
    """The simulated market and its provider-side meter."""

    clock: Any
    meter: Any
    skus: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)  # sku -> base, sizes
    calls: list[float] = field(default_factory=list)
    rejected: int = 0
    seed: int = SEED

    def prices(self, sku: str, now: float) -> dict[str, Any]:
        from marketd.models import Price
        from marketd.simulator.catalog import convert, quote

        base, variants = self.skus[sku]

        def minor(usd: float | None) -> int | None:
            return None if usd is None else round(convert(usd, "GBP") * 100)

        out = {}
        for size, v in variants.items():
            q = quote(self.seed, base, v, now)
            out[size] = Price("stockx", sku, size, "GBP", minor(q.lowest_ask),
                              minor(q.highest_bid), minor(q.last_sale), now)
        return out


def build_world(clock: Any, rng: random.Random) -> tuple[World, list[Item]]:
    from marketd.ratelimit import parse_limit
    from marketd.simulator.catalog import catalog
    from marketd.simulator.limits import ProviderMeter
    from marketd.simulator.sizes import num

    world = World(clock, ProviderMeter([parse_limit(f"{LIMIT_PER_HOUR}/hour")], None, None))
    products = [p for p in catalog().products if p.has_market]
    items: list[Item] = []
    for k in range(N_SKUS):
        base = products[k % len(products)]
        sku = base.sku if k < len(products) else f"SIM{k:03d}-{base.sku}"
        variants: dict[str, Any] = {}
        for v in base.variants:
            variants.setdefault(num(v.size.uk), v)  # one variant per UK size
        world.skus[sku] = (base, variants)
        sizes = list(variants)[1:-1]  # the ends have no asks
        n = 4 if k < N_ITEMS - 3 * N_SKUS else 3
        for size in rng.sample(sizes, n):
            items.append(Item(sku, size, 0.0))
    return world, items


def provider_factory(world: World) -> Any:
    from marketd.errors import RateLimited, SizeError
    from marketd.models import Job
    from marketd.providers.base import FetchResult, Provider, ProviderContext

    class SimCatalogProvider(Provider):
        name = "stockx"

        async def _request(self) -> None:
            await self.ctx.budget.spend()
            now = self.ctx.clock.now()
            world.calls.append(now)
            if world.meter.arrive(now) is not None:
                world.rejected += 1
                world.meter.answered(429)
                raise RateLimited("stockx")
            world.meter.answered(200)

        async def fetch_group(self, sku: str, jobs: Sequence[Job]) -> FetchResult:
            if await self.ctx.store.get_catalog("stockx", sku) is None:
                await self._request()  # search
                await self._request()  # variants
                await self.ctx.store.put_catalog("stockx", sku, product_id=sku)
            await self._request()  # product-level market data: every size at once
            prices = world.prices(sku, self.ctx.clock.now())
            wanted = {j.size_key for j in jobs}
            outcomes: dict[str, Any] = {
                j.id: prices.get(j.size_key or "") or SizeError("stockx", "no such size")
                for j in jobs}
            return FetchResult(outcomes, [p for s, p in prices.items() if s not in wanted])

    def make(ctx: ProviderContext) -> Provider:
        return SimCatalogProvider(ctx)

    return make


# ---- the scheduler, driven by simulated time ---------------------------------------------------


class Events:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = 0

    def push(self, at: float, kind: str, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, payload))

    def pop(self) -> tuple[float, int, str, Any] | None:
        return heapq.heappop(self._heap) if self._heap else None


def scheduler_classes() -> dict[str, Any]:
    from marketd.models import Priority
    from marketd.scheduler import RunSummary, Scheduler
    from marketd.worker import BatchStats, Lane

    class SimScheduler(Scheduler):
        """The real Scheduler; its wake timers go to the simulation's event queue."""

        events: Events
        wakes: dict[str, float]

        def _wake_later(self, provider: str, at: float) -> None:
            if self.stopping:
                return
            at = max(at, self.clock.now())
            current = self.wakes.get(provider)
            if current is not None and current <= at:
                return  # the earliest wake wins, as with the loop timers
            self.wakes[provider] = at
            self.events.push(at, "wake", provider)

    class ProposedScheduler(SimScheduler):
        """The proposal (bench/README.md, "Scheduling that earns its freshness"), as a
        subclass: Scheduler._provider_batch with four changes for a coalescing provider:

        1. a run's batch is counted in calls (SKUs), not jobs: ``Store.claim(limit=
           max_batch_size * JOBS_PER_SKU_CAP, max_skus=calls)``, so 50 jobs no longer cap a
           run at ~15 calls;
        2. pacing: by the n-th interval of a clock hour, background and hot work may have
           spent ``n * ceil(hourly limit * interval / 3600)`` calls (25, 50, 75, 100 of 100
           every 15 min): calls spread over the hour instead of bursting at its start, and
           what one run leaves unused the next may spend;
        3. ``MANUAL_RESERVE`` of the hourly limit is kept for manual jobs: background and hot
           work stops when the rolling hour's remaining capacity reaches it; manual jobs
           (claimed first, as now) may use it all;
        4. a run cut short by the rolling hour (the calls of the same slot an hour ago are
           still in the window, by the margin) wakes again the moment they leave it, instead
           of losing the slot.
        """

        JOBS_PER_SKU_CAP = 20
        MANUAL_RESERVE = 0.05
        PACING = True
        REWAKE = True

        async def _provider_batch(self, lane: Lane, summary: RunSummary) -> None:
            now = self.clock.now()
            if (not lane.coalesces or self.stopping or lane.stopping or lane.paused(now)
                    or lane.lock.locked()):
                await super()._provider_batch(lane, summary)
                return
            async with lane.lock:
                hourly = lane.budget.rate_limit
                capacity = lane.budget.capacity(now, self.cfg.interval_seconds)
                if capacity <= 0:
                    summary.providers[lane.name] = {"skipped": "budget"}
                    self._wake_later(lane.name, lane.budget.next_free(now))
                    return
                share = math.ceil(hourly * self.cfg.interval_seconds / 3600)
                hour_start = now - now % 3600
                times = lane.budget.log.times
                used_this_hour = len(times) - bisect.bisect_left(times, hour_start)
                slot = int((now - hour_start) // self.cfg.interval_seconds) + 1
                paced = share * slot - used_this_hour if self.PACING else capacity
                allowance = min(paced, capacity - math.ceil(hourly * self.MANUAL_RESERVE))
                calls = min(allowance, self.cfg.max_batch_size)
                if self.REWAKE and paced > allowance:
                    # the rolling hour, not the pacing, cut this run short: run again the
                    # moment the oldest calls in the window leave it, not 15 minutes later
                    log = lane.budget.log
                    oldest = times[bisect.bisect_right(times, now - 3600 - log.margin_s)]
                    self._wake_later(lane.name, oldest + 3600 + log.margin_s + 0.001)
                limit = self.cfg.max_batch_size * self.JOBS_PER_SKU_CAP
                if calls > 0:
                    jobs = await self.store.claim(lane.name, limit, max_skus=calls)
                else:  # background paced out: manual jobs only, with the reserve
                    jobs = await self.store.claim(lane.name, limit, max_skus=min(
                        capacity, self.cfg.max_batch_size), min_priority=int(Priority.MANUAL))
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

    class CallsOnlyScheduler(ProposedScheduler):
        """Change 1 alone: the batch counted in calls; no pacing, reserve or re-wake."""

        MANUAL_RESERVE = 0.0
        PACING = False
        REWAKE = False

    return {"seed": SimScheduler, "proposed": ProposedScheduler,
            "batch_in_calls_only": CallsOnlyScheduler}


# ---- one simulated day -------------------------------------------------------------------------


async def simulate(tmp: Path, policy: str, warmup_h: float, day_h: float) -> dict[str, Any]:
    from marketd.app import Daemon
    from marketd.clock import FakeClock, parse_iso
    from marketd.models import JobSpec, Priority

    rng = random.Random(SEED)
    clock = FakeClock()
    t0 = clock.now()
    start, end = t0 + warmup_h * 3600, t0 + (warmup_h + day_h) * 3600
    world, items = build_world(clock, rng)
    late = rng.sample(range(len(items)), N_LATE)
    for i, item in enumerate(items):
        item.added_at = rng.uniform(start, end) if i in late else t0
    db = tmp / f"{policy}.db"
    config = make_config(db, providers={"stockx": {"limits": [f"{LIMIT_PER_HOUR}/hour"]}})
    daemon = await Daemon.create(config, clock=clock, clients={"stockx": provider_factory(world)})
    events = Events()
    sched_cls = scheduler_classes()[policy]
    sched = sched_cls(config, daemon.store, daemon.lanes, clock)
    sched.events, sched.wakes = events, {}
    daemon.scheduler = sched
    for sku in world.skus:  # the catalog is cached, as after the first day
        await daemon.store.put_catalog("stockx", sku, product_id=sku)

    # the day's events
    t = t0
    while t < end:
        events.push(t, "interval")
        t += config.scheduler.interval_seconds
    for kind, rate in (("page", PAGE_LOADS_PER_HOUR), ("manual", MANUAL_PER_HOUR)):
        t = t0
        while True:
            t += rng.expovariate(rate / 3600)
            if t >= end:
                break
            events.push(t, kind)
    events.push(t0, "add", [it for it in items if it.added_at == t0])
    for it in items:
        if it.added_at > t0:
            events.push(it.added_at, "add", [it])
    t = start
    while t <= end:
        events.push(t, "sample")
        t += SAMPLE_EVERY_S

    reader = sqlite3.connect(db)
    fetched: dict[tuple[str, str], float] = {}
    dirty = True
    present: list[Item] = []
    ages: list[float] = []
    series: list[dict[str, float]] = []
    manual_asks: list[tuple[float, Item]] = []
    runs = 0

    def refresh_prices() -> None:
        nonlocal dirty
        if dirty:
            for sku, size, at in reader.execute(
                    "SELECT sku, size, fetched_at FROM market_prices WHERE provider = 'stockx'"):
                fetched[(sku, size)] = parse_iso(at) or 0.0
            dirty = False

    def age(item: Item, now: float) -> float:
        return now - fetched.get(item.key, item.added_at)

    async def run(trigger: str, providers: list[str] | None = None) -> None:
        nonlocal dirty, runs
        await sched.run_once(trigger, providers)
        runs += 1
        dirty = True

    try:
        while (ev := events.pop()) is not None:
            at, _, kind, payload = ev
            if at > end:
                break
            if at > clock.now():
                clock.advance(at - clock.now())
            now = clock.now()
            if kind == "interval":
                await run("interval")
            elif kind == "wake":
                if sched.wakes.get(payload) == at:
                    del sched.wakes[payload]
                    await run("manual", [payload])
            elif kind == "add":
                present.extend(payload)
                await daemon.enqueue([JobSpec("stockx", it.sku, it.size,
                                              priority=int(Priority.HOT)) for it in payload])
            elif kind == "page":
                refresh_prices()
                stale = [it for it in present if age(it, now) > STALE_AFTER_S]
                if stale:
                    await daemon.enqueue([JobSpec("stockx", it.sku, it.size,
                                                  priority=int(Priority.BACKGROUND))
                                          for it in stale])
            elif kind == "manual":
                it = rng.choice(present)
                manual_asks.append((now, it))
                await daemon.enqueue([JobSpec("stockx", it.sku, it.size,
                                              priority=int(Priority.MANUAL))])
            elif kind == "sample":
                refresh_prices()
                now_ages = sorted(age(it, now) / 60 for it in present)
                ages.extend(now_ages)
                lo = bisect.bisect_right(world.calls, now - 3600)
                series.append({"t_h": (now - start) / 3600, "p50": pct(now_ages, 50),
                               "p95": pct(now_ages, 95), "max": now_ages[-1],
                               "calls_last_hour": len(world.calls) - lo})
        # measured-window figures
        day_calls = [c for c in world.calls if start <= c <= end]
        keys = {it.key for it in items}
        refreshed = sum(1 for sku, size, at in reader.execute(
            "SELECT sku, size, fetched_at FROM market_price_history WHERE provider = 'stockx'")
            if (sku, size) in keys and start <= (parse_iso(at) or 0) <= end)
        completed = sum(1 for (s,) in reader.execute(
            "SELECT completed_at FROM market_jobs WHERE status = 'completed'")
            if start <= (parse_iso(s) or 0) <= end)
        latencies = []
        for asked, it in manual_asks:
            if asked < start:
                continue
            row = reader.execute(
                "SELECT min(fetched_at) FROM market_price_history WHERE provider = 'stockx' "
                "AND sku = ? AND size = ? AND fetched_at >= ?",
                (it.sku, it.size, _iso(asked))).fetchone()
            done = parse_iso(row[0]) if row and row[0] else None
            latencies.append((done - asked) if done is not None else end - asked)
        stats = world.meter.stats(clock.now())
    finally:
        reader.close()
        await daemon.close()
    bins = [0] * math.ceil(day_h * 4)
    for c in day_calls:
        bins[min(len(bins) - 1, int((c - start) // 900))] += 1
    return {
        "policy": policy,
        "p50_age_min": pct(ages, 50), "p95_age_min": pct(ages, 95), "max_age_min": max(ages),
        "calls": len(day_calls), "budget_used": len(day_calls) / (LIMIT_PER_HOUR * day_h),
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


def plot(results: dict[str, dict[str, Any]], optimum: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True)
    colors = {"seed": "tab:red", "proposed": "tab:blue"}
    for policy, r in results.items():
        if policy not in colors:
            continue
        xs = [s["t_h"] for s in r["series"]]
        c = colors.get(policy, "black")
        ax1.plot(xs, [s["p95"] for s in r["series"]], color=c, lw=1.2,
                 label=f"{policy}: p95 (day {r['p95_age_min']:.0f} min)")
        ax1.plot(xs, [s["p50"] for s in r["series"]], color=c, lw=0.8, ls="--",
                 label=f"{policy}: p50 (day {r['p50_age_min']:.0f} min)")
        ax2.plot(xs, [s["calls_last_hour"] for s in r["series"]], color=c, lw=1.2,
                 label=f"{policy}: calls in the last hour ({100 * r['budget_used']:.0f}% of "
                       "the day's budget)")
    ax1.axhline(optimum["p95_min"], color="gray", ls=":", label="optimum p95")
    ax1.axhline(optimum["p50_min"], color="lightgray", ls=":", label="optimum p50")
    ax1.set_ylabel("price age (min)")
    ax1.set_title(f"{N_ITEMS} items over {N_SKUS} SKUs, StockX limited to {LIMIT_PER_HOUR}/hour")
    ax1.legend(fontsize=8, loc="upper right", ncol=2)
    ax2.axhline(LIMIT_PER_HOUR, color="gray", ls=":", label="limit (100/hour)")
    ax2.set_ylabel("calls in the rolling hour")
    ax2.set_xlabel("hours into the day")
    ax2.set_ylim(0, LIMIT_PER_HOUR * 1.25)
    ax2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def run(args: Any) -> Report:
    warmup_h, day_h = (1.5, 2.0) if args.quick else (3.0, args.hours)
    report = Report("freshness", args.quick, params={
        "items": N_ITEMS, "skus": N_SKUS, "limit": f"{LIMIT_PER_HOUR}/hour",
        "warmup_h": warmup_h, "day_h": day_h, "page_loads_per_hour": PAGE_LOADS_PER_HOUR,
        "manual_per_hour": MANUAL_PER_HOUR, "late_adds": N_LATE, "stale_after_min": 60,
        "scheduler": "defaults: interval 900 s, max_batch_size 50, fresh_for_seconds 3600",
        "provider": "in-process, simulator catalog and quote(); budget.spend() per request"})
    quiet_logging("warning")
    cycle_h = N_SKUS / LIMIT_PER_HOUR
    optimum = {"cycle_min": cycle_h * 60, "p50_min": cycle_h * 60 / 2,
               "p95_min": cycle_h * 60 * 0.95, "calls_per_refreshed_price": N_SKUS / N_ITEMS}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="marketd-bench-") as tmpdir:
        for policy in ("seed", "proposed", "batch_in_calls_only"):
            results[policy] = await simulate(Path(tmpdir), policy, warmup_h, day_h)
    for policy, r in results.items():
        report.add(policy=policy, p50_age_min=r["p50_age_min"], p95_age_min=r["p95_age_min"],
                   p95_over_optimum=r["p95_age_min"] / optimum["p95_min"],
                   budget_used=r["budget_used"], calls=r["calls"],
                   calls_per_refreshed_price=r["calls_per_refreshed_price"],
                   rate_limited_429=r["rate_limited_429"],
                   max_calls_any_hour=r["max_calls_in_any_hour"],
                   manual_p50_s=r["manual_latency_p50_s"],
                   manual_max_s=r["manual_latency_max_s"])
    report.add(policy="optimum", p50_age_min=optimum["p50_min"], p95_age_min=optimum["p95_min"],
               p95_over_optimum=1.0, budget_used=1.0, calls=LIMIT_PER_HOUR * day_h,
               calls_per_refreshed_price=optimum["calls_per_refreshed_price"],
               rate_limited_429=0)
    seed = results["seed"]
    report.goal("price age p95 / optimum p95", seed["p95_age_min"] / optimum["p95_min"], 1.2,
                higher_is_better=False)
    report.goal("429 answers", seed["rate_limited_429"], 0, higher_is_better=False, unit="")
    report.extra["optimum"] = optimum
    report.extra["results"] = {p: {k: v for k, v in r.items() if k != "series"}
                               for p, r in results.items()}
    report.extra["series"] = {p: r["series"] for p, r in results.items()}
    prop = results["proposed"]
    print(f"\nproposed policy (bench-only ProposedScheduler): p95 {prop['p95_age_min']:.0f} min = "
          f"{prop['p95_age_min'] / optimum['p95_min']:.2f}x optimum, budget used "
          f"{100 * prop['budget_used']:.0f}%, manual p50 {prop['manual_latency_p50_s'] or 0:.0f}"
          f" s, 429s {prop['rate_limited_429']}")
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "freshness.png"
    plot(results, optimum, png)
    report.extra["plot"] = png.name
    return report


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=24.0)
    args = p.parse_args(argv)
    report = asyncio.run(run(args))
    report.finish(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
