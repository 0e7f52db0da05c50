"""Scheduler runs and the worker's outcome rules, on a real SQLite file with scripted
providers behind the provider seam."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from marketd.app import create_daemon
from marketd.clock import FakeClock, iso
from marketd.daemon import Daemon
from marketd.errors import (
    AuthError,
    NotFound,
    QuotaExhausted,
    RateLimited,
    SizeError,
    TransientError,
)
from marketd.models import JobSpec
from marketd.providers.base import FetchResult
from tests.support import ScriptedProvider, make_config, price_for, raising, scripted_factory


@pytest.fixture
async def setup(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[Daemon, dict[str, Any]]]:
    providers = {"stockx": {"limits": ["10/hour"]}, "alias": {"limits": ["100/hour"]},
                 "ebay": {"limits": ["100/hour"]}}
    config = make_config(tmp_path, providers=providers,
                         scheduler={"max_batch_size": 50, "max_retries": 2,
                                    "retry_base_seconds": 10, "retry_max_seconds": 100,
                                    # pacing and the manual reserve have tests of their own
                                    "pacing": False, "manual_reserve": 0})
    registry: dict[str, ScriptedProvider] = {}
    factory = scripted_factory(registry)
    daemon = await create_daemon(config, clock=clock,
                                 clients={"stockx": factory, "alias": factory, "ebay": factory})
    yield daemon, registry
    await daemon.close()


def spec(sku: str = "DD1391-100", size: str | None = "10", provider: str = "stockx",
         priority: int = 100) -> JobSpec:
    return JobSpec(provider, sku, size, priority=priority)


async def test_run_completes_jobs_and_stores_prices(setup: Any) -> None:
    """A run fetches pending jobs, completes them and stores their prices."""
    daemon, registry = setup
    await daemon.enqueue([spec(size="9"), spec(size="10"), spec("AB1234-001", "8")])
    summary = await daemon.scheduler.run_once("test")
    assert summary.as_dict()["succeeded"] == 3
    counts = await daemon.store.job_counts()
    assert counts["stockx"] == {"completed": 3}
    prices = await daemon.store.list_prices(provider="stockx")
    assert {(p["sku"], p["size"]) for p in prices} == {
        ("DD1391-100", "9"), ("DD1391-100", "10"), ("AB1234-001", "8")}
    assert prices[0]["lowest_ask"] == 9600


async def test_jobs_of_one_sku_share_one_call(setup: Any) -> None:
    """Coalescing: sizes of one SKU are one group, one budget token."""
    daemon, registry = setup
    await daemon.enqueue([spec(size=s) for s in ("8", "9", "10", "11")])
    await daemon.scheduler.run_once("test")
    assert registry["stockx"].seen == [("DD1391-100", ["8", "9", "10", "11"])]
    assert daemon.lanes["stockx"].budget.calls == 1


async def test_ebay_does_not_coalesce(setup: Any) -> None:
    """eBay has no product-level call: one group (and call) per job."""
    daemon, registry = setup
    await daemon.enqueue([spec(size=s, provider="ebay") for s in ("8", "9")])
    await daemon.scheduler.run_once("test")
    assert len(registry["ebay"].seen) == 2


async def test_order_is_priority_then_age(setup: Any, clock: FakeClock) -> None:
    """Higher priority first, then older first."""
    daemon, registry = setup
    await daemon.enqueue([spec("AAA-1", priority=100)])
    clock.advance(1)
    await daemon.enqueue([spec("BBB-2", priority=150)])
    clock.advance(1)
    await daemon.enqueue([spec("CCC-3", priority=100)])
    await daemon.scheduler.run_once("test")
    assert [s for s, _ in registry["stockx"].seen] == ["BBB-2", "AAA-1", "CCC-3"]


async def test_selection_respects_remaining_budget(setup: Any) -> None:
    """With 10 calls an hour, a run sends at most 10 and leaves the rest pending."""
    daemon, registry = setup
    await daemon.enqueue([spec(f"SKU-{i}") for i in range(15)])
    summary = (await daemon.scheduler.run_once("test")).as_dict()
    assert summary["succeeded"] == 10
    assert daemon.lanes["stockx"].budget.calls == 10
    counts = await daemon.store.job_counts()
    assert counts["stockx"] == {"completed": 10, "pending": 5}
    again = (await daemon.scheduler.run_once("test")).as_dict()
    assert again["providers"]["stockx"]["skipped"] == "budget"
    budgets = await daemon.store.budgets()
    row = next(b for b in budgets if b["provider"] == "stockx")
    assert (row["used"], row["rate_limit"]) == (10, 10)


async def test_budget_exhausted_mid_batch_defers_without_retry(setup: Any) -> None:
    """A group whose client runs out of budget goes back to pending, retry_count unchanged."""
    daemon, registry = setup
    registry["stockx"].calls_per_group = 4  # 3 groups x 4 calls > 10
    await daemon.enqueue([spec(f"SKU-{i}") for i in range(3)])
    summary = (await daemon.scheduler.run_once("test")).as_dict()
    assert summary["succeeded"] == 2
    assert summary["deferred"] == 1
    pending = await daemon.store.list_jobs(status="pending")
    assert [j.retry_count for j in pending] == [0]
    assert daemon.lanes["stockx"].budget.calls == 10


async def test_not_found_fails_with_provider_named(setup: Any) -> None:
    """404 fails the job with a message naming the provider."""
    daemon, registry = setup
    registry["stockx"].script.append(raising(NotFound("stockx", "not found on stockx: X-1")))
    await daemon.enqueue([spec("X-1")])
    await daemon.scheduler.run_once("test")
    [job] = await daemon.store.list_jobs(status="failed")
    assert "not found on stockx" in (job.error_message or "")


async def test_size_error_fails_only_that_job(setup: Any) -> None:
    """A per-job SizeError fails that job; its siblings complete."""
    daemon, registry = setup

    def answer(sku: str, jobs: Any) -> FetchResult:
        out: dict[str, Any] = {j.id: price_for(j) for j in jobs}
        bad = next(j for j in jobs if j.size == "6")
        out[bad.id] = SizeError("stockx", "UK 6 is ambiguous: EU 39 or EU 40")
        return FetchResult(outcomes=out)

    registry["stockx"].script.append(answer)
    await daemon.enqueue([spec(size="6"), spec(size="7")])
    await daemon.scheduler.run_once("test")
    counts = (await daemon.store.job_counts())["stockx"]
    assert counts == {"completed": 1, "failed": 1}


async def test_429_pauses_provider_and_defers_rest(setup: Any, clock: FakeClock) -> None:
    """429 pauses the provider for Retry-After and returns the batch to pending, no retry;
    a run is woken for the instant the pause ends."""
    daemon, registry = setup
    registry["stockx"].script.append(raising(RateLimited("stockx", retry_after_s=120)))
    await daemon.enqueue([spec(f"SKU-{i}") for i in range(3)])
    summary = (await daemon.scheduler.run_once("test")).as_dict()
    assert summary["deferred"] == 3
    assert len(registry["stockx"].seen) == 1  # stopped after the 429
    pending = await daemon.store.list_jobs(status="pending")
    assert len(pending) == 3 and all(j.retry_count == 0 for j in pending)
    lane = daemon.lanes["stockx"]
    assert lane.paused_until == clock.now() + 120
    skipped = (await daemon.scheduler.run_once("test")).as_dict()
    assert skipped["providers"]["stockx"]["skipped"] == "paused"
    assert daemon.scheduler.wake_at("stockx") == lane.paused_until
    clock.advance(119)
    await daemon.scheduler.idle()
    assert len(registry["stockx"].seen) == 1  # still paused: nothing woke
    clock.advance(1)  # the pause's end: the woken run fetches the batch
    await daemon.scheduler.idle()
    assert (await daemon.store.job_counts())["stockx"] == {"completed": 3}
    runs = await daemon.store.recent_runs()
    assert (runs[0]["trigger"], runs[0]["succeeded"]) == ("pause_end", 3)


async def test_429_without_retry_after_uses_default_pause(setup: Any, clock: FakeClock) -> None:
    """Without Retry-After the provider rests a default minute."""
    daemon, registry = setup
    registry["stockx"].script.append(raising(RateLimited("stockx")))
    await daemon.enqueue([spec()])
    await daemon.scheduler.run_once("test")
    assert daemon.lanes["stockx"].paused_until == clock.now() + 60


async def test_quota_exhausted_pauses_until_reset(setup: Any, clock: FakeClock) -> None:
    """eBay's daily quota pauses eBay until the quota's reset, not a minute."""
    daemon, registry = setup
    registry["ebay"].script.append(raising(QuotaExhausted("ebay", "quota", retry_after_s=5000)))
    await daemon.enqueue([spec(provider="ebay")])
    await daemon.scheduler.run_once("test")
    assert daemon.lanes["ebay"].paused_until == clock.now() + 5000
    state = (await daemon.store.provider_states())["ebay"]
    assert state.pause_reason and state.pause_reason.startswith("quota_exhausted")


async def test_auth_error_pauses_and_names_credential(setup: Any, clock: FakeClock) -> None:
    """401/403 pause the provider for auth_pause_seconds; jobs stay pending, not failed."""
    daemon, registry = setup
    registry["alias"].script.append(
        raising(AuthError("alias", "token refused", credential="ALIAS_API_TOKEN", status=401)))
    await daemon.enqueue([spec(provider="alias"), spec("OTHER-1", provider="alias")])
    await daemon.scheduler.run_once("test")
    lane = daemon.lanes["alias"]
    assert lane.credential == "ALIAS_API_TOKEN"
    assert lane.paused_until == clock.now() + daemon.config.scheduler.auth_pause_seconds
    counts = (await daemon.store.job_counts())["alias"]
    assert counts == {"pending": 2}
    state = (await daemon.store.provider_states())["alias"]
    assert state.credential == "ALIAS_API_TOKEN"


async def test_transient_errors_retry_with_backoff_then_fail(setup: Any, clock: FakeClock) -> None:
    """Transient errors retry with growing backoff up to max_retries, then fail with the error."""
    daemon, registry = setup
    registry["stockx"].default = raising(TransientError("stockx", "HTTP 503", status=503))
    await daemon.enqueue([spec()])
    delays = []
    for _ in range(2):
        await daemon.scheduler.run_once("test")
        [job] = await daemon.store.list_jobs(status="pending")
        assert job.next_attempt_at is not None
        delay = job.next_attempt_at - clock.now()  # (epoch seconds)
        delays.append(delay)
        # not due yet: a run now selects nothing
        idle = (await daemon.scheduler.run_once("test")).as_dict()
        assert idle["selected"] == 0
        clock.advance(delay + 0.01)
        # the retry's own wake fired with the clock and started a run: let it finish, or it
        # races this test's next run for the job (either may take it; both retry it alike)
        await daemon.scheduler.idle()
    assert 8 <= delays[0] <= 12 and 16 <= delays[1] <= 24
    await daemon.scheduler.run_once("test")
    await daemon.scheduler.idle()
    [job] = await daemon.store.list_jobs(status="failed")
    assert job.retry_count == 2
    assert "HTTP 503" in (job.error_message or "")


async def test_client_bug_is_retried_not_fatal(setup: Any) -> None:
    """An unexpected exception in a client counts as transient and never kills the run."""
    daemon, registry = setup

    def boom(sku: str, jobs: Any) -> Any:
        raise KeyError("lowestAskAmount")

    registry["stockx"].script.append(boom)
    await daemon.enqueue([spec()])
    summary = (await daemon.scheduler.run_once("test")).as_dict()
    assert summary["deferred"] == 1
    [job] = await daemon.store.list_jobs(status="pending")
    assert job.retry_count == 1 and "internal error" in (job.error_message or "")


async def test_run_and_batches_are_recorded(setup: Any) -> None:
    """market_job_runs gets one row per run and market_provider_metrics one per batch."""
    daemon, registry = setup
    await daemon.enqueue([spec(), spec(provider="alias")])
    summary = await daemon.scheduler.run_once("cli")
    runs = await daemon.store.recent_runs()
    assert runs[0]["id"] == summary.run_id
    assert (runs[0]["trigger"], runs[0]["selected"], runs[0]["succeeded"]) == ("cli", 2, 2)
    assert runs[0]["finished_at"] is not None
    metrics = await daemon.store.recent_metrics()
    assert sorted((m["provider"], m["batch_size"], m["calls"]) for m in metrics) == [
        ("alias", 1, 1), ("stockx", 1, 1)]


async def test_stuck_running_jobs_are_rescued_each_run(setup: Any, clock: FakeClock) -> None:
    """A job running longer than stuck_after_seconds goes back to pending at the next run."""
    daemon, registry = setup
    await daemon.enqueue([spec()])
    [job] = await daemon.store.claim("stockx", 1)
    clock.advance(daemon.config.scheduler.stuck_after_seconds + 1)
    summary = await daemon.scheduler.run_once("test")
    assert summary.rescued == 1
    assert (await daemon.store.get_job(job.id)).status == "completed"  # type: ignore[union-attr]


async def test_manual_job_joins_a_running_batch(setup: Any) -> None:
    """A manual job enqueued during a long batch is taken in at the next group."""
    daemon, registry = setup
    await daemon.enqueue([spec(f"BG-{i}") for i in range(3)])
    provider = registry["stockx"]
    fired = False

    async def enqueue_manual() -> None:
        nonlocal fired
        if not fired:
            fired = True
            await daemon.enqueue([spec("MANUAL-1", priority=200)])

    provider.hook = enqueue_manual
    await daemon.scheduler.run_once("test")
    order = [s for s, _ in provider.seen]
    assert order[0] == "BG-0" and order[1] == "MANUAL-1"
    assert (await daemon.store.job_counts())["stockx"] == {"completed": 4}


async def test_selection_counts_skus_not_jobs_when_coalescing(setup: Any) -> None:
    """With 10 calls left, a run takes every size of up to 10 SKUs (one call each)."""
    daemon, registry = setup
    await daemon.enqueue([spec(f"SKU-{i}", size) for i in range(12) for size in ("8", "9")])
    summary = (await daemon.scheduler.run_once("test")).as_dict()
    assert summary["succeeded"] == 20
    assert daemon.lanes["stockx"].budget.calls == 10


@pytest.fixture
async def paced(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[Daemon, Any]]:
    """StockX at 100/hour with the default policy: pacing on, 5% kept for manual jobs."""
    config = make_config(tmp_path, providers={"stockx": {"limits": ["100/hour"]},
                                              "alias": {"enabled": False},
                                              "ebay": {"enabled": False}})
    registry: dict[str, ScriptedProvider] = {}
    daemon = await create_daemon(config, clock=clock,
                                 clients={"stockx": scripted_factory(registry)})
    yield daemon, registry
    await daemon.close()


async def test_pacing_spreads_the_hour(paced: Any, clock: FakeClock) -> None:
    """100/hour with 15-minute runs: 25 calls a run; work left due wakes the provider when
    the next slot opens; the last slot leaves 5 calls for manual jobs."""
    daemon, _ = paced
    budget = daemon.lanes["stockx"].budget
    await daemon.enqueue([spec(f"SKU-{i}") for i in range(200)])
    first = (await daemon.scheduler.run_once("interval")).as_dict()
    assert first["calls"] == 25
    for spent in (50, 75, 95):  # 5 calls stay reserved for manual jobs
        clock.advance(900)
        await daemon.scheduler.idle()
        assert budget.calls == spent
    assert (await daemon.store.recent_runs())[0]["trigger"] == "pacing"


async def test_unused_share_carries_to_the_next_run(paced: Any, clock: FakeClock) -> None:
    """A slot with nothing to do leaves its share to the next one."""
    daemon, _ = paced
    clock.advance(1800)  # two slots with nothing queued
    await daemon.enqueue([spec(f"SKU-{i}") for i in range(200)])
    third = (await daemon.scheduler.run_once("interval")).as_dict()
    assert third["calls"] == 50  # max_batch_size (75 allowed)
    again = (await daemon.scheduler.run_once("interval")).as_dict()
    assert again["calls"] == 25


async def test_manual_jobs_use_the_reserve(paced: Any, clock: FakeClock) -> None:
    """When background work has spent its share, a manual job still runs (from the reserve)."""
    daemon, registry = paced
    await daemon.enqueue([spec(f"SKU-{i}") for i in range(200)])
    clock.advance(3 * 900)  # the last slot of the hour: background may spend 95
    summary = (await daemon.scheduler.run_once("interval")).as_dict()
    assert summary["calls"] == 50  # max_batch_size counts calls
    summary = (await daemon.scheduler.run_once("interval")).as_dict()
    assert summary["calls"] == 45
    await daemon.enqueue([spec("MANUAL-1", priority=200)])
    await daemon.enqueue([spec(f"MORE-{i}") for i in range(5)])
    manual = (await daemon.scheduler.run_once("manual", ["stockx"])).as_dict()
    assert manual["calls"] == 1
    assert registry["stockx"].seen[-1][0] == "MANUAL-1"


# ---- wakes: timers on the clock, fired by advancing the FakeClock -----------------------------


async def test_a_manual_enqueue_wakes_a_run_after_manual_wake_ms(setup: Any,
                                                                 clock: FakeClock) -> None:
    """A manual job is fetched by a run woken manual_wake_ms later, with no interval run."""
    daemon, registry = setup
    wake_s = daemon.config.scheduler.manual_wake_ms / 1000
    await daemon.enqueue([spec("MANUAL-1", priority=200)])
    at = clock.now() + wake_s
    assert daemon.scheduler.wake_at("stockx") == at
    assert clock.next_timer() == at
    clock.advance(wake_s / 2)
    await daemon.scheduler.idle()
    assert registry["stockx"].seen == []
    clock.advance(at - clock.now())
    await daemon.scheduler.idle()
    assert registry["stockx"].seen == [("MANUAL-1", ["10"])]
    assert daemon.scheduler.wake_at("stockx") is None
    assert (await daemon.store.job_counts())["stockx"] == {"completed": 1}


async def test_background_enqueues_wake_nothing(setup: Any, clock: FakeClock) -> None:
    daemon, registry = setup
    await daemon.enqueue([spec("BG-1"), spec("BG-2", priority=149)])
    assert daemon.scheduler.wake_at("stockx") is None
    clock.advance(3600)
    await daemon.scheduler.idle()
    assert registry["stockx"].seen == []


async def test_a_run_out_of_budget_wakes_when_a_call_frees(setup: Any, clock: FakeClock) -> None:
    """10/hour spent: the run that finds no budget wakes the provider when the oldest call
    leaves the window, and that run fetches what is left."""
    daemon, registry = setup
    await daemon.enqueue([spec(f"SKU-{i}") for i in range(15)])
    await daemon.scheduler.run_once("test")
    assert daemon.scheduler.wake_at("stockx") is None
    skipped = (await daemon.scheduler.run_once("test")).as_dict()["providers"]["stockx"]
    assert skipped["skipped"] == "budget"
    at = daemon.scheduler.wake_at("stockx")
    assert at is not None and iso(at) == skipped["next_free_at"]
    assert at > clock.now() + 3600  # the window, its margin and the reservation's lease
    clock.advance(at - clock.now() - 1)
    await daemon.scheduler.idle()
    assert len(registry["stockx"].seen) == 10
    clock.advance(1)
    await daemon.scheduler.idle()
    assert len(registry["stockx"].seen) > 10
    assert (await daemon.store.job_counts())["stockx"]["completed"] > 10


async def test_the_earliest_wake_wins(setup: Any, clock: FakeClock) -> None:
    """A manual enqueue during a pause wakes sooner than the pause's end; that run finds the
    provider paused and wakes it again for the end; it then runs once, not twice."""
    daemon, registry = setup
    registry["stockx"].script.append(raising(RateLimited("stockx", retry_after_s=120)))
    await daemon.enqueue([spec("BG-1"), spec("BG-2")])
    await daemon.scheduler.run_once("test")
    paused_until = daemon.lanes["stockx"].paused_until
    assert paused_until is not None
    assert daemon.scheduler.wake_at("stockx") == paused_until
    await daemon.enqueue([spec("MANUAL-1", priority=200)])
    wake_s = daemon.config.scheduler.manual_wake_ms / 1000
    assert daemon.scheduler.wake_at("stockx") == clock.now() + wake_s
    clock.advance(wake_s)
    await daemon.scheduler.idle()
    assert len(registry["stockx"].seen) == 1  # paused: the woken run skipped it
    assert daemon.scheduler.wake_at("stockx") == paused_until
    runs_before = daemon.scheduler.runs_started
    clock.advance(paused_until - clock.now())
    await daemon.scheduler.idle()
    assert daemon.scheduler.runs_started == runs_before + 1
    assert (await daemon.store.job_counts())["stockx"] == {"completed": 3}


async def test_stop_disarms_the_wakes(setup: Any, clock: FakeClock) -> None:
    daemon, registry = setup
    await daemon.enqueue([spec("MANUAL-1", priority=200)])
    assert clock.next_timer() is not None
    await daemon.scheduler.stop(1)
    assert daemon.scheduler.wake_at("stockx") is None
    assert clock.next_timer() is None
    runs = daemon.scheduler.runs_started
    clock.advance(60)
    await daemon.scheduler.idle()
    assert daemon.scheduler.runs_started == runs and registry["stockx"].seen == []


async def test_batch_durations_come_from_the_clock(setup: Any, clock: FakeClock) -> None:
    """A batch whose provider takes 2.5 s of the clock's time lasts 2500 ms."""
    daemon, registry = setup

    async def slow() -> None:
        clock.advance(1.25)

    registry["stockx"].hook = slow
    await daemon.enqueue([spec("A-1"), spec("B-1")])
    summary = (await daemon.scheduler.run_once("test")).as_dict()
    assert summary["providers"]["stockx"]["duration_ms"] == 2500
    assert summary["duration_ms"] == 2500


async def test_shutdown_past_grace_returns_in_flight_jobs(setup: Any) -> None:
    """A batch cut short by the grace bound leaves no job running: the group in flight and
    the rest go back to pending, without a retry spent."""
    import asyncio
    import contextlib

    daemon, registry = setup
    gate = asyncio.Event()  # never set: the provider hangs
    registry["stockx"].hook = gate.wait
    await daemon.enqueue([spec("A-1"), spec("B-1")])
    run = asyncio.create_task(daemon.scheduler.run_once("test"))
    while not registry["stockx"].seen:
        await asyncio.sleep(0)
    await daemon.scheduler.stop(0.05)
    with contextlib.suppress(asyncio.CancelledError):
        await run
    jobs = await daemon.store.list_jobs()
    assert [(j.status, j.retry_count) for j in jobs] == [("pending", 0), ("pending", 0)]


async def test_a_daily_limit_is_paced_across_the_day(tmp_path: Path, clock: FakeClock) -> None:
    """With 1/second and 24000/day, a 15-minute run spends a quarter of 1000 (the day's limit
    per hour), not as much as the per-second pace allows."""
    config = make_config(tmp_path, providers={"stockx": {"limits": ["1/second", "24000/day"]},
                                              "alias": {"enabled": False},
                                              "ebay": {"enabled": False}},
                         scheduler={"max_batch_size": 1000})
    registry: dict[str, ScriptedProvider] = {}
    daemon = await create_daemon(config, clock=clock,
                                 clients={"stockx": scripted_factory(registry)})
    try:
        await daemon.enqueue([spec(f"SKU-{i}") for i in range(400)])
        summary = (await daemon.scheduler.run_once("interval")).as_dict()
        assert summary["calls"] == 250
    finally:
        await daemon.close()
