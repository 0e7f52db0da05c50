"""``--sweep``: marketd's Scheduler alone over a grid of limits x seeds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._common import table
from bench.freshness.optimum import GOAL_P95_OVER_OPTIMUM, optimum
from bench.freshness.params import Params
from bench.freshness.policies import JUDGED
from bench.freshness.simulation import simulate


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
