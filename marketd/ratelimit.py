"""Pure limit arithmetic over rolling windows.

A limit ``N/W`` holds when, for every instant ``t``, no more than ``N`` calls were sent in
``(t - W - margin, t]``. The margin covers network delay: providers count at arrival, so two
calls sent ``W`` apart can arrive less than ``W`` apart.

:class:`SlidingLog` keeps the send times of one provider, oldest first. It is rebuilt from the
durable call log in SQLite at start-up and kept in step with other processes by appending what
they recorded (see ``store.reserve_call``), so it never under-counts.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

UNITS: dict[str, float] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_LIMIT_RE = re.compile(r"^\s*(\d+)\s*/\s*(?:(second|minute|hour|day)s?|(\d+(?:\.\d+)?)\s*s)\s*$")
# limits whose window is this short are paced (the caller waits) instead of deferring the job
PACING_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Limit:
    count: int
    window_s: float
    text: str

    @property
    def paced(self) -> bool:
        return self.window_s <= PACING_WINDOW_S

    def per_hour(self) -> int:
        """The most calls this limit lets into one clock hour."""
        if self.window_s >= 3600:
            return self.count
        return self.count * math.ceil(3600 / self.window_s)


def parse_limit(text: str) -> Limit:
    """``"100/hour"``, ``"1/second"``, ``"20/10s"`` -> :class:`Limit`; ValueError otherwise."""
    m = _LIMIT_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(
            f"{text!r} is not a limit: write N/UNIT with UNIT second, minute, hour, day, "
            "or a number of seconds such as 20/10s"
        )
    count = int(m.group(1))
    window = UNITS[m.group(2)] if m.group(2) else float(m.group(3))
    if count < 1:
        raise ValueError(f"{text!r}: the count must be at least 1")
    if window <= 0 or window > 31 * 86400:
        raise ValueError(f"{text!r}: the window must be between 1 second and 31 days")
    return Limit(count, float(window), text.strip())


def hourly_rate_limit(limits: Sequence[Limit]) -> int:
    """What market_budgets.rate_limit shows: the most calls any clock hour can hold (0 for no
    limits)."""
    return min(limit.per_hour() for limit in limits) if limits else 0


def hourly_pace(limits: Sequence[Limit]) -> int:
    """The calls per clock hour that spend every long limit (over a minute) evenly across its
    own window: ``100/hour`` is 100, ``24000/day`` 1000, ``30/600s`` 180. 0 when there
    is no long limit (short ones pace every call by themselves)."""
    shares = [math.ceil(lim.count * 3600 / lim.window_s) for lim in limits if not lim.paced]
    return min(shares) if shares else 0


def kept(limit: Limit, reserve: float) -> int:
    """The calls of ``limit`` that a ``reserve`` share keeps for manual jobs: a whole number of
    its count (``100/hour`` at 0.05 keeps 5; tiny limits keep none); paced limits keep none
    (every call waits its own turn there)."""
    if reserve <= 0 or limit.paced:
        return 0
    return math.floor(limit.count * reserve)


class SlidingLog:
    """Send times of one provider's calls over its longest window."""

    def __init__(self, limits: Sequence[Limit], margin_s: float = 0.0) -> None:
        self.limits = tuple(limits)
        self.margin_s = margin_s
        self.horizon_s = max((lim.window_s for lim in self.limits), default=0.0) + margin_s
        self._times: list[float] = []

    def copy(self) -> SlidingLog:
        twin = SlidingLog(self.limits, self.margin_s)
        twin._times = list(self._times)
        return twin

    def load(self, times: Iterable[float]) -> None:
        """Add send times (from the database), keeping the log sorted."""
        self._times.extend(times)
        self._times.sort()

    def record(self, ts: float) -> None:
        if self._times and ts < self._times[-1]:
            self.load([ts])
        else:
            self._times.append(ts)

    def remove(self, ts: float, n: int) -> None:
        """Forget ``n`` calls recorded at ``ts`` (calls reserved ahead and never sent)."""
        for _ in range(n):
            i = bisect_left(self._times, ts)
            if i < len(self._times) and self._times[i] == ts:
                del self._times[i]

    def room(self, now: float, reserve: float = 0.0) -> int:
        """How many calls could be sent at ``now`` at once, by every limit's count of the
        calls recorded after its window's start (calls recorded for later included); with
        ``reserve``, leaving that share of every long limit unspent (:func:`kept`)."""
        return min((max(0, self.remaining(lim, now) - kept(lim, reserve))
                    for lim in self.limits), default=0)

    def prune(self, now: float) -> None:
        cut = bisect_right(self._times, now - self.horizon_s)
        if cut:
            del self._times[:cut]

    def count_in(self, window_s: float, now: float) -> int:
        """Calls sent in ``(now - window_s - margin, now]``."""
        return len(self._times) - bisect_right(self._times, now - window_s - self.margin_s)

    def count_since(self, since: float) -> int:
        """Calls sent at or after ``since`` (e.g. the start of the clock hour)."""
        return len(self._times) - bisect_left(self._times, since)

    def frees_at(self, now: float) -> float | None:
        """When the oldest call inside the longest window leaves it (capacity grows then)."""
        longest = max((lim for lim in self.limits if not lim.paced),
                      key=lambda lim: lim.window_s, default=None)
        if longest is None:
            return None
        start = bisect_right(self._times, now - longest.window_s - self.margin_s)
        if start >= len(self._times):
            return None
        return self._times[start] + longest.window_s + self.margin_s

    def remaining(self, limit: Limit, now: float) -> int:
        return max(0, limit.count - self.count_in(limit.window_s, now))

    def next_free(self, now: float) -> float:
        """The earliest instant ``>= now`` at which one more call breaks no limit."""
        at = now
        for limit in self.limits:
            used = self.count_in(limit.window_s, now)
            if used >= limit.count:
                # the call that must leave the window is the (used - count + 1)-th oldest in it
                start = len(self._times) - used
                oldest_needed = self._times[start + used - limit.count]
                at = max(at, oldest_needed + limit.window_s + self.margin_s)
        return at

    def capacity(self, now: float, horizon_s: float, reserve: float = 0.0) -> int:
        """How many calls could be sent between now and ``now + horizon_s``.

        Long windows give their remaining count (less what ``reserve`` keeps of them); paced
        (short) windows give how many their rate lets through in the horizon.
        """
        cap: int | None = None
        for limit in self.limits:
            if limit.paced:
                n = self.remaining(limit, now) + int(
                    horizon_s / (limit.window_s + self.margin_s) * limit.count
                )
            else:
                n = max(0, self.remaining(limit, now) - kept(limit, reserve))
            cap = n if cap is None else min(cap, n)
        return cap if cap is not None else 0

    @property
    def times(self) -> tuple[float, ...]:
        return tuple(self._times)
