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


def iso(ts: float | None) -> str | None:
    """Epoch seconds to ISO-8601 UTC text with millisecond precision (``...Z``)."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str | None) -> float | None:
    """ISO-8601 text (as written by :func:`iso`) back to epoch seconds."""
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def hour_window(ts: float) -> float:
    """Start of the clock hour that holds ``ts``."""
    return ts - (ts % 3600)
