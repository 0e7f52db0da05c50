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
against the simulator app. Why: the simulator's catalog has 39 products with a market and the
portfolio needs more SKUs (SKUs past those are aliases of them, priced by the same functions);
and an HTTP round trip per call would add real waiting to a run that should take seconds. It
behaves as StockX's client does where the budget is concerned: ``budget.spend()`` before every
request, three requests for a SKU whose catalog entry is not cached (search, variants, market
data; the catalog is cached before the day, as after the first day) and one product-level
request that prices every size of the SKU otherwise. Each request arrives at the simulator's
own limit meter (``marketd.simulator.limits.ProviderMeter``, counted at arrival), which answers
429 when the limit is broken.

The day (every figure is an option; defaults in brackets): --items [500] items over --skus
[150] SKUs (the items spread evenly: 50 SKUs with 4 sizes, 100 with 3), StockX limited to
--limit [100] calls/hour, scheduler defaults (a run every 15 min, max_batch_size 50,
fresh_for_seconds 3600, pacing, 5% manual reserve). The enqueue pattern: hot (150) when an
item is added (all but --late [20] items at the start of a warm-up, the --late ones during the
day), background (100) on every page load for the items whose price is older than --stale-min
[60] minutes (page loads at random, --page-loads [6] an hour), and manual (200) refreshes of
random items (--manual [1] an hour); --seed [7] seeds all of it. The figures cover the --hours
[24] after the warm-up (--warmup, default max(3 h, two refresh cycles)).

Optimum (what the limit allows): one product-level call per SKU per refresh with the budget
fully used refreshes every SKU every skus/limit hours (150/100 h = 90 min), so price ages spread
evenly over one cycle: p50 = cycle/2 (45 min), p95 = 0.95 cycle (85.5 min).

But background jobs are only enqueued by page loads, for prices older than the stale threshold
(marketd also answers a background enqueue of a price younger than fresh_for_seconds as
"fresh", so the effective threshold is the larger of the two). Whatever the limit allows, a SKU
cannot be refreshed before it is stale and a page load has found it so: its cycle is at least
stale + Exp(mean gap between page loads). The ages that gives (fetched the instant the page
load enqueues it) are the "optimum given the enqueue pattern": p50 = (stale + gap) / 2, p95 =
stale + gap * ln(gap / (0.05 * (stale + gap))) (when gap/(stale+gap) > 5%; 35 and 70.5 min by
default). Where it is above the limit's (a cycle shorter than the stale threshold always is),
the enqueue pattern, not the limit, bounds the age of a scheduler that only fetches what is
enqueued: the script says so, and also gives the
ages when background work is fetched by the next interval run. That bound holds for a
scheduler that only fetches what is enqueued; marketd's idle refresh (scheduler.
idle_refresh_seconds) spends the calls no queued job needs on the oldest prices users asked
for, so the limit is what binds it, and the goal is judged against the limit's optimum.

Goal: marketd's p95 within 1.2x of the limit's optimum p95 (85.5 min with the defaults), and
no 429.

The rows (policies), all on the same day and seed:

- "marketd": marketd's real Scheduler (the judged row);
- "before": the scheduling marketd had before its policy (marketd/policy.py, commit a4b803b):
  a run claims up to max_batch_size jobs (not SKUs: ~15 calls for 50 jobs at 3.3 sizes per
  SKU) of at most the window's remaining capacity in SKUs, with no pacing, no manual reserve
  and no re-wake when the rolling window cuts a run short (a subclass in this file);
- "batch_in_calls_only": the policy's first rule alone (the batch counted in calls, SKUs), no
  pacing, reserve or re-wake.

``--sweep`` also runs marketd's Scheduler alone over a grid of limits and seeds (by default
limit/2, limit, 2x, 4x per hour x seed, seed+1, seed+2; --sweep-limits/--sweep-seeds), and
prints and writes (under "sweep") each configuration's figures.

    python -m bench.freshness [--quick] [--hours 24] [--limit 100] [--skus 150] [--items 500]
        [--late 20] [--page-loads 6] [--manual 1] [--stale-min 60] [--seed 7] [--warmup H]
        [--sweep [--sweep-limits 50,100,200] [--sweep-seeds 7,8,9]] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import functools
import heapq
import math
import random
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from bench._common import Report, make_config, parser, pct, quiet_logging, table

# the defaults of the options (Params)
LIMIT_PER_HOUR = 100
N_SKUS, N_ITEMS, N_LATE = 150, 500, 20
PAGE_LOADS_PER_HOUR = 6.0
MANUAL_PER_HOUR = 1.0
STALE_AFTER_S = 3600.0
SEED = 7
DAY_H, WARMUP_MIN_H = 24.0, 3.0
QUICK_WARMUP_H, QUICK_DAY_H = 1.5, 2.0

SAMPLE_EVERY_S = 60.0
GOAL_P95_OVER_OPTIMUM = 1.2
POLICIES = ("marketd", "before", "batch_in_calls_only")
JUDGED = "marketd"


@dataclass(frozen=True)
class Params:
    """One trial's parameters (the command-line options)."""

    limit_per_hour: int = LIMIT_PER_HOUR
    skus: int = N_SKUS
    items: int = N_ITEMS
    late: int = N_LATE  # items added during the measured day (the rest at the warm-up's start)
    page_loads_per_hour: float = PAGE_LOADS_PER_HOUR
    manual_per_hour: float = MANUAL_PER_HOUR
    stale_after_s: float = STALE_AFTER_S
    seed: int = SEED
    day_h: float = DAY_H
    warmup_h: float | None = None  # None: max(3 h, two refresh cycles)

    @property
    def cycle_h(self) -> float:
        """Every SKU once with the whole budget: skus / limit hours."""
        return self.skus / self.limit_per_hour

    @property
    def warmup(self) -> float:
        """The warm-up in hours (at the defaults, 3 h)."""
        if self.warmup_h is not None:
            return self.warmup_h
        return max(WARMUP_MIN_H, 2 * self.cycle_h)

    def as_dict(self) -> dict[str, Any]:
        return {"limit": f"{self.limit_per_hour}/hour", "skus": self.skus, "items": self.items,
                "late_adds": self.late, "page_loads_per_hour": self.page_loads_per_hour,
                "manual_per_hour": self.manual_per_hour,
                "stale_after_min": self.stale_after_s / 60, "seed": self.seed,
                "warmup_h": self.warmup, "day_h": self.day_h}


@functools.cache
def max_items_per_sku() -> int:
    """The most items a SKU can hold: the usable sizes (the ends have no asks) of the
    simulator's smallest product with a market."""
    from marketd.simulator.catalog import catalog

    return min(len(_sizes(p)) for p in catalog().products if p.has_market)


def _variants(product: Any) -> dict[str, Any]:
    from marketd.simulator.sizes import num

    variants: dict[str, Any] = {}
    for v in product.variants:
        variants.setdefault(num(v.size.uk), v)  # one variant per UK size
    return variants


def _sizes(product: Any) -> list[str]:
    return list(_variants(product))[1:-1]  # the ends have no asks


def check_params(p: Params) -> list[str]:
    """What is wrong with ``p`` (empty when nothing)."""
    errors = []
    if p.limit_per_hour < 1:
        errors.append("--limit must be at least 1 (calls per hour)")
    if p.skus < 1:
        errors.append("--skus must be at least 1")
    if not p.skus <= p.items <= p.skus * max_items_per_sku():
        most = max_items_per_sku()
        errors.append(f"--items must be at least --skus ({p.skus}) and at most {most} per SKU "
                      f"({p.skus * most}: the simulator's smallest product has {most} sizes)")
    if not 0 <= p.late < p.items:
        errors.append("--late must be at least 0 and below --items")
    if p.page_loads_per_hour <= 0:
        errors.append("--page-loads must be above 0 (they are what enqueues background work)")
    if p.manual_per_hour < 0:
        errors.append("--manual must be at least 0")
    if p.stale_after_s < 0:
        errors.append("--stale-min must be at least 0")
    if p.day_h <= 0 or (p.warmup_h is not None and p.warmup_h < 0):
        errors.append("--hours must be above 0 and --warmup at least 0")
    return errors


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("an empty list")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = parser(" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--hours", type=float, default=None,
                   help=f"measured hours after the warm-up (default {DAY_H:g}; {QUICK_DAY_H:g} "
                        "with --quick)")
    p.add_argument("--warmup", type=float, default=None,
                   help=f"warm-up hours (default max({WARMUP_MIN_H:g}, two refresh cycles); "
                        f"{QUICK_WARMUP_H:g} with --quick)")
    p.add_argument("--limit", type=int, default=LIMIT_PER_HOUR,
                   help=f"StockX's limit, calls per hour (default {LIMIT_PER_HOUR})")
    p.add_argument("--skus", type=int, default=N_SKUS, help=f"SKUs (default {N_SKUS})")
    p.add_argument("--items", type=int, default=N_ITEMS,
                   help=f"portfolio items (SKU and size), spread evenly over the SKUs "
                        f"(default {N_ITEMS})")
    p.add_argument("--late", type=int, default=N_LATE,
                   help=f"items added during the measured day (default {N_LATE})")
    p.add_argument("--page-loads", type=float, default=PAGE_LOADS_PER_HOUR,
                   help=f"page loads per hour, each enqueuing the stale prices as background "
                        f"jobs (default {PAGE_LOADS_PER_HOUR:g})")
    p.add_argument("--manual", type=float, default=MANUAL_PER_HOUR,
                   help=f"manual refreshes per hour (default {MANUAL_PER_HOUR:g})")
    p.add_argument("--stale-min", type=float, default=STALE_AFTER_S / 60,
                   help=f"a page load enqueues prices older than this, minutes "
                        f"(default {STALE_AFTER_S / 60:g})")
    p.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    p.add_argument("--sweep", action="store_true",
                   help="also run marketd's Scheduler over a grid of limits x seeds")
    p.add_argument("--sweep-limits", type=_int_list, default=None, metavar="N,N,...",
                   help="the sweep's limits per hour (default limit/2, limit, 2x, 4x; "
                        "limit and 2x with --quick)")
    p.add_argument("--sweep-seeds", type=_int_list, default=None, metavar="N,N,...",
                   help="the sweep's seeds (default seed, seed+1, seed+2; seed with --quick)")
    return p


def params_from_args(args: argparse.Namespace) -> Params:
    day_h = args.hours if args.hours is not None else QUICK_DAY_H if args.quick else DAY_H
    warmup_h = args.warmup if args.warmup is not None else QUICK_WARMUP_H if args.quick else None
    return Params(limit_per_hour=args.limit, skus=args.skus, items=args.items, late=args.late,
                  page_loads_per_hour=args.page_loads, manual_per_hour=args.manual,
                  stale_after_s=args.stale_min * 60, seed=args.seed, day_h=day_h,
                  warmup_h=warmup_h)


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Params]:
    """The options, and the trial's Params from them (exits with a usage error if invalid)."""
    p = build_parser()
    args = p.parse_args(argv)
    params = params_from_args(args)
    errors = check_params(params)
    for limit in args.sweep_limits or ():
        if limit < 1:
            errors.append("--sweep-limits must be at least 1 each")
    if errors:
        p.error("; ".join(errors))
    return args, params


# ---- the optimum -------------------------------------------------------------------------------


def pattern_quantile(q: float, stale_s: float, gap_s: float) -> float:
    """The q-quantile (0-1) of price age, in seconds, when every SKU is fetched the instant the
    first page load after it went stale enqueues it: a renewal cycle of stale + Exp(gap), whose
    age is above ``a`` with probability (stale + gap - a) / (stale + gap) up to ``stale`` and
    gap / (stale + gap) * exp(-(a - stale) / gap) beyond."""
    mean = stale_s + gap_s
    tail = gap_s / mean  # the share of the time a price spends stale
    if 1 - q >= tail:
        return q * mean
    return stale_s + gap_s * math.log(tail / (1 - q))


def pattern_with_runs_quantile(q: float, stale_s: float, gap_s: float,
                               interval_s: float) -> float:
    """As :func:`pattern_quantile`, but background work is fetched by the next interval run
    (as marketd's scheduler does), so fetches fall on the runs' grid: a cycle of interval *
    ceil((stale + Exp(gap)) / interval). Numerically: the age's survival function is
    E[(cycle - a)+] / E[cycle], solved for 1 - q by bisection."""
    if interval_s <= 0:
        return pattern_quantile(q, stale_s, gap_s)

    def cdf(x: float) -> float:  # P(Exp(gap) <= x)
        return 0.0 if x <= 0 else 1.0 - math.exp(-x / gap_s)

    cycles: list[tuple[float, float]] = []  # (cycle seconds, probability)
    k = max(1, math.floor(stale_s / interval_s))
    while True:
        prob = cdf(k * interval_s - stale_s) - cdf((k - 1) * interval_s - stale_s)
        if prob > 0:
            cycles.append((k * interval_s, prob))
        if cdf(k * interval_s - stale_s) > 1 - 1e-12:
            break
        k += 1
    mean = sum(c * w for c, w in cycles)

    def survival(a: float) -> float:
        return sum(w * max(0.0, c - a) for c, w in cycles) / mean

    lo, hi = 0.0, cycles[-1][0]
    for _ in range(100):
        mid = (lo + hi) / 2
        if survival(mid) > 1 - q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def optimum(p: Params, *, interval_s: float | None = None,
            fresh_for_s: float | None = None) -> dict[str, Any]:
    """The optimum ages (minutes) for ``p``: what the limit allows (as always: ``cycle_min``,
    ``p50_min``, ``p95_min``), what the enqueue pattern allows, and the one judged (the
    larger p95). ``interval_s`` and ``fresh_for_s`` default to marketd's scheduler defaults."""
    from marketd.config import SchedulerConfig

    defaults = SchedulerConfig()
    interval_s = defaults.interval_seconds if interval_s is None else interval_s
    fresh_for_s = defaults.fresh_for_seconds if fresh_for_s is None else fresh_for_s
    cycle_min = p.cycle_h * 60
    stale_s = max(p.stale_after_s, fresh_for_s)  # younger prices are answered "fresh"
    gap_s = 3600 / p.page_loads_per_hour
    pattern = {"p50_min": pattern_quantile(0.5, stale_s, gap_s) / 60,
               "p95_min": pattern_quantile(0.95, stale_s, gap_s) / 60,
               "mean_cycle_min": (stale_s + gap_s) / 60}
    with_runs = {"p50_min": pattern_with_runs_quantile(0.5, stale_s, gap_s, interval_s) / 60,
                 "p95_min": pattern_with_runs_quantile(0.95, stale_s, gap_s, interval_s) / 60,
                 "interval_min": interval_s / 60}
    out: dict[str, Any] = {
        "cycle_min": cycle_min, "p50_min": cycle_min / 2, "p95_min": cycle_min * 0.95,
        "calls_per_refreshed_price": p.skus / p.items,
        "stale_after_min": p.stale_after_s / 60, "effective_stale_min": stale_s / 60,
        "given_enqueue_pattern": pattern,
        "given_enqueue_pattern_and_runs": with_runs,
    }
    pattern_binds = pattern["p95_min"] > out["p95_min"]
    out["bound_by"] = "enqueue pattern" if pattern_binds else "limit"
    # marketd's idle refresh is not bound by the enqueue pattern: judged against the limit
    out["judged_p50_min"] = out["p50_min"]
    out["judged_p95_min"] = out["p95_min"]
    notes = []
    if p.stale_after_s < fresh_for_s:
        notes.append(
            f"page loads enqueue prices older than {p.stale_after_s / 60:g} min, but marketd "
            f"answers a background enqueue of a price younger than fresh_for_seconds "
            f"({fresh_for_s / 60:g} min) as fresh: the effective stale threshold is "
            f"{stale_s / 60:g} min.")
    if pattern_binds:
        why = (f"every {cycle_min:.0f} min, shorter than the {stale_s / 60:g}-min stale "
               "threshold" if cycle_min < stale_s / 60 else
               f"every {cycle_min:.0f} min, but a stale price waits {gap_s / 60:.0f} min on "
               "average for the page load that enqueues it")
        notes.append(
            f"for a scheduler that only fetches what is enqueued, the enqueue pattern, not the "
            f"limit, bounds the age: {p.limit_per_hour}/hour "
            f"would refresh every SKU {why}; background jobs are only enqueued by page loads "
            f"({p.page_loads_per_hour:g}/hour) for prices older than {stale_s / 60:g} min. "
            f"Optimum given the enqueue pattern (each SKU fetched the instant a page load "
            f"finds it stale): p50 {pattern['p50_min']:.1f}, p95 {pattern['p95_min']:.1f} min "
            f"(the limit alone: {out['p50_min']:.1f} / {out['p95_min']:.1f}); with background "
            f"work fetched at the next {interval_s / 60:g}-min run, as marketd's scheduler "
            f"does: p50 {with_runs['p50_min']:.1f}, p95 {with_runs['p95_min']:.1f} min. "
            f"marketd's idle refresh is not bound by that: the goal is judged against the "
            f"limit's {out['p95_min']:.1f} min.")
    out["note"] = " ".join(notes)
    return out


# ---- the world ---------------------------------------------------------------------------------


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


def build_world(clock: Any, rng: random.Random, p: Params) -> tuple[World, list[Item]]:
    from marketd.ratelimit import parse_limit
    from marketd.simulator.catalog import catalog
    from marketd.simulator.limits import ProviderMeter

    meter = ProviderMeter([parse_limit(f"{p.limit_per_hour}/hour")], None, UTC)  # no daily limit
    world = World(clock, meter, seed=p.seed)
    products = [prod for prod in catalog().products if prod.has_market]
    per_sku, extra = divmod(p.items, p.skus)  # the first `extra` SKUs hold one more item
    items: list[Item] = []
    for k in range(p.skus):
        base = products[k % len(products)]
        sku = base.sku if k < len(products) else f"SIM{k:03d}-{base.sku}"
        variants = _variants(base)
        world.skus[sku] = (base, variants)
        sizes = list(variants)[1:-1]  # the ends have no asks
        n = per_sku + 1 if k < extra else per_sku
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
    """The policies by row name: "marketd" (the real Scheduler), "before" and
    "batch_in_calls_only"."""
    from marketd.scheduler import JOBS_PER_SKU_CAP, RunSummary, Scheduler
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

    class BeforeScheduler(SimScheduler):
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

    return {"marketd": SimScheduler, "before": BeforeScheduler,
            "batch_in_calls_only": CallsOnlyScheduler}


# ---- one simulated day -------------------------------------------------------------------------


async def simulate(tmp: Path, policy: str, p: Params) -> dict[str, Any]:
    """One day of ``p`` under ``policy`` (a key of :func:`scheduler_classes`); the database
    goes in ``tmp``."""
    from marketd.app import Daemon
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
    for kind, rate in (("page", p.page_loads_per_hour), ("manual", p.manual_per_hour)):
        t = t0
        while rate > 0:
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
                stale = [it for it in present if age(it, now) > p.stale_after_s]
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


# ---- the sweep ---------------------------------------------------------------------------------


def sweep_grid(p: Params, limits: Sequence[int] | None = None,
               seeds: Sequence[int] | None = None, *, quick: bool = False) -> list[Params]:
    """``p`` at each limit x seed; by default limit/2, limit, 2x, 4x x seed, seed+1, seed+2
    (with ``quick``: limit and 2x x seed)."""
    if limits is None:
        lim = p.limit_per_hour
        limits = (lim, 2 * lim) if quick else (max(1, lim // 2), lim, 2 * lim, 4 * lim)
    if seeds is None:
        seeds = (p.seed,) if quick else (p.seed, p.seed + 1, p.seed + 2)
    return [dataclasses.replace(p, limit_per_hour=limit, seed=seed)
            for limit in dict.fromkeys(limits) for seed in dict.fromkeys(seeds)]


def sweep_row(p: Params, r: dict[str, Any]) -> dict[str, Any]:
    """One configuration's figures for the sweep's table and JSON."""
    opt = optimum(p)
    return {
        "limit_per_hour": p.limit_per_hour, "seed": p.seed, "bound_by": opt["bound_by"],
        "optimum_p95_min": opt["p95_min"], "judged_optimum_p95_min": opt["judged_p95_min"],
        "p50_age_min": r["p50_age_min"], "p95_age_min": r["p95_age_min"],
        "p95_over_optimum": r["p95_age_min"] / opt["p95_min"],
        "p95_over_judged_optimum": r["p95_age_min"] / opt["judged_p95_min"],
        "budget_used": r["budget_used"], "max_calls_in_any_hour": r["max_calls_in_any_hour"],
        "rate_limited_429": r["rate_limited_429"],
        "manual_latency_p50_s": r["manual_latency_p50_s"],
        "manual_latency_max_s": r["manual_latency_max_s"],
        "refreshed_prices": r["refreshed_prices"], "calls": r["calls"],
    }


async def sweep(grid: Sequence[Params], tmp: Path,
                done: dict[Params, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """marketd's Scheduler on every configuration of ``grid`` (``done``: results already
    simulated, by Params, reused: the simulation is seeded)."""
    rows = []
    for p in grid:
        r = (done or {}).get(p)
        if r is None:
            r = await simulate(tmp, JUDGED, p)
        rows.append(sweep_row(p, r))
    return rows


def print_sweep(rows: Sequence[dict[str, Any]]) -> None:
    print(f"\nsweep: marketd's Scheduler (goal p95 <= {GOAL_P95_OVER_OPTIMUM:g}x the judged "
          "optimum, the larger of the limit's and the enqueue pattern's)")
    print(table(
        ["limit/h", "seed", "bound by", "opt p95", "judged opt p95", "p50", "p95", "p95/opt",
         "p95/judged", "budget", "max/h", "429", "manual p50 s", "manual max s"],
        [[r["limit_per_hour"], r["seed"], r["bound_by"], r["optimum_p95_min"],
          r["judged_optimum_p95_min"], r["p50_age_min"], r["p95_age_min"],
          r["p95_over_optimum"], r["p95_over_judged_optimum"], f"{100 * r['budget_used']:.0f}%",
          r["max_calls_in_any_hour"], r["rate_limited_429"],
          _num(r["manual_latency_p50_s"]), _num(r["manual_latency_max_s"])] for r in rows]))
    for limit in dict.fromkeys(r["limit_per_hour"] for r in rows):
        mine = [r for r in rows if r["limit_per_hour"] == limit]
        ratios = [r["p95_over_judged_optimum"] for r in mine]
        held = sum(1 for x in ratios if x <= GOAL_P95_OVER_OPTIMUM)
        rejected = sum(r["rate_limited_429"] for r in mine)
        print(f"  {limit}/hour: p95/judged optimum {min(ratios):.2f}-{max(ratios):.2f}, goal "
              f"holds for {held} of {len(mine)} seeds, 429s {rejected}")


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


# ---- the report --------------------------------------------------------------------------------


def plot(results: dict[str, dict[str, Any]], opt: dict[str, Any], p: Params,
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True)
    colors = {"marketd": "tab:blue", "before": "tab:red"}
    for policy, r in results.items():
        if policy not in colors:
            continue
        xs = [s["t_h"] for s in r["series"]]
        c = colors[policy]
        ax1.plot(xs, [s["p95"] for s in r["series"]], color=c, lw=1.2,
                 label=f"{policy}: p95 (day {r['p95_age_min']:.0f} min)")
        ax1.plot(xs, [s["p50"] for s in r["series"]], color=c, lw=0.8, ls="--",
                 label=f"{policy}: p50 (day {r['p50_age_min']:.0f} min)")
        ax2.plot(xs, [s["calls_last_hour"] for s in r["series"]], color=c, lw=1.2,
                 label=f"{policy}: calls in the last hour ({100 * r['budget_used']:.0f}% of "
                       "the day's budget)")
    ax1.axhline(opt["p95_min"], color="gray", ls=":", label="optimum p95 (the limit)")
    ax1.axhline(opt["p50_min"], color="lightgray", ls=":", label="optimum p50 (the limit)")
    if opt["bound_by"] != "limit":
        ax1.axhline(opt["given_enqueue_pattern"]["p95_min"], color="tab:green", ls=":",
                    label="optimum p95 given the enqueue pattern")
    ax1.set_ylabel("price age (min)")
    ax1.set_title(f"{p.items} items over {p.skus} SKUs, StockX limited to "
                  f"{p.limit_per_hour}/hour (seed {p.seed})")
    ax1.legend(fontsize=8, loc="upper right", ncol=2)
    ax2.axhline(p.limit_per_hour, color="gray", ls=":", label=f"limit ({p.limit_per_hour}/hour)")
    ax2.set_ylabel("calls in the rolling hour")
    ax2.set_xlabel("hours into the day")
    ax2.set_ylim(0, p.limit_per_hour * 1.25)
    ax2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def run(args: argparse.Namespace, params: Params) -> Report:
    report = Report("freshness", args.quick, params={
        **params.as_dict(),
        "scheduler": "defaults: interval 900 s, max_batch_size 50, fresh_for_seconds 3600, "
                     "pacing, manual_reserve 0.05",
        "provider": "in-process, simulator catalog and quote(); budget.spend() per request",
        "policies": {"marketd": "marketd's Scheduler (judged)",
                     "before": "before marketd's policy: a run claims max_batch_size jobs "
                               "(not SKUs); no pacing, manual reserve or re-wake",
                     "batch_in_calls_only": "the policy's first rule alone (batch in calls)"}})
    quiet_logging("warning")
    opt = optimum(params)
    results: dict[str, dict[str, Any]] = {}
    sweep_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="marketd-bench-") as tmpdir:
        for policy in POLICIES:
            results[policy] = await simulate(Path(tmpdir), policy, params)
        if args.sweep:
            grid = sweep_grid(params, args.sweep_limits, args.sweep_seeds, quick=args.quick)
            sweep_rows = await sweep(grid, Path(tmpdir), {params: results[JUDGED]})
    pattern_binds = opt["bound_by"] != "limit"
    for policy, r in results.items():
        row = dict(policy=policy, p50_age_min=r["p50_age_min"], p95_age_min=r["p95_age_min"],
                   p95_over_optimum=r["p95_age_min"] / opt["p95_min"])
        if pattern_binds:
            row["p95_over_judged_optimum"] = r["p95_age_min"] / opt["judged_p95_min"]
        row.update(budget_used=r["budget_used"], calls=r["calls"],
                   calls_per_refreshed_price=r["calls_per_refreshed_price"],
                   rate_limited_429=r["rate_limited_429"],
                   max_calls_any_hour=r["max_calls_in_any_hour"],
                   manual_p50_s=r["manual_latency_p50_s"],
                   manual_max_s=r["manual_latency_max_s"])
        report.add(**row)
    report.add(policy="optimum", p50_age_min=opt["p50_min"], p95_age_min=opt["p95_min"],
               p95_over_optimum=1.0, budget_used=1.0, calls=params.limit_per_hour * params.day_h,
               calls_per_refreshed_price=opt["calls_per_refreshed_price"], rate_limited_429=0)
    if pattern_binds:
        pat = opt["given_enqueue_pattern"]
        report.add(policy="optimum_given_enqueue_pattern", p50_age_min=pat["p50_min"],
                   p95_age_min=pat["p95_min"],
                   p95_over_optimum=pat["p95_min"] / opt["p95_min"], p95_over_judged_optimum=1.0)
    judged = results[JUDGED]
    report.goal("price age p95 / optimum p95", judged["p95_age_min"] / opt["judged_p95_min"],
                GOAL_P95_OVER_OPTIMUM, higher_is_better=False,
                note=f"{JUDGED} row; optimum p95 {opt['judged_p95_min']:.1f} min, bound by the "
                     f"{opt['bound_by']}")
    report.goal("429 answers", judged["rate_limited_429"], 0, higher_is_better=False, unit="",
                note=f"{JUDGED} row")
    report.extra["optimum"] = opt
    report.extra["results"] = {p: {k: v for k, v in r.items() if k != "series"}
                               for p, r in results.items()}
    report.extra["series"] = {p: r["series"] for p, r in results.items()}
    if args.sweep:
        report.extra["sweep"] = {
            "policy": JUDGED, "limits": list(dict.fromkeys(r["limit_per_hour"]
                                                           for r in sweep_rows)),
            "seeds": list(dict.fromkeys(r["seed"] for r in sweep_rows)),
            "goal_p95_over_judged_optimum": GOAL_P95_OVER_OPTIMUM, "rows": sweep_rows}
    pat = opt["given_enqueue_pattern"]
    print(f"\noptimum (the limit): every SKU every {opt['cycle_min']:.0f} min, p50 "
          f"{opt['p50_min']:.1f}, p95 {opt['p95_min']:.1f} min; given the enqueue pattern "
          f"(page loads enqueue prices older than {opt['effective_stale_min']:g} min): p50 "
          f"{pat['p50_min']:.1f}, p95 {pat['p95_min']:.1f} min: the {opt['bound_by']} binds")
    if opt["note"]:
        print(f"NOTE: {opt['note']}")
    for policy in POLICIES:
        if policy == JUDGED:
            continue
        r = results[policy]
        print(f"{policy}: p95 {r['p95_age_min']:.0f} min = "
              f"{r['p95_age_min'] / opt['judged_p95_min']:.2f}x optimum (marketd "
              f"{judged['p95_age_min'] / opt['judged_p95_min']:.2f}x), budget used "
              f"{100 * r['budget_used']:.0f}%, manual p50 {_num(r['manual_latency_p50_s'])} s / "
              f"max {_num(r['manual_latency_max_s'])} s, 429s {r['rate_limited_429']}")
    if sweep_rows:
        print_sweep(sweep_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "freshness.png"
    plot(results, opt, params, png)
    report.extra["plot"] = png.name
    return report


def main(argv: list[str] | None = None) -> int:
    args, params = parse_args(argv)
    report = asyncio.run(run(args, params))
    report.finish(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
