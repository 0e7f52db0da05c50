"""One trial's parameters: the options' defaults, and what makes a set of them valid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# the defaults of the options (Params)
LIMIT_PER_HOUR = 100
N_SKUS, N_ITEMS, N_LATE = 150, 500, 20
PAGE_LOADS_PER_HOUR = 6.0
MANUAL_PER_HOUR = 1.0
STALE_AFTER_S = 3600.0
SEED = 7
DAY_H, WARMUP_MIN_H = 24.0, 3.0
QUICK_WARMUP_H, QUICK_DAY_H = 1.5, 2.0


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


def check_params(p: Params) -> list[str]:
    """What is wrong with ``p`` (empty when nothing)."""
    from bench.freshness.world import max_items_per_sku

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
