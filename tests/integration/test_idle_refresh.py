"""Budget no queued job needs refreshes the oldest prices users asked for, instead of going
unused (scheduler.idle_refresh_seconds)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from marketd.app import create_daemon
from marketd.clock import FakeClock
from marketd.daemon import Daemon
from marketd.models import Job, JobSpec
from marketd.providers.base import FetchResult
from marketd.scheduler import IDLE_REFRESH_PRIORITY
from tests.support import ScriptedProvider, make_config, price_for, scripted_factory

Make = Callable[..., Any]


@pytest.fixture
async def make(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Make]:
    made: list[Daemon] = []

    async def build(limit: str = "100/hour", max_batch_size: int = 50,
                    **scheduler: Any) -> tuple[Daemon, dict[str, ScriptedProvider]]:
        providers = {"stockx": {"limits": [limit]}, "alias": {"enabled": False},
                     "ebay": {"limits": [limit]}}
        config = make_config(tmp_path / f"d{len(made)}", providers=providers, scheduler={
            "max_batch_size": max_batch_size, "pacing": False, "manual_reserve": 0,
            **scheduler})
        (tmp_path / f"d{len(made)}").mkdir()
        registry: dict[str, ScriptedProvider] = {}
        factory = scripted_factory(registry)
        daemon = await create_daemon(config, clock=clock,
                                     clients={"stockx": factory, "ebay": factory})
        made.append(daemon)

        def answer(sku: str, jobs: Sequence[Job]) -> FetchResult:
            return FetchResult(outcomes={j.id: price_for(j, 9600, clock.now()) for j in jobs})

        for provider in registry.values():
            provider.default = answer
        return daemon, registry

    yield build
    for daemon in made:
        await daemon.close()


def specs(skus: Sequence[str], sizes: Sequence[str] = ("9", "10"), provider: str = "stockx",
          priority: int = 100) -> list[JobSpec]:
    return [JobSpec(provider, sku, size, priority=priority) for sku in skus for size in sizes]


async def test_spare_calls_refresh_the_oldest_prices_users_asked_for(
        make: Make, clock: FakeClock) -> None:
    daemon, registry = await make(max_batch_size=2)
    for sku in ("A-1", "B-1", "C-1"):  # fetched a minute apart: A oldest
        await daemon.enqueue(specs([sku]))
        await daemon.scheduler.run_once("test")
        clock.advance(60)
    registry["stockx"].seen.clear()
    clock.advance(3600)
    summary = await daemon.scheduler.run_once("test")
    # two spare calls, one per SKU, every size the user asked for: the two oldest
    assert [(sku, sorted(sizes)) for sku, sizes in registry["stockx"].seen] == [
        ("A-1", ["10", "9"]), ("B-1", ["10", "9"])]
    assert summary.providers["stockx"]["succeeded"] == 4
    jobs = await daemon.store.list_jobs(status="completed")
    assert sum(1 for j in jobs if j.priority == IDLE_REFRESH_PRIORITY) == 4
    prices = {(p["sku"], p["size"]): p["fetched_at"] for p in await daemon.store.list_prices()}
    assert prices[("A-1", "9")] > prices[("C-1", "9")]


async def test_queued_jobs_come_first_and_fresh_prices_wait(make: Make,
                                                            clock: FakeClock) -> None:
    daemon, registry = await make(max_batch_size=2)
    await daemon.enqueue(specs(["A-1", "B-1"]))
    await daemon.scheduler.run_once("test")
    clock.advance(3601)
    await daemon.enqueue(specs(["C-1", "D-1"]))  # two queued SKUs fill the run's two calls
    registry["stockx"].seen.clear()
    await daemon.scheduler.run_once("test")
    assert [sku for sku, _ in registry["stockx"].seen] == ["C-1", "D-1"]
    registry["stockx"].seen.clear()
    await daemon.scheduler.run_once("test")  # now A and B are the spare calls' work
    assert sorted(sku for sku, _ in registry["stockx"].seen) == ["A-1", "B-1"]
    registry["stockx"].seen.clear()
    clock.advance(600)  # nothing is older than an hour now
    await daemon.scheduler.run_once("test")
    assert registry["stockx"].seen == []


async def test_only_what_users_asked_recently_and_never_past_the_budget(
        make: Make, clock: FakeClock) -> None:
    daemon, registry = await make(limit="3/hour")
    await daemon.enqueue(specs(["A-1", "B-1"]))
    await daemon.scheduler.run_once("test")
    clock.advance(3601)
    # the idle refreshes of A and B themselves do not count as asking again
    for _ in range(7 * 24 - 1):
        await daemon.scheduler.run_once("test")
        clock.advance(3600)
    assert daemon.lanes["stockx"].budget.log.count_in(3600, clock.now()) <= 3
    registry["stockx"].seen.clear()
    clock.advance(2 * 3600)  # a week since a user asked: no more refreshes
    await daemon.scheduler.run_once("test")
    assert registry["stockx"].seen == []


async def test_ebay_refreshes_keys_not_skus_and_zero_turns_it_off(make: Make,
                                                                  clock: FakeClock) -> None:
    daemon, registry = await make(max_batch_size=3)
    await daemon.enqueue(specs(["A-1"], sizes=("8", "9", "10", "11"), provider="ebay"))
    await daemon.scheduler.run_once("test")
    registry["ebay"].seen.clear()
    clock.advance(3601)
    await daemon.scheduler.run_once("test")
    assert len(registry["ebay"].seen) == 3  # three spare calls: three keys
    off, off_registry = await make(idle_refresh_seconds=0)
    await off.enqueue(specs(["A-1"]))
    await off.scheduler.run_once("test")
    off_registry["stockx"].seen.clear()
    clock.advance(3 * 3600)
    await off.scheduler.run_once("test")
    assert off_registry["stockx"].seen == []


async def test_manual_only_runs_do_not_refresh(make: Make, clock: FakeClock) -> None:
    """When only the manual reserve is left, the spare calls are the reserve's."""
    daemon, registry = await make(limit="4/hour", manual_reserve=0.5,
                                  idle_refresh_seconds=1800)
    await daemon.enqueue(specs(["A-1", "B-1"]))
    await daemon.scheduler.run_once("test")  # 2 calls: what is left (2) is the reserve
    registry["stockx"].seen.clear()
    clock.advance(1801)  # stale, and both calls still in the hour's window
    await daemon.scheduler.run_once("test")
    assert registry["stockx"].seen == []
    # the run the window cut short is woken again when its oldest call leaves the window
    # (calls reserved ahead count 10 s later); that run refreshes them
    frees = daemon.lanes["stockx"].budget.log.frees_at(clock.now())
    assert frees is not None
    assert daemon.scheduler.wake_at("stockx") == frees + 0.001
    clock.advance(frees - clock.now())
    await daemon.scheduler.idle()
    assert registry["stockx"].seen == []
    clock.advance(0.001)
    await daemon.scheduler.idle()
    assert sorted(sku for sku, _ in registry["stockx"].seen) == ["A-1", "B-1"]
