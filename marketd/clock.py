"""The one place that reads time.

Everything time-dependent takes a :class:`Clock`; tests pass a :class:`FakeClock` and advance
it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime


class Clock:
    """Wall-clock time as epoch seconds, and a sleep that follows it."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)


class FakeClock(Clock):
    """A clock that only moves when told to; ``sleep`` advances it instantly."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._now += seconds
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
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def hour_window(ts: float) -> float:
    """Start of the clock hour that holds ``ts``."""
    return ts - (ts % 3600)
