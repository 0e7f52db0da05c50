"""The durable budget: every call is recorded before it is sent, restarts and second processes
never let more calls through than a limit allows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from marketd.budget import ProviderBudget
from marketd.clock import FakeClock
from marketd.config import ProviderConfig
from marketd.errors import BudgetExhausted
from marketd.ratelimit import parse_limit
from marketd.store import SQLiteStore, Store


def pc(*limits: str, delay_ms: float = 0) -> ProviderConfig:
    return ProviderConfig(name="stockx", limits=tuple(parse_limit(x) for x in limits),
                          delay_ms=delay_ms)


async def spend_until_refused(budget: ProviderBudget) -> int:
    n = 0
    while True:
        try:
            await budget.spend()
        except BudgetExhausted:
            return n
        n += 1


async def test_spend_is_recorded_before_returning(store: Store, clock: FakeClock) -> None:
    """Each spend is a committed row in market_calls and counts in market_budgets."""
    budget = ProviderBudget(pc("5/hour"), store, clock, margin_s=0)
    await budget.spend()
    await budget.spend()
    con = sqlite3.connect(store.path)  # a separate connection sees the committed rows
    assert con.execute("SELECT count(*) FROM market_calls").fetchone()[0] == 2
    assert con.execute("SELECT used, rate_limit FROM market_budgets").fetchone() == (2, 5)
    con.close()


async def test_exhausted_budget_raises_with_retry_time(store: Store, clock: FakeClock) -> None:
    """Past the limit, spend raises BudgetExhausted saying when the next call fits."""
    budget = ProviderBudget(pc("3/hour"), store, clock, margin_s=0)
    assert await spend_until_refused(budget) == 3
    with pytest.raises(BudgetExhausted) as info:
        await budget.spend()
    assert info.value.retry_at == clock.now() + 3600


async def test_paced_limit_waits_instead_of_refusing(store: Store, clock: FakeClock) -> None:
    """A 1/second limit makes spend wait (on the injected clock), never fail."""
    budget = ProviderBudget(pc("1/second", "100/hour"), store, clock, margin_s=0.25)
    start = clock.now()
    for _ in range(5):
        await budget.spend()
    assert clock.now() - start == pytest.approx(4 * 1.25)


async def test_delay_ms_spaces_calls(store: Store, clock: FakeClock) -> None:
    """delay_ms is a minimum gap between two calls."""
    budget = ProviderBudget(pc("100/hour", delay_ms=500), store, clock, margin_s=0)
    start = clock.now()
    for _ in range(3):
        await budget.spend()
    assert clock.now() - start == pytest.approx(1.0)


async def test_restart_rebuilds_from_the_call_log(tmp_path: Path, clock: FakeClock) -> None:
    """After a restart the rebuilt budget allows only what is left of every window."""
    path = str(tmp_path / "m.db")
    s1 = await SQLiteStore.open(path, clock)
    b1 = ProviderBudget(pc("10/hour"), s1, clock, margin_s=0)
    for _ in range(7):
        await b1.spend()
    await s1.close()  # the process "crashes" here
    clock.advance(1800)
    s2 = await SQLiteStore.open(path, clock)
    b2 = ProviderBudget(pc("10/hour"), s2, clock, margin_s=0)
    await b2.load()
    assert await spend_until_refused(b2) == 3
    clock.advance(1801)  # the first 7 leave the window
    assert await spend_until_refused(b2) == 7
    await s2.close()


async def test_second_process_shares_the_budget(tmp_path: Path, clock: FakeClock) -> None:
    """Two processes on one database never send more than the limit between them."""
    path = str(tmp_path / "m.db")
    s1, s2 = await SQLiteStore.open(path, clock), await SQLiteStore.open(path, clock)
    b1 = ProviderBudget(pc("10/hour"), s1, clock, margin_s=0)
    b2 = ProviderBudget(pc("10/hour"), s2, clock, margin_s=0)
    await b1.load()
    await b2.load()
    sent = 0
    for _ in range(10):
        for b in (b1, b2):
            try:
                await b.spend()
                sent += 1
            except BudgetExhausted:
                pass
    assert sent == 10
    await s1.close()
    await s2.close()


async def test_rolling_window_not_clock_hour(store: Store, clock: FakeClock) -> None:
    """Limits hold in every rolling window, not per clock hour: no double burst at :00."""
    clock.advance(3600 - (clock.now() % 3600) - 60)  # one minute before the hour
    budget = ProviderBudget(pc("10/hour"), store, clock, margin_s=0)
    assert await spend_until_refused(budget) == 10
    clock.advance(120)  # a new clock hour, same rolling window
    assert await spend_until_refused(budget) == 0
    rows = await store.budgets(since=clock.now() - 7200)
    assert [r["used"] for r in rows] == [10]


async def test_limit_holds_after_an_idle_prune(store: Store, clock: FakeClock) -> None:
    """After a day idle and the call log pruned empty, the limit still counts every call."""
    budget = ProviderBudget(pc("3/hour"), store, clock, margin_s=0)
    assert await spend_until_refused(budget) == 3
    clock.advance(26 * 3600)
    await store.prune_calls(clock.now() - 3600)
    assert await spend_until_refused(budget) == 3


async def test_delay_ms_holds_across_processes(tmp_path: Path, clock: FakeClock) -> None:
    """delay_ms spaces calls even when they come from two processes on one database."""
    path = str(tmp_path / "m.db")
    s1, s2 = await SQLiteStore.open(path, clock), await SQLiteStore.open(path, clock)
    b1 = ProviderBudget(pc("100/hour", delay_ms=1000), s1, clock, margin_s=0)
    b2 = ProviderBudget(pc("100/hour", delay_ms=1000), s2, clock, margin_s=0)
    await b1.spend()
    start = clock.now()
    await b2.spend()
    assert clock.now() - start == pytest.approx(1.0)
    await s1.close()
    await s2.close()
