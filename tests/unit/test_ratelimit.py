"""Pure rolling-window arithmetic (no clock, no sleeping: times are plain numbers)."""

from __future__ import annotations

import random

import pytest

from marketd.ratelimit import Limit, SlidingLog, hourly_rate_limit, parse_limit


@pytest.mark.parametrize(("text", "count", "window"), [
    ("100/hour", 100, 3600), ("1/second", 1, 1), ("5000/day", 5000, 86400),
    ("20/10s", 20, 10), ("3/minute", 3, 60), ("7 / 2.5s", 7, 2.5), ("2/hours", 2, 3600),
])
def test_parse_limit(text: str, count: int, window: float) -> None:
    """N/UNIT and N/Ks parse to a count and a window in seconds."""
    lim = parse_limit(text)
    assert (lim.count, lim.window_s) == (count, window)


@pytest.mark.parametrize("text", ["", "100", "0/hour", "10/fortnight", "-1/hour", "x/s",
                                  "10/0s", "1/99999999s"])
def test_parse_limit_rejects(text: str) -> None:
    """Anything else is a ValueError that says how to write a limit."""
    with pytest.raises(ValueError, match=r"limit|count|window"):
        parse_limit(text)


def test_hourly_rate_limit_is_the_tightest_hour() -> None:
    """market_budgets.rate_limit is the most calls any clock hour can hold."""
    assert hourly_rate_limit([parse_limit("100/hour")]) == 100
    assert hourly_rate_limit([parse_limit("1/second"), parse_limit("25000/day")]) == 3600
    assert hourly_rate_limit([parse_limit("20/10s"), parse_limit("100/hour")]) == 100


def test_window_edges() -> None:
    """A call leaves the window exactly window_s (+margin) after it was sent."""
    log = SlidingLog([Limit(2, 10, "2/10s")])
    log.record(100.0)
    log.record(101.0)
    assert log.next_free(101.0) == 110.0
    assert log.remaining(log.limits[0], 109.999) == 0
    assert log.remaining(log.limits[0], 110.0) == 1
    assert log.next_free(110.0) == 110.0


def test_margin_widens_every_window() -> None:
    """The margin keeps calls apart by window + margin, for arrival-time counting."""
    log = SlidingLog([Limit(1, 1, "1/second")], margin_s=0.25)
    log.record(0.0)
    assert log.next_free(0.5) == 1.25


def test_several_limits_hold_at_once() -> None:
    """The next free slot satisfies every limit."""
    log = SlidingLog([Limit(1, 1, "1/s"), Limit(3, 100, "3/100s")])
    for t in (0.0, 1.0, 2.0):
        assert log.next_free(t) == t
        log.record(t)
    assert log.next_free(3.0) == 100.0  # the hourly-ish limit binds, not the per-second one


def test_capacity_counts_long_windows_and_paces_short_ones() -> None:
    """Capacity over a horizon: remaining in long windows, rate x horizon in paced ones."""
    log = SlidingLog([Limit(1, 1, "1/second"), Limit(100, 3600, "100/hour")])
    assert log.capacity(0.0, 900) == 100
    log2 = SlidingLog([Limit(1, 1, "1/second")])
    assert log2.capacity(0.0, 60) == 61


def test_rebuild_from_times_matches_live_log() -> None:
    """A log rebuilt from stored send times (a restart) decides exactly as the live one."""
    limits = [Limit(5, 10, "5/10s"), Limit(20, 100, "20/100s")]
    live = SlidingLog(limits, 0.1)
    rng = random.Random(7)
    t = 0.0
    for _ in range(200):
        t += rng.uniform(0, 3)
        at = live.next_free(t)
        live.record(at)
        t = at
    rebuilt = SlidingLog(limits, 0.1)
    rebuilt.load(reversed(live.times))
    for probe in (t, t + 1, t + 5, t + 50):
        assert rebuilt.next_free(probe) == live.next_free(probe)


def test_greedy_sender_never_breaks_a_window() -> None:
    """Sending at every next_free keeps every window of every limit within its count."""
    limits = [Limit(3, 1, "3/s"), Limit(10, 60, "10/min")]
    log = SlidingLog(limits)
    t, sent = 0.0, []
    for _ in range(100):
        t = log.next_free(t)
        log.record(t)
        sent.append(t)
    for lim in limits:
        for i, start in enumerate(sent):
            in_window = [s for s in sent[i:] if s < start + lim.window_s]
            assert len(in_window) <= lim.count


def test_prune_keeps_the_horizon() -> None:
    """Pruning drops only what no window can see."""
    log = SlidingLog([Limit(2, 10, "2/10s")])
    for t in (0.0, 5.0, 20.0):
        log.record(t)
    log.prune(21.0)
    assert log.times == (20.0,)


def test_hourly_pace_spreads_each_long_window_over_its_length() -> None:
    """Runs pace by the tightest long limit spread over its own window; short limits don't."""
    from marketd.ratelimit import hourly_pace

    assert hourly_pace([parse_limit("100/hour")]) == 100
    assert hourly_pace([parse_limit("1/second"), parse_limit("24000/day")]) == 1000
    assert hourly_pace([parse_limit("30/600s"), parse_limit("5000/day")]) == 180
    assert hourly_pace([parse_limit("20/10s")]) == 0
