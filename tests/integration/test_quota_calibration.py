"""The provider's own quota count lowers the budget: eBay's getRateLimits, read hourly by the
scheduler, keeps marketd from running into a quota that other apps on the key have spent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from marketd.app import create_daemon
from marketd.budget import ProviderBudget
from marketd.clock import FakeClock
from marketd.config import ProviderConfig
from marketd.errors import BudgetExhausted
from marketd.models import JobSpec
from marketd.ratelimit import parse_limit
from marketd.scheduler import QUOTA_CHECK_S
from marketd.simulator import ProviderOptions, SimulatorOptions, create_simulator_app
from marketd.store import Store
from marketd.web import create_app
from tests.support import make_config

SKUS = ("DD1391-100", "DZ5485-612", "555088-134", "B75806", "FZ5897-072", "CW2288-111")


async def test_budget_never_plans_past_the_providers_own_count(store: Store,
                                                               clock: FakeClock) -> None:
    config = ProviderConfig(name="ebay", limits=(parse_limit("150/hour"),))
    budget = ProviderBudget(config, store, clock, margin_s=0)
    reset_at = clock.now() + 7200
    budget.calibrate(3, reset_at)
    assert budget.capacity(clock.now(), 900) == 3
    budget.ahead = 10  # a batch of ten reserves only what the provider has left
    for _ in range(3):
        await budget.spend()
    with pytest.raises(BudgetExhausted) as info:
        await budget.spend()
    assert info.value.retry_at == reset_at
    assert budget.capacity(clock.now(), 900) == 0
    budget.release()
    await store.flush()
    assert len(await store.load_calls("ebay", 0.0)) == 3
    clock.advance(7200)  # the provider has reset: the configured limits alone apply again
    assert budget.quota_left(clock.now()) is None
    await budget.spend()


@pytest.fixture
async def ebay_sim(clock: FakeClock) -> AsyncIterator[TestServer]:
    options = SimulatorOptions(ebay=ProviderOptions(daily_limit=4), strict_tokens=False)
    server = TestServer(create_simulator_app(options, clock))
    await server.start_server()
    yield server
    await server.close()


async def test_scheduler_stops_at_the_quota_without_a_429(tmp_path: Path, clock: FakeClock,
                                                          ebay_sim: TestServer) -> None:
    base = str(ebay_sim.make_url("")).rstrip("/")
    config = make_config(tmp_path, providers={
        "stockx": {"enabled": False}, "alias": {"enabled": False},
        "ebay": {"limits": ["150/hour"], "base_url": base, "client_id": "c",
                 "client_secret": "s"}})
    daemon = await create_daemon(config, clock=clock)
    try:
        # manual refreshes: they may use the last calls of the quota (background and hot
        # jobs leave manual_reserve of it, here more than the 4 left)
        await daemon.enqueue([JobSpec("ebay", sku, size, priority=200)
                              for sku in SKUS for size in ("9", "10")])
        first = await daemon.scheduler.run_once("cli")
        assert first.providers["ebay"]["calls"] == 4
        second = await daemon.scheduler.run_once("cli")
        assert second.providers["ebay"]["skipped"] == "budget"
        assert second.providers["ebay"]["next_free_at"] == "2026-01-01T08:00:00.000Z"
        stats = await stats_of(ebay_sim)
        assert stats["requests"] == 4 and stats["rate_limited"] == 0
        assert (await daemon.store.job_counts())["ebay"]["pending"] == 8
        # the status page and /status say what eBay said
        client = TestClient(TestServer(create_app(daemon), host="127.0.0.1"))
        await client.start_server()
        try:
            status = await (await client.get("/status")).json()
            assert status["budgets"]["ebay"]["provider_quota"] == {
                "remaining": 0, "resets_at": "2026-01-01T08:00:00.000Z"}
            page = await (await client.get("/")).text()
            assert "says 0 call(s) are left of the key" in page
            assert "quota until 2026-01-01T08:00:00.000Z" in page
        finally:
            await client.close()
        assert clock.now() + 8 * 3600 >= daemon.lanes["ebay"].quota_checked_at + QUOTA_CHECK_S
        clock.advance(8 * 3600)  # past midnight Pacific: eBay's count starts again, and the
        await daemon.scheduler.idle()  # run woken for the reset fetches what it allows
        third = (await daemon.store.recent_runs())[0]
        assert (third["trigger"], third["succeeded"]) == ("manual", 4)
        stats = await stats_of(ebay_sim)
        assert stats["requests"] == 8 and stats["rate_limited"] == 0
    finally:
        await daemon.close()


async def stats_of(server: TestServer) -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as session, \
            session.get(server.make_url("/_sim/stats")) as resp:
        return (await resp.json())["providers"]["ebay"]
