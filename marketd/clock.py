"""The one place that reads time.

Everything time-dependent takes a :class:`Clock`: the wall clock (``now``), a clock for
durations (``monotonic``), ``sleep`` and timers (``call_at``). Tests pass a :class:`FakeClock`
and advance it instead of sleeping; advancing fires the timers that fall due, in time order,
so what a timer starts (the scheduler's wakes) happens at the same fake instant every time.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache


class Timer:
    """A callback armed on a clock for the instant ``when`` (the clock's epoch seconds).

    :meth:`cancel` disarms it; a timer fires at most once.
    """

    __slots__ = ("_callback", "_cancelled", "_handle", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self._callback: Callable[[], None] | None = callback
        self._cancelled = False
        self._handle: asyncio.TimerHandle | None = None  # the loop's timer (the real Clock)

    def cancel(self) -> None:
        self._cancelled = True
        self._callback = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def cancelled(self) -> bool:
        return self._cancelled

    def _fire(self) -> None:
        callback, self._callback, self._handle = self._callback, None, None
        if callback is not None and not self._cancelled:
            callback()

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        return f"<Timer when={self.when!r}{state}>"


class Clock:
    """Wall-clock time as epoch seconds, a monotonic clock for durations, and a sleep and
    timers that follow them."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` (from the running event loop) once ``now()`` reaches ``when``;
        at the loop's next turn when ``when`` has passed already."""
        timer = Timer(when, callback)
        delay = max(0.0, when - self.now())
        timer._handle = asyncio.get_running_loop().call_later(delay, timer._fire)
        return timer


class FakeClock(Clock):
    """A clock that only moves when told to: ``advance`` (and ``sleep``, which advances
    instantly) fires the timers that fall due, earliest first (ties in the order they were
    armed), each with ``now()`` at its own instant. A timer armed for an instant already
    passed fires at the next ``advance`` (``advance(0)`` will do) or :meth:`fire_next`."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._start = start
        self._timers: list[tuple[float, int, Timer]] = []
        self._armed = 0  # timers armed so far: the tie-break

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now - self._start

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        self._armed += 1
        heapq.heappush(self._timers, (when, self._armed, timer))
        return timer

    def next_timer(self) -> float | None:
        """When the earliest armed timer is due (None: no timer is armed)."""
        while self._timers and self._timers[0][2].cancelled():
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def fire_next(self, until: float = math.inf) -> bool:
        """Fire the earliest armed timer alone, if it is due at or before ``until``, moving
        time to its instant first (never back); False, time unchanged, when none is."""
        when = self.next_timer()
        if when is None or when > until:
            return False
        _, _, timer = heapq.heappop(self._timers)
        self._now = max(self._now, when)
        timer._fire()
        return True

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, firing every timer due by then (and any they arm
        that are due by then too)."""
        target = self._now + seconds
        while self.fire_next(target):
            pass
        self._now = target

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


# the text of the last whole second iso() formatted: consecutive timestamps mostly share it,
# and strftime is most of iso()'s cost (one tuple, replaced whole: safe across threads)
_last_second: tuple[int, str] = (-1, "")


def iso(ts: float | None) -> str | None:
    """Epoch seconds to ISO-8601 UTC text with millisecond precision (``...Z``).

    The same text as ``datetime.fromtimestamp(ts, UTC)`` gives (microseconds rounded half to
    even, then truncated to milliseconds), with the date and time of day formatted once per
    second.
    """
    global _last_second
    if ts is None:
        return None
    if ts < 0 or ts != ts or ts in (float("inf"), float("-inf")):
        dt = datetime.fromtimestamp(ts, tz=UTC)
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    sec = int(ts)
    us = round((ts - sec) * 1e6)  # ts - sec is exact: the same fraction datetime rounds
    if us >= 1_000_000:
        sec += 1
        us -= 1_000_000
    cached_sec, text = _last_second
    if cached_sec != sec:
        text = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _last_second = (sec, text)
    return f"{text}{us // 1000:03d}Z"


def parse_iso(text: str | None) -> float | None:
    """ISO-8601 text (as written by :func:`iso`) back to epoch seconds."""
    if text is None:
        return None
    return _parse_iso(text)


@lru_cache(maxsize=1024)  # a claim's rows share their created_at and started_at texts
def _parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def hour_window(ts: float) -> float:
    """Start of the clock hour that holds ``ts``."""
    return ts - (ts % 3600)
