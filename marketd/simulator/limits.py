"""What one simulated provider counts: arrivals against its limits, and what it answered.

Providers count at arrival, so every request to a provider's API is counted the moment it
reaches the simulator, the ones it then refuses included; OAuth token requests are counted
apart and limit nothing. A rolling limit ``N/W`` refuses a request when more than ``N``
arrived in ``(t - W, t]``, the same arithmetic as :mod:`marketd.ratelimit`, whose
:class:`~marketd.ratelimit.SlidingLog` keeps the arrival times. A daily quota is a calendar day
in the provider's reset time zone (UTC for StockX, Pacific time for eBay).

``max_seen`` remembers, per limit, the most arrivals any window of that length ever held, so a
test can assert that a client never went over a limit, whatever the simulator answered.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from marketd.clock import iso
from marketd.ratelimit import Limit, SlidingLog


@dataclass(frozen=True, slots=True)
class Breach:
    """Why a request was refused, and how long until one more would be let in."""

    limit: str  # the limit's text, or "daily"
    retry_after_s: int


class ProviderMeter:
    """Arrivals and answers of one provider."""

    def __init__(self, limits: Sequence[Limit], daily_limit: int | None, daily_tz: tzinfo) -> None:
        self.limits = tuple(limits)
        self.daily_limit = daily_limit
        self.daily_tz = daily_tz
        self.requests = 0
        self.token_requests = 0
        self.statuses: Counter[int] = Counter()
        self.faults = 0
        self.forced = 0
        self._log = SlidingLog(self.limits)
        self._max_seen = [0] * len(self.limits)
        self._day: date | None = None
        self._day_used = 0
        self._day_max = 0

    def arrive(self, now: float) -> Breach | None:
        """Count one API request arriving at ``now``; the breach it makes, if any."""
        self.requests += 1
        self._log.prune(now)
        self._log.record(now)
        breach: Breach | None = None
        for i, limit in enumerate(self.limits):
            seen = self._log.count_in(limit.window_s, now)
            self._max_seen[i] = max(self._max_seen[i], seen)
            if seen > limit.count and breach is None:
                wait = self._log.next_free(now) - now
                breach = Breach(limit.text, max(1, math.ceil(wait)))
        day = self._local_day(now)
        if day != self._day:
            self._day, self._day_used = day, 0
        self._day_used += 1
        self._day_max = max(self._day_max, self._day_used)
        if breach is None and self.daily_limit is not None and self._day_used > self.daily_limit:
            breach = Breach("daily", max(1, math.ceil(self._day_reset(day) - now)))
        return breach

    def answered(self, status: int) -> None:
        self.statuses[status] += 1

    def _local_day(self, now: float) -> date:
        return datetime.fromtimestamp(now, self.daily_tz).date()

    def _day_reset(self, day: date) -> float:
        return datetime.combine(day + timedelta(days=1), time(), self.daily_tz).timestamp()

    def stats(self, now: float) -> dict[str, Any]:
        """The JSON shape of ``GET /_sim/stats`` for this provider."""
        day = self._local_day(now)
        daily: dict[str, Any] | None = None
        if self.daily_limit is not None:
            daily = {
                "limit": self.daily_limit,
                "used": self._day_used if day == self._day else 0,
                "max_seen": self._day_max,
                "resets_at": iso(self._day_reset(day)),
            }
        return {
            "requests": self.requests,
            "token_requests": self.token_requests,
            "rate_limited": self.statuses[429],
            "faults": self.faults,
            "forced": self.forced,
            "statuses": {str(code): n for code, n in sorted(self.statuses.items())},
            "limits": [
                {"limit": limit.text, "count": limit.count, "window_s": limit.window_s,
                 "max_seen": seen, "exceeded": seen > limit.count}
                for limit, seen in zip(self.limits, self._max_seen, strict=True)
            ],
            "daily": daily,
        }
