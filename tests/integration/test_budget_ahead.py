"""Reserving a batch's calls ahead: one transaction for many calls, never more than a limit in
any window the provider sees, unsent calls given back, and a crash only under-uses."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from marketd.budget import RESERVE_GUARD_S, RESERVE_LEASE_S, ProviderBudget
from marketd.clock import FakeClock
from marketd.config import ProviderConfig
from marketd.errors import BudgetExhausted
from marketd.ratelimit import parse_limit
from marketd.store import SQLiteStore, Store


def pc(*limits: str, delay_ms: float = 0) -> ProviderConfig:
    return ProviderConfig(name="stockx", limits=tuple(parse_limit(x) for x in limits),
                          delay_ms=delay_ms)


def db(path: str, query: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


async def test_one_transaction_serves_the_batch(store: Store, clock: FakeClock) -> None:
    budget = ProviderBudget(pc("100/hour"), store, clock, margin_s=0)
    assert budget.reserves_ahead
    budget.ahead = 5
    await budget.spend()
    # all five are durable before the first is sent, recorded at the lease's end
    rows = db(store.path, "SELECT sent_at FROM market_calls")
    assert [r[0] for r in rows] == [pytest.approx(clock.now() + RESERVE_LEASE_S)] * 5
    assert db(store.path, "SELECT used FROM market_budgets") == [(5,)]
    for _ in range(4):
        await budget.spend()
    assert len(db(store.path, "SELECT id FROM market_calls")) == 5  # no new rows
    assert budget.calls == 5 and budget.ahead == 0


async def test_unsent_calls_are_given_back(store: Store, clock: FakeClock) -> None:
    budget = ProviderBudget(pc("10/hour"), store, clock, margin_s=0)
    budget.ahead = 6
    await budget.spend()
    await budget.spend()
    budget.release()
    await store.flush()
    assert len(db(store.path, "SELECT id FROM market_calls")) == 2
    assert db(store.path, "SELECT used FROM market_budgets") == [(2,)]
    assert budget.log.count_in(3600, clock.now()) == 2
    refused_after = 0
    while True:
        try:
            await budget.spend()
        except BudgetExhausted:
            break
        refused_after += 1
    assert refused_after == 8


async def test_reserves_no_more_than_the_limit_leaves(store: Store, clock: FakeClock) -> None:
    budget = ProviderBudget(pc("10/hour"), store, clock, margin_s=0)
    budget.ahead = 3
    for _ in range(3):
        await budget.spend()
    budget.ahead = 50
    for _ in range(7):
        await budget.spend()
    with pytest.raises(BudgetExhausted):
        await budget.spend()
    assert len(db(store.path, "SELECT id FROM market_calls")) == 10


async def test_lease_end_stops_handing_out(store: Store, clock: FakeClock) -> None:
    """Reserved calls are not sent after their recorded time: the rest are given back and
    the next call is reserved anew."""
    budget = ProviderBudget(pc("100/hour"), store, clock, margin_s=0)
    budget.ahead = 4
    await budget.spend()
    first_at = clock.now()
    clock.advance(RESERVE_LEASE_S - RESERVE_GUARD_S)
    budget.ahead = 1
    await budget.spend()
    await store.flush()
    times = sorted(r[0] for r in db(store.path, "SELECT sent_at FROM market_calls"))
    assert times == [pytest.approx(first_at + RESERVE_LEASE_S), pytest.approx(clock.now())]


@pytest.mark.parametrize("limits, delay_ms", [(("1/second", "100/hour"), 0),
                                              (("100/hour",), 500)])
async def test_short_windows_and_delays_reserve_one_call_at_a_time(
        store: Store, clock: FakeClock, limits: tuple[str, ...], delay_ms: float) -> None:
    budget = ProviderBudget(pc(*limits, delay_ms=delay_ms), store, clock, margin_s=0)
    assert not budget.reserves_ahead
    budget.ahead = 5
    await budget.spend()
    assert len(db(store.path, "SELECT id FROM market_calls")) == 1


async def test_a_crash_with_calls_reserved_only_under_uses(tmp_path: Path,
                                                           clock: FakeClock) -> None:
    path = str(tmp_path / "m.db")
    s1 = await SQLiteStore.open(path, clock)
    b1 = ProviderBudget(pc("10/hour"), s1, clock, margin_s=0)
    b1.ahead = 8
    await b1.spend()  # 8 reserved, 1 sent; the process dies without giving 7 back
    s1.db.pending.take()  # what a crash loses: the give-back waiting for a transaction
    await s1.close()
    s2 = await SQLiteStore.open(path, clock)
    try:
        b2 = ProviderBudget(pc("10/hour"), s2, clock, margin_s=0)
        await b2.load()
        sent = 0
        while True:
            try:
                await b2.spend()
            except BudgetExhausted:
                break
            sent += 1
        assert sent == 2
    finally:
        await s2.close()
        await s1.close()


async def test_no_window_ever_holds_more_than_the_limit(tmp_path: Path,
                                                        clock: FakeClock) -> None:
    """Two processes on one database, random batch sizes, gaps and give-backs: in every
    rolling window, the calls actually sent (when spend returned) stay within each limit."""
    path = str(tmp_path / "m.db")
    limits = ("12/120s", "40/hour")
    stores = [await SQLiteStore.open(path, clock), await SQLiteStore.open(path, clock)]
    budgets = [ProviderBudget(pc(*limits), s, clock, margin_s=0) for s in stores]
    rng = random.Random(11)
    sent: list[float] = []
    try:
        for _ in range(600):
            b = rng.choice(budgets)
            action = rng.random()
            if action < 0.1:
                b.release()
                await b.store.flush()
            elif action < 0.3:
                clock.advance(rng.uniform(0, 200))
            else:
                b.ahead = rng.randint(1, 15)
                try:
                    await b.spend()
                except BudgetExhausted:
                    continue
                sent.append(clock.now())
        assert len(sent) > 100  # the trial sent enough to press on both limits
        for limit in (parse_limit(x) for x in limits):
            for t in sent:
                in_window = [s for s in sent if t - limit.window_s < s <= t]
                assert len(in_window) <= limit.count, (limit.text, t)
    finally:
        for s in stores:
            await s.close()


async def test_a_slow_provider_reserves_what_one_lease_can_send(store: Store,
                                                                clock: FakeClock) -> None:
    """Calls 3 s apart: a new reservation holds only what fits in the lease (9 s / 3 s = 3),
    not the batch's 20, so a slow provider does not hold budget it cannot use."""
    budget = ProviderBudget(pc("100/hour"), store, clock, margin_s=0)
    start = clock.now()
    budget.ahead = 20
    for _ in range(3):  # at 0, 3 and 6 s: the first reservation (20: nothing known yet)
        await budget.spend()
        clock.advance(3)
    assert len(db(store.path, "SELECT id FROM market_calls")) == 20
    await budget.spend()  # at 9 s the lease is ending: the rest go back, a new one is made
    await store.flush()
    times = sorted(r[0] for r in db(store.path, "SELECT sent_at FROM market_calls"))
    assert times == [pytest.approx(start + RESERVE_LEASE_S)] * 3 + \
        [pytest.approx(clock.now() + RESERVE_LEASE_S)] * 3
