"""What one simulated provider counts: arrivals against its limits, and what it answered.

Providers count at arrival: a request is timed the moment it reaches the simulator. A rolling
limit ``N/W`` refuses a request at ``t`` when ``N`` requests were already let through in
``(t - W, t]``; refused requests use up nothing, so a client that waits out ``Retry-After`` gets
in. This is the arithmetic of :mod:`marketd.ratelimit`, whose
:class:`~marketd.ratelimit.SlidingLog` keeps the times. A daily quota is a calendar day in the
provider's reset time zone (UTC for StockX, Pacific time for eBay). OAuth token requests are
counted apart and limit nothing.

``max_seen`` remembers, per limit, the most arrivals (refused ones included) that any window of
that length ever held, so a test can assert that a client never sent more than a limit allows,
whatever the simulator answered.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from marketd.clock import iso
from marketd.ratelimit import Limit, SlidingLog


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
        self._arrived = SlidingLog(self.limits)  # every request: what the client sent
        self._admitted = SlidingLog(self.limits)  # requests no limit refused
        self._max_seen = [0] * len(self.limits)
        self._day: date | None = None
        self._day_used = 0  # admitted today
        self._day_arrived = 0
        self._day_max = 0  # most arrivals in one day

    def arrive(self, now: float) -> int | None:
        """Count one API request arriving at ``now``.

        None when it may pass; when a limit refuses it, the seconds until one would pass.
        """
        self.requests += 1
        for log in (self._arrived, self._admitted):
            log.prune(now)
        self._arrived.record(now)
        refused: int | None = None
        for i, limit in enumerate(self.limits):
            self._max_seen[i] = max(self._max_seen[i],
                                    self._arrived.count_in(limit.window_s, now))
            if refused is None and self._admitted.count_in(limit.window_s, now) >= limit.count:
                refused = max(1, math.ceil(self._admitted.next_free(now) - now))
        day = self._local_day(now)
        if day != self._day:
            self._day, self._day_used, self._day_arrived = day, 0, 0
        self._day_arrived += 1
        self._day_max = max(self._day_max, self._day_arrived)
        if refused is None and self.daily_limit is not None and self._day_used >= self.daily_limit:
            refused = max(1, math.ceil(self._day_reset(day) - now))
        if refused is None:
            self._admitted.record(now)
            self._day_used += 1
        return refused

    def answered(self, status: int) -> None:
        self.statuses[status] += 1

    def _local_day(self, now: float) -> date:
        return datetime.fromtimestamp(now, self.daily_tz).date()

    def _day_reset(self, day: date) -> float:
        return datetime.combine(day + timedelta(days=1), time(), self.daily_tz).timestamp()

    def day_quota(self, now: float) -> tuple[int, int, float] | None:
        """``(limit, used, resets_at)`` of the daily quota today, or None without one."""
        if self.daily_limit is None:
            return None
        day = self._local_day(now)
        used = self._day_used if day == self._day else 0
        return self.daily_limit, used, self._day_reset(day)

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
