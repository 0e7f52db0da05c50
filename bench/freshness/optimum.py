"""The optimum: the price ages the limit allows, and those the enqueue pattern allows.

One product-level call per SKU per refresh with the budget fully used refreshes every SKU every
skus/limit hours, so ages spread evenly over one cycle (p50 = cycle/2, p95 = 0.95 cycle). A
scheduler that only fetches what page loads enqueue is also bound by the stale threshold and the
gaps between page loads (:func:`pattern_quantile`); marketd's idle refresh is not, so the goal is
judged against the limit's optimum.
"""

from __future__ import annotations

import math
from typing import Any

from bench.freshness.params import Params

GOAL_P95_OVER_OPTIMUM = 1.2  # the goal: marketd's p95 within this of the judged optimum's


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
