"""Freshness under budget: a simulated day on an injected clock, with the real scheduler, queue
and rate-limit code and the simulator's prices.

What runs: the real ``Daemon`` (Store on a SQLite file, ProviderBudget, lanes, Worker and
Scheduler) on a ``FakeClock``. The scheduler's wakes are timers on that clock, as in the daemon
(where the clock arms asyncio loop timers); the day's events are timers on it too, and the
simulation fires them one at a time in time order, each carried out before the next
(``simulation.py``). Time only moves that way (and by the budget's own ``clock.sleep``);
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
  and no re-wake when the rolling window cuts a run short (a subclass, ``policies.py``);
- "batch_in_calls_only": the policy's first rule alone (the batch counted in calls, SKUs), no
  pacing, reserve or re-wake.

``--sweep`` also runs marketd's Scheduler alone over a grid of limits and seeds (by default
limit/2, limit, 2x, 4x per hour x seed, seed+1, seed+2; --sweep-limits/--sweep-seeds), and
prints and writes (under "sweep") each configuration's figures.

    python -m bench.freshness [--quick] [--hours 24] [--limit 100] [--skus 150] [--items 500]
        [--late 20] [--page-loads 6] [--manual 1] [--stale-min 60] [--seed 7] [--warmup H]
        [--sweep [--sweep-limits 50,100,200] [--sweep-seeds 7,8,9]] [--out DIR]

The modules: ``params.py`` (the options' defaults, Params), ``optimum.py`` (the optimum's
arithmetic), ``world.py`` (the market and the in-process provider), ``policies.py`` (the rows'
schedulers), ``simulation.py`` (one simulated day), ``sweep.py``, ``report.py`` (the table, the
goals, the plot) and ``cli.py`` (the options; ``__main__.py`` runs it).
"""

from bench.freshness.cli import build_parser, main, params_from_args, parse_args
from bench.freshness.optimum import (
    GOAL_P95_OVER_OPTIMUM,
    optimum,
    pattern_quantile,
    pattern_with_runs_quantile,
)
from bench.freshness.params import (
    DAY_H,
    LIMIT_PER_HOUR,
    MANUAL_PER_HOUR,
    N_ITEMS,
    N_LATE,
    N_SKUS,
    PAGE_LOADS_PER_HOUR,
    QUICK_DAY_H,
    QUICK_WARMUP_H,
    SEED,
    STALE_AFTER_S,
    WARMUP_MIN_H,
    Params,
    check_params,
)
from bench.freshness.policies import JUDGED, POLICIES, scheduler_classes
from bench.freshness.simulation import SAMPLE_EVERY_S, simulate
from bench.freshness.sweep import print_sweep, sweep, sweep_grid, sweep_row
from bench.freshness.world import Item, World, build_world, max_items_per_sku, provider_factory

__all__ = [
    "DAY_H", "GOAL_P95_OVER_OPTIMUM", "JUDGED", "LIMIT_PER_HOUR", "MANUAL_PER_HOUR", "N_ITEMS",
    "N_LATE", "N_SKUS", "PAGE_LOADS_PER_HOUR", "POLICIES", "QUICK_DAY_H", "QUICK_WARMUP_H",
    "SAMPLE_EVERY_S", "SEED", "STALE_AFTER_S", "WARMUP_MIN_H", "Item", "Params", "World",
    "build_parser", "build_world", "check_params", "main", "max_items_per_sku", "optimum",
    "params_from_args", "parse_args", "pattern_quantile", "pattern_with_runs_quantile",
    "print_sweep", "provider_factory", "scheduler_classes", "simulate", "sweep", "sweep_grid",
    "sweep_row",
]
