"""Due work gets done when it is due (issue 14), on a real SQLite file with scripted providers
and the FakeClock: no interval run ever fires here (the scheduler is not started), so every
fetch below was started by a wake, a timer on the injected clock that advancing it fires.

- the manual reserve holds: catalog look-ups are counted before they happen, a look-up that
  would cross into the reserve waits, a manual refresh is priced after any background spend;
- a retry coming due, a hot enqueue (a burst makes one run), reset-failed (HTTP or page, and
  the CLI writing the file), the end of a pause each start a run for that provider;
- aging: background jobs are not starved by a stream of hot ones, and never pass manual;
- honest counts: 429s per batch in market_provider_metrics, a crashed batch's run says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from marketd.app import create_daemon
from marketd.clock import FakeClock
from marketd.daemon import Daemon
from marketd.errors import RateLimited, TransientError
from marketd.models import Job, JobSpec, Priority
from marketd.providers.base import FetchResult, ProviderContext
from marketd.store import SQLiteStore
from tests.support import ScriptedProvider, make_config, raising


class LookupProvider(ScriptedProvider):
    """Like StockX: a SKU not in market_catalog costs two look-up calls (search, variants)
    before its price call. ``lookups_hidden`` makes it spend them without saying so
    (``calls_for`` answers 1): the budget must still keep the reserve."""

    lookup_calls = 2
    lookups_hidden = False

    async def calls_for(self, sku: str) -> int:
        return 1 if self.lookups_hidden else await super().calls_for(sku)

    async def fetch_group(self, sku: str, jobs: Sequence[Job]) -> FetchResult:
        if self.lookup_calls and await self.ctx.store.get_catalog(self.name, sku) is None:
            await self.ctx.budget.spend()  # search
            await self.ctx.budget.spend()  # variants
            await self.ctx.store.put_catalog(self.name, sku, product_id=f"id-{sku}")
        return await super().fetch_group(sku, jobs)


def lookup_factory(registry: dict[str, ScriptedProvider]) -> Any:
    def make(ctx: ProviderContext) -> LookupProvider:
        p = LookupProvider(ctx)
        p.name = ctx.config.name  # type: ignore[misc]
        registry[ctx.config.name] = p
        return p

    return make


Made = tuple[Daemon, dict[str, ScriptedProvider]]


@pytest.fixture
async def make(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Any]:
    made: list[Daemon] = []

    async def build(limits: Sequence[str] = ("40/hour",), lookups: bool = False,
                    **scheduler: Any) -> Made:
        config = make_config(tmp_path, providers={"stockx": {"limits": list(limits)},
                                                  "alias": {"enabled": False},
                                                  "ebay": {"enabled": False}},
                             scheduler={"retry_base_seconds": 10, "retry_max_seconds": 100,
                                        **scheduler})
        registry: dict[str, ScriptedProvider] = {}
        daemon = await create_daemon(config, clock=clock,
                                     clients={"stockx": lookup_factory(registry)})
        made.append(daemon)
        if not lookups:  # every SKU as if cached: one call each
            registry["stockx"].lookup_calls = 0  # type: ignore[misc]
        return daemon, registry

    yield build
    for daemon in made:
        await daemon.close()


def spec(sku: str, priority: int = int(Priority.BACKGROUND), size: str = "10") -> JobSpec:
    return JobSpec("stockx", sku, size, priority=priority)


async def advance(daemon: Daemon, clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    await daemon.scheduler.idle()


async def counts(daemon: Daemon) -> dict[str, int]:
    return (await daemon.store.job_counts()).get("stockx", {})


# ---- 1. the manual reserve holds ---------------------------------------------------------------


async def test_lookups_are_counted_and_a_manual_refresh_is_priced_after_background_spend(
        make: Any, clock: FakeClock) -> None:
    """40/hour, 30 new SKUs at background priority: the run counts each first fetch as three
    calls, takes only what fits short of the reserve (2 of 40), leaves the rest pending for the
    next run; a manual refresh of a cached SKU is then priced manual_wake_ms later."""
    daemon, registry = await make(pacing=False, lookups=True)
    await daemon.enqueue([spec(f"NEW-{i}") for i in range(30)])
    summary = (await daemon.scheduler.run_once("interval")).as_dict()
    budget = daemon.lanes["stockx"].budget
    assert summary["succeeded"] == 12 and summary["calls"] == 36  # 12 SKUs x 3 calls <= 38
    assert budget.calls == 36
    assert (await counts(daemon)) == {"completed": 12, "pending": 18}
    # a second run: 2 calls short of the reserve, a new SKU costs 3: it waits
    again = (await daemon.scheduler.run_once("interval")).as_dict()
    assert again["calls"] == 0 and budget.calls == 36
    await daemon.enqueue([spec("NEW-0", int(Priority.MANUAL), size="9")])  # cached SKU
    await advance(daemon, clock, daemon.config.scheduler.manual_wake_ms / 1000)
    sku, sizes = registry["stockx"].seen[-1]
    assert sku == "NEW-0" and "9" in sizes  # (its other size rides along: one call)
    assert budget.calls == 37
    [manual] = [j for j in await daemon.store.list_jobs(status="completed")
                if j.priority == int(Priority.MANUAL)]
    assert manual.size == "9"


async def test_a_lookup_that_would_cross_into_the_reserve_waits(make: Any,
                                                                clock: FakeClock) -> None:
    """A client whose look-ups the run could not foresee: the budget itself stops background
    work at the reserve, before the call; the job goes back to pending, no retry spent, and
    the reserve is still there for a manual job."""
    daemon, registry = await make(pacing=False, lookups=True)
    provider = registry["stockx"]
    assert isinstance(provider, LookupProvider)
    provider.lookups_hidden = True
    await daemon.enqueue([spec(f"NEW-{i}") for i in range(30)])
    summary = (await daemon.scheduler.run_once("interval")).as_dict()
    budget = daemon.lanes["stockx"].budget
    assert budget.calls <= 38  # never into the last 2 of 40
    assert summary["providers"]["stockx"]["stopped_by"] == "budget"
    pending = await daemon.store.list_jobs(status="pending")
    assert pending and all(j.retry_count == 0 for j in pending)
    await daemon.enqueue([spec("NEW-0", int(Priority.MANUAL), size="9")])
    await advance(daemon, clock, 1)
    assert provider.seen[-1][0] == "NEW-0" and "9" in provider.seen[-1][1]


async def test_the_reserve_is_kept_of_every_limit(make: Any) -> None:
    """40/hour and 60/day: background work leaves 5% of each (2 and 3)."""
    daemon, _ = await make(limits=("40/hour", "60/day"), pacing=False)
    budget = daemon.lanes["stockx"].budget
    now = daemon.clock.now()
    assert budget.capacity(now, 900) == 40
    assert budget.capacity(now, 900, background=True) == 38


# ---- 2. due work wakes its provider ------------------------------------------------------------


async def test_a_retry_coming_due_wakes_its_provider(make: Any, clock: FakeClock) -> None:
    """A 503 schedules a retry with backoff; the run is woken at that instant, not at the
    next interval, and fetches it."""
    daemon, registry = await make()
    registry["stockx"].script.append(raising(TransientError("stockx", "HTTP 503", status=503)))
    await daemon.enqueue([spec("A-1")])
    await daemon.scheduler.run_once("interval")
    [job] = await daemon.store.list_jobs(status="pending")
    assert job.retry_count == 1 and job.next_attempt_at is not None
    assert daemon.scheduler.wake_at("stockx") == pytest.approx(job.next_attempt_at, abs=0.001)
    await advance(daemon, clock, job.next_attempt_at - clock.now() - 0.01)
    assert (await counts(daemon)) == {"pending": 1}
    await advance(daemon, clock, 0.02)
    assert (await counts(daemon)) == {"completed": 1}
    assert (await daemon.store.recent_runs())[0]["trigger"] == "retry"


async def test_a_burst_of_hot_adds_makes_one_run_within_hot_wake_seconds(
        make: Any, clock: FakeClock) -> None:
    daemon, registry = await make()
    hot = int(Priority.HOT)
    await daemon.enqueue([spec("HOT-1", hot)])
    at = clock.now() + daemon.config.scheduler.hot_wake_seconds
    assert daemon.scheduler.wake_at("stockx") == at
    for i in range(2, 5):
        await advance(daemon, clock, 5)
        await daemon.enqueue([spec(f"HOT-{i}", hot)])
        assert daemon.scheduler.wake_at("stockx") == at  # the first add's wake holds
    runs = daemon.scheduler.runs_started
    await advance(daemon, clock, at - clock.now())
    assert daemon.scheduler.runs_started == runs + 1
    assert (await counts(daemon)) == {"completed": 4}
    assert (await daemon.store.recent_runs())[0]["trigger"] == "hot"


async def test_hot_wake_seconds_is_configurable(make: Any, clock: FakeClock) -> None:
    daemon, _ = await make(hot_wake_seconds=5)
    await daemon.enqueue([spec("HOT-1", int(Priority.HOT))])
    assert daemon.scheduler.wake_at("stockx") == clock.now() + 5


async def test_reset_failed_over_http_and_the_page_wakes_its_provider(
        make: Any, clock: FakeClock) -> None:
    daemon, registry = await make(max_retries=0)
    registry["stockx"].script.append(raising(TransientError("stockx", "HTTP 503", status=503)))
    await daemon.enqueue([spec("A-1")])
    await daemon.scheduler.run_once("interval")
    assert (await counts(daemon)) == {"failed": 1}
    assert daemon.scheduler.wake_at("stockx") is None
    assert await daemon.reset_failed() == 1  # what POST /reset-failed and the page call
    wake_s = daemon.config.scheduler.manual_wake_ms / 1000
    assert daemon.scheduler.wake_at("stockx") == clock.now() + wake_s
    await advance(daemon, clock, wake_s)
    assert (await counts(daemon)) == {"completed": 1}
    assert (await daemon.store.recent_runs())[0]["trigger"] == "reset"


async def test_reset_failed_by_the_cli_wakes_the_daemon(make: Any, clock: FakeClock,
                                                        tmp_path: Path) -> None:
    """The CLI writes the SQLite file directly: the daemon's next instance tick sees another
    process's write (PRAGMA data_version) and wakes the providers with due work."""
    daemon, registry = await make(max_retries=0)
    assert daemon.instance is not None
    daemon.instance.run()
    registry["stockx"].script.append(raising(TransientError("stockx", "HTTP 503", status=503)))
    await daemon.enqueue([spec("A-1")])
    await daemon.scheduler.run_once("interval")
    await advance(daemon, clock, 1)  # a tick with no outside write: nothing woken
    assert daemon.scheduler.wake_at("stockx") is None
    cli = await SQLiteStore.open(str(tmp_path / "marketd.db"), clock)
    try:
        assert await cli.reset_failed("stockx") == 1
    finally:
        await cli.close()
    clock.advance(1)  # the tick
    while daemon.instance._tasks:
        await daemon.instance._tasks.copy().pop()
    await daemon.scheduler.idle()
    assert daemon.scheduler.wake_at("stockx") is not None
    await advance(daemon, clock, 1)
    assert (await counts(daemon)) == {"completed": 1}
    assert (await daemon.store.recent_runs())[0]["trigger"] == "written"


async def test_a_429_on_the_last_group_wakes_at_the_pause_end(make: Any,
                                                              clock: FakeClock) -> None:
    daemon, registry = await make()
    registry["stockx"].script.append(raising(RateLimited("stockx", retry_after_s=90)))
    await daemon.enqueue([spec("A-1")])
    await daemon.scheduler.run_once("interval")
    lane = daemon.lanes["stockx"]
    assert lane.paused_until == clock.now() + 90
    assert daemon.scheduler.wake_at("stockx") == lane.paused_until
    await advance(daemon, clock, 90)
    assert (await counts(daemon)) == {"completed": 1}


async def test_a_paced_out_run_wakes_at_the_next_pacing_slot(make: Any,
                                                             clock: FakeClock) -> None:
    """Pacing spent this slot's share: the provider is woken when the next slot opens, not
    at the next interval tick (which need not fall on a slot's start)."""
    daemon, registry = await make(limits=("40/hour",))
    await daemon.enqueue([spec(f"BG-{i}") for i in range(15)])
    first = (await daemon.scheduler.run_once("interval")).as_dict()
    assert first["calls"] == 10  # a quarter of 40
    slot = clock.now() - clock.now() % 900 + 900
    assert daemon.scheduler.wake_at("stockx") == slot
    await advance(daemon, clock, slot - clock.now())
    assert "pending" not in await counts(daemon)
    assert (await daemon.store.recent_runs())[-2]["trigger"] == "pacing"


# ---- 3. starvation -----------------------------------------------------------------------------


async def test_aging_lets_background_work_through_a_stream_of_hot_jobs(
        make: Any, clock: FakeClock) -> None:
    """One call per 90 s and a new hot job every 45 s: without aging the background job would
    wait for ever. Once it waited aging_seconds it counts as hot and, older than every hot
    job, goes next, while hot jobs are still queued."""
    daemon, registry = await make(limits=("1/90s",), aging_seconds=600, hot_wake_seconds=0,
                                  pacing=False, manual_reserve=0)
    start = clock.now()
    await daemon.enqueue([spec("BG-1")])
    seen = registry["stockx"].seen
    for i in range(30):
        await daemon.enqueue([spec(f"HOT-{i}", int(Priority.HOT))])
        await advance(daemon, clock, 45)
        if ("BG-1", ["10"]) in seen:
            break
    assert ("BG-1", ["10"]) in seen
    assert 600 <= clock.now() - start <= 600 + 60 + 90 + 45
    assert (await counts(daemon))["pending"] > 0  # hot jobs still waiting


async def test_aging_never_passes_manual(make: Any, clock: FakeClock) -> None:
    daemon, registry = await make(limits=("1/hour",), aging_seconds=60, manual_reserve=0)
    await daemon.enqueue([spec("OLD-1")])
    clock.advance(3600)
    await daemon.enqueue([spec("MANUAL-1", int(Priority.MANUAL))])
    await daemon.scheduler.run_once("interval")
    [old] = await daemon.store.list_jobs(status="pending")
    assert old.sku == "OLD-1" and old.priority == int(Priority.MANUAL) - 1
    assert registry["stockx"].seen == [("MANUAL-1", ["10"])]


# ---- 4. honest counts --------------------------------------------------------------------------


async def test_a_429_is_counted_in_the_batch_metrics(make: Any) -> None:
    daemon, registry = await make(pacing=False)
    registry["stockx"].script.append(raising(RateLimited("stockx", retry_after_s=30)))
    await daemon.enqueue([spec("A-1"), spec("B-1")])
    summary = (await daemon.scheduler.run_once("interval")).as_dict()
    assert summary["providers"]["stockx"]["rate_limited"] == 1
    [row] = await daemon.store.recent_metrics()
    assert row["rate_limited"] == 1


async def test_a_crashed_batch_says_so_in_the_run(make: Any) -> None:
    daemon, _ = await make()

    async def crash(*_: Any) -> Any:
        raise RuntimeError("disk on fire")

    daemon.scheduler.worker.run_batch = crash  # type: ignore[method-assign]
    await daemon.enqueue([spec("A-1")])
    summary = await daemon.scheduler.run_once("interval")
    assert summary.outcome == "error"
    assert "disk on fire" in summary.as_dict()["providers"]["stockx"]["error"]
    assert (await daemon.store.recent_runs())[0]["outcome"] == "error"
