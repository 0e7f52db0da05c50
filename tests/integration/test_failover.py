"""Two daemons (create_daemon, in one process) on one PostgreSQL database, on a FakeClock: one
daemon runs each provider; a manual enqueue on the other reaches it; when the holder dies
(its lanes' session ends, its heartbeat stops), the other takes its lanes at its next tick and
returns its running jobs to pending once its heartbeat is stale, never before; a graceful
stop hands the lanes over. The ticks are timers on the injected clock: advancing it runs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from marketd.app import create_daemon
from marketd.clock import FakeClock
from marketd.config import parse_config
from marketd.daemon import Daemon
from marketd.instance import DEAD_AFTER_S, TICK_S
from marketd.models import Job, JobSpec, JobStatus, Priority
from marketd.providers.base import FetchResult
from tests.conftest import postgres_database
from tests.support import ScriptedProvider, price_for, scripted_factory

pytest.importorskip("asyncpg")

Make = Callable[[], Any]


@pytest.fixture
async def make(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Make]:
    databases = postgres_database()
    url = await anext(databases)
    made: list[Daemon] = []

    async def build() -> tuple[Daemon, dict[str, ScriptedProvider]]:
        providers = {"stockx": {"limits": ["100/hour"]}, "alias": {"enabled": False},
                     "ebay": {"limits": ["100/hour"]}}
        config = parse_config({"database": {"url": url}, "server": {"port": 0},
                               "providers": providers,
                               "scheduler": {"pacing": False, "manual_reserve": 0}}, env={})
        registry: dict[str, ScriptedProvider] = {}
        factory = scripted_factory(registry)
        daemon = await create_daemon(config, clock=clock,
                                     clients={"stockx": factory, "ebay": factory})
        made.append(daemon)

        def answer(sku: str, jobs: Sequence[Job]) -> FetchResult:
            return FetchResult(outcomes={j.id: price_for(j, 9600, clock.now()) for j in jobs})

        for provider in registry.values():
            provider.default = answer
        assert daemon.instance is not None
        daemon.instance.run()
        return daemon, registry

    try:
        yield build
    finally:
        for daemon in made:
            await daemon.close()
        await databases.aclose()


async def tick(clock: FakeClock, *daemons: Daemon, seconds: float = TICK_S) -> None:
    """Advance the clock (the ticks' timers fire) and let the ticks and runs finish."""
    clock.advance(seconds)
    for _ in range(3):
        for d in daemons:
            assert d.instance is not None
            if d.instance._tasks:
                await asyncio.wait(list(d.instance._tasks))
            await d.scheduler.idle()


def held(d: Daemon) -> list[str]:
    assert d.instance is not None
    return d.instance.held()


async def test_one_daemon_runs_each_provider_and_the_other_takes_over(
        make: Make, clock: FakeClock) -> None:
    a, _ = await make()
    b, b_clients = await make()
    assert held(a) == ["ebay", "stockx"] and held(b) == []
    rows = {r["id"]: r for r in await b.store.instances()}
    assert rows[a.instance.id]["lanes"] == ["ebay", "stockx"]  # type: ignore[union-attr]

    # a's batch is cut short by its death: two jobs left running under its instance
    await a.store.enqueue([JobSpec("stockx", "X-1", "9"), JobSpec("stockx", "X-2", "9")], 0)
    stranded = await a.store.claim("stockx", 2)
    summary = await b.scheduler.run_once("manual")
    assert summary.providers["stockx"] == {"skipped": "another daemon runs it"}

    # a dies: its lanes' session ends (the server drops its locks), its ticks stop
    assert a.instance is not None
    a.instance.stopping = True
    await a.instance.locks.close()
    await tick(clock, b)  # a's heartbeat is still fresh: b takes its share (one lane) ...
    assert len(held(b)) == 1
    await tick(clock, b)  # ... and, a tick later, the lane nobody took
    assert held(b) == ["ebay", "stockx"]
    for job in stranded:  # a's heartbeat is not stale yet: its jobs stay a's
        got = await b.store.get_job(job.id)
        assert got is not None and got.status == JobStatus.RUNNING
    await tick(clock, b, seconds=DEAD_AFTER_S)  # stale: back to pending, and b woken
    await tick(clock, b)
    for job in stranded:  # run by b
        got = await b.store.get_job(job.id)
        assert got is not None and got.status == JobStatus.COMPLETED
    assert sorted(sku for sku, _ in b_clients["stockx"].seen) == ["X-1", "X-2"]


async def test_the_lanes_spread_over_the_live_daemons(make: Make, clock: FakeClock) -> None:
    """The first daemon up takes every lane; at its next tick it gives back what is beyond
    its fair share (lanes / live daemons) and the other daemon takes it: each runs one."""
    a, _ = await make()
    b, _ = await make()
    assert held(a) == ["ebay", "stockx"] and held(b) == []
    await tick(clock, a, b)
    for _ in range(200):  # the give-back's wake-up (a real NOTIFY) reaches b
        if held(b):
            break
        await asyncio.sleep(0.01)
    await tick(clock, a, b)
    assert len(held(a)) == len(held(b)) == 1
    assert sorted(held(a) + held(b)) == ["ebay", "stockx"]
    await tick(clock, a, b)  # stable: nobody gives back within its share
    assert len(held(a)) == len(held(b)) == 1


async def test_a_manual_enqueue_reaches_the_lane_holder(make: Make, clock: FakeClock) -> None:
    a, a_clients = await make()
    b, _ = await make()
    [r] = await b.enqueue([JobSpec("ebay", "M-1", "9", priority=int(Priority.MANUAL))])
    assert a.instance is not None
    for _ in range(200):  # the NOTIFY's delivery (a real event) arms a's wake timer
        if a.scheduler.wake_at("ebay") is not None:
            break
        await asyncio.sleep(0.01)
    await tick(clock, a, b, seconds=1)
    got = await a.store.get_job(str(r.id))
    assert got is not None and got.status == JobStatus.COMPLETED
    assert a_clients["ebay"].seen == [("M-1", ["9"])]


async def test_a_graceful_stop_hands_the_lanes_over(make: Make, clock: FakeClock) -> None:
    a, _ = await make()
    b, _ = await make()
    await a.store.enqueue([JobSpec("stockx", "S-1", "9")], 0)
    [job] = await a.store.claim("stockx", 1)
    await a.close()  # its own running job back to pending; its lanes released, b woken
    got = await b.store.get_job(job.id)
    assert got is not None and got.status == JobStatus.PENDING
    for _ in range(200):  # the wake-up's delivery: b takes the free lanes at once
        if held(b) == ["ebay", "stockx"]:
            break
        await asyncio.sleep(0.01)
    assert held(b) == ["ebay", "stockx"]
    assert [r["id"] for r in await b.store.instances()] == [b.instance.id]  # type: ignore[union-attr]
