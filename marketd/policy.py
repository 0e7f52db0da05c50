"""How many calls one scheduler run may spend for one provider (pure arithmetic of ``now``).

Three rules, measured in ``bench/freshness.py`` (README, "Freshness under budget"):

1. **The batch counts calls, not jobs**: a provider with a product-level price call spends one
   call per SKU, however many sizes are queued.
2. **Pacing**: by the n-th interval of a clock hour, background and hot work may have spent
   ``n * ceil(hourly_limit * interval / 3600)`` calls, so calls spread over the hour instead of
   bursting at its start, and what one run leaves unused the next may spend.
3. **A reserve for manual jobs**: background and hot work stops while the rolling window's
   remaining capacity is within ``manual_reserve`` of every long limit (the budget's
   ``capacity(background=True)``); manual jobs may use it. The budget enforces the same reserve
   before every call (catalog look-ups included), so a run's estimate can only err on the
   side of a look-up waiting for the next run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Allowance:
    calls: int  # the most calls this run may spend
    manual_only: bool  # pacing or the reserve leaves nothing for background/hot work now
    capped_by_window: bool  # the rolling window, not pacing, is what cut this run short


def run_allowance(*, now: float, capacity: int, hourly_limit: int, used_this_hour: int,
                  interval_s: float, max_batch: int, manual_reserve: float,
                  pacing: bool, background_capacity: int | None = None) -> Allowance:
    """The calls a run may spend, given the budget's ``capacity`` over the run's horizon.

    ``hourly_limit`` is what the provider's long-window limits (over a minute) allow in a clock
    hour; 0 when it has only short ones, which pace every call and need no run-level policy.
    ``background_capacity`` is the capacity less the manual reserve of every limit; without
    it, ``manual_reserve`` of ``hourly_limit`` is kept.
    """
    if capacity <= 0:
        return Allowance(0, False, True)
    if hourly_limit <= 0:  # only short (paced) limits: each call waits its turn instead
        return Allowance(min(capacity, max_batch), False, False)
    if background_capacity is None:  # tiny limits keep no reserve
        background_capacity = capacity - math.floor(hourly_limit * manual_reserve)
    if pacing:
        share = math.ceil(hourly_limit * min(interval_s, 3600.0) / 3600.0)
        slot = int((now % 3600.0) // interval_s) + 1 if interval_s < 3600 else 1
        paced = share * slot - used_this_hour
    else:
        paced = capacity
    allowed = min(paced, background_capacity)
    window_cut = background_capacity < paced
    if allowed > 0:
        return Allowance(min(allowed, max_batch), False, window_cut)
    return Allowance(min(capacity, max_batch), True, window_cut)
