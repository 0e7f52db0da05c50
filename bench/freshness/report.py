"""The bench's report: every policy's row against the optimum, the goals, the plot."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench._common import Report, quiet_logging
from bench.freshness.optimum import GOAL_P95_OVER_OPTIMUM, optimum
from bench.freshness.params import Params
from bench.freshness.policies import JUDGED, POLICIES
from bench.freshness.simulation import simulate
from bench.freshness.sweep import _num, print_sweep, sweep, sweep_grid


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
