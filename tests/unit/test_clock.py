"""The clock: FakeClock's timers fire in time order as it is advanced; the real Clock arms
the loop's; iso() is the text datetime gives, formatted faster."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

from marketd.clock import Clock, FakeClock, iso, parse_iso


def reference(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def test_iso_matches_datetime_everywhere() -> None:
    rng = random.Random(7)
    values = [rng.uniform(0, 4e9) for _ in range(20000)]
    # sub-millisecond steps across second boundaries, and fractions that round up a second
    values += [1_767_225_599 + i * 0.000_25 for i in range(8000)]
    values += [k + f for k in (0, 1_767_225_599) for f in
               (0.999_999_5, 0.999_999_499_9, 0.000_000_5, 0.000_5, 0.999_5, 1e-9)]
    values += [-1.5, -0.000_1]
    for ts in values:
        assert iso(ts) == reference(ts), ts


def test_iso_round_trips_and_none() -> None:
    assert iso(None) is None
    assert iso(1_767_225_600.25) == "2026-01-01T00:00:00.250Z"
    assert parse_iso(iso(1_767_225_600.25)) == 1_767_225_600.25


# ---- timers ------------------------------------------------------------------------------------


def test_advance_fires_due_timers_in_time_order_at_their_instants() -> None:
    """Each timer fires once, earliest first, with now() at its own instant; ties in the
    order they were armed; none before its instant."""
    clock = FakeClock()
    t0 = clock.now()
    fired: list[tuple[str, float]] = []
    for name, at in (("c", 30), ("a", 10), ("b1", 20), ("b2", 20), ("late", 100)):
        clock.call_at(t0 + at, lambda name=name: fired.append((name, clock.now() - t0)))
    assert clock.next_timer() == t0 + 10
    clock.advance(9.5)
    assert fired == []
    clock.advance(25)
    assert fired == [("a", 10), ("b1", 20), ("b2", 20), ("c", 30)]
    assert clock.now() == t0 + 34.5
    assert clock.next_timer() == t0 + 100
    clock.advance(100)
    assert fired[-1] == ("late", 100)
    assert clock.next_timer() is None
    clock.advance(1000)
    assert len(fired) == 5  # a timer fires once


def test_cancelled_timers_never_fire() -> None:
    clock = FakeClock()
    fired: list[str] = []
    keep = clock.call_at(clock.now() + 5, lambda: fired.append("keep"))
    drop = clock.call_at(clock.now() + 1, lambda: fired.append("drop"))
    drop.cancel()
    assert drop.cancelled() and not keep.cancelled()
    assert clock.next_timer() == keep.when
    clock.advance(10)
    assert fired == ["keep"]


def test_timers_armed_while_firing_fire_within_the_same_advance() -> None:
    """A callback that arms another timer due before the advance's end sees it fire too, at
    its own instant; one due later waits."""
    clock = FakeClock()
    t0 = clock.now()
    fired: list[tuple[str, float]] = []

    def first() -> None:
        fired.append(("first", clock.now() - t0))
        clock.call_at(clock.now() + 2, lambda: fired.append(("second", clock.now() - t0)))
        clock.call_at(clock.now() + 60, lambda: fired.append(("third", clock.now() - t0)))

    clock.call_at(t0 + 1, first)
    clock.advance(10)
    assert fired == [("first", 1), ("second", 3)]
    assert clock.next_timer() == t0 + 61


def test_a_timer_already_due_fires_at_the_next_advance_and_time_never_goes_back() -> None:
    clock = FakeClock()
    clock.advance(100)
    seen: list[float] = []
    clock.call_at(clock.now() - 50, lambda: seen.append(clock.now()))
    assert seen == []  # not from inside call_at
    clock.advance(0)
    assert seen == [clock.now()]


def test_fire_next_fires_one_timer_and_stops_at_until() -> None:
    clock = FakeClock()
    t0 = clock.now()
    fired: list[str] = []
    clock.call_at(t0 + 10, lambda: fired.append("a"))
    clock.call_at(t0 + 10, lambda: fired.append("b"))
    clock.call_at(t0 + 20, lambda: fired.append("c"))
    assert clock.fire_next(until=t0 + 15)
    assert (fired, clock.now()) == (["a"], t0 + 10)
    assert clock.fire_next(until=t0 + 15)
    assert fired == ["a", "b"]
    assert not clock.fire_next(until=t0 + 15)
    assert clock.now() == t0 + 10  # nothing due by then: time stays
    assert clock.fire_next()
    assert (fired, clock.now()) == (["a", "b", "c"], t0 + 20)


async def test_sleep_advances_and_fires_timers() -> None:
    """What a budget's sleep lets happen meanwhile (a scheduler's wake) happens on a
    FakeClock too."""
    clock = FakeClock()
    t0 = clock.now()
    fired: list[float] = []
    clock.call_at(t0 + 0.5, lambda: fired.append(clock.now() - t0))
    await clock.sleep(0.25)
    assert fired == []
    await clock.sleep(0.5)
    assert fired == [0.5]
    assert clock.now() == t0 + 0.75


def test_monotonic_follows_the_fake_clock() -> None:
    clock = FakeClock()
    m0 = clock.monotonic()
    clock.advance(2.5)
    assert clock.monotonic() - m0 == 2.5


async def test_real_clock_arms_the_loop_timer() -> None:
    """The real Clock hands the timer to the event loop: one already due runs at the loop's
    next turns; a cancelled one never does; ``when`` is the clock's epoch second."""
    clock = Clock()
    ran = asyncio.Event()
    cancelled: list[str] = []
    due = clock.call_at(clock.now() - 1, ran.set)
    later = clock.call_at(clock.now() + 3600, lambda: cancelled.append("fired"))
    assert later.when > clock.now() + 3599
    later.cancel()
    await asyncio.wait_for(ran.wait(), timeout=5)  # due already: no time has to pass
    assert not due.cancelled() and later.cancelled()
    assert cancelled == []
    assert clock.monotonic() <= clock.monotonic()
