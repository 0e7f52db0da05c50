"""The command line: options to Params, then the report (``python -m bench.freshness``)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from bench._common import parser
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
from bench.freshness.report import run


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
    from bench import freshness

    p = parser(" ".join((freshness.__doc__ or "").split("\n\n")[0].split()))
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


def main(argv: list[str] | None = None) -> int:
    args, params = parse_args(argv)
    report = asyncio.run(run(args, params))
    report.finish(args.out)
    return 0
