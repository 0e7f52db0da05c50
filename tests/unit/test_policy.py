"""A run's call allowance: counted in calls, paced over the hour, a reserve for manual jobs."""

from __future__ import annotations

from marketd.policy import run_allowance

HOUR = 1_767_225_600.0  # a clock hour's start


def allow(**kw: float) -> tuple[int, bool, bool]:
    args = {"now": HOUR, "capacity": 100, "hourly_limit": 100, "used_this_hour": 0,
            "interval_s": 900, "max_batch": 50, "manual_reserve": 0.05, "pacing": True}
    args.update(kw)
    a = run_allowance(**args)  # type: ignore[arg-type]
    return a.calls, a.manual_only, a.capped_by_window


def test_first_slot_gets_its_share() -> None:
    """The first 15 minutes of an hour may spend a quarter of it."""
    assert allow() == (25, False, False)


def test_unused_share_carries_over() -> None:
    """By the third slot, 75 minus what was spent is allowed."""
    assert allow(now=HOUR + 1900, used_this_hour=30, capacity=70) == (45, False, False)


def test_reserve_leaves_manual_only() -> None:
    """Near the end of the budget, only manual jobs may spend the last 5%."""
    assert allow(now=HOUR + 3000, used_this_hour=95, capacity=5) == (5, True, True)


def test_pacing_off_takes_all_but_the_reserve() -> None:
    """Without pacing a run may spend the whole window less the reserve, up to max_batch."""
    assert allow(pacing=False, max_batch=500) == (95, False, True)


def test_nothing_left() -> None:
    """No capacity, no calls."""
    assert allow(capacity=0) == (0, False, True)


def test_long_intervals_pace_by_the_hour() -> None:
    """An interval of an hour or more gets the whole hour's share each run."""
    assert allow(interval_s=7200, manual_reserve=0) == (50, False, False)


def test_short_limits_only_need_no_run_policy() -> None:
    """A provider with only short limits (20/10s) is paced per call: no run pacing, no reserve."""
    assert allow(hourly_limit=0, capacity=23) == (23, False, False)
