"""Retention on every backend of tests/conftest.py's STORE_BACKENDS: what each kind prunes,
what it never prunes, batches, dry-run counts and the database's figures; the daemon's daily
prune."""

from __future__ import annotations

import pytest

from marketd.clock import FakeClock
from marketd.config_data import RetentionConfig
from marketd.models import JobSpec, Price
from marketd.retention import Retention, prune
from marketd.store import Outcomes, Store
from tests.conftest import STORE_BACKENDS

DAY = 86400.0
METRICS = {"provider": "stockx", "batch_size": 1, "succeeded": 1, "failed": 0, "deferred": 0,
           "calls": 1, "rate_limited": 0, "duration_ms": 5}


@pytest.fixture(params=sorted(STORE_BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def day_of_work(store: Store, clock: FakeClock, sku: str, ask: int) -> None:
    """One run with one batch: a job completed, a failed one, a price, a metrics row."""
    run_id, _ = await store.begin_run("interval", {"stockx": 100}, 600, clock.now() - 3600)
    await store.enqueue([JobSpec("stockx", sku, "10"), JobSpec("stockx", sku, "11")], 0)
    ok, bad = await store.claim("stockx", 2)
    price = Price("stockx", sku, "10", "GBP", ask, None, None, clock.now())
    await store.record(Outcomes(completed=[ok.id], failed=[(bad.id, "not found")],
                                prices=[price]))
    store.record_metrics_soon(run_id=run_id, **METRICS)
    await store.finish_run(run_id, selected=2, succeeded=1, failed=1, deferred=0, rescued=0,
                           duration_ms=5, outcome="ok")
    await store.flush()


async def test_prune_by_kind_in_batches(store: Store, clock: FakeClock) -> None:
    """Ten days of work, pruned to the last three: finished jobs, runs, metrics and history
    older than that go (in batches of 2); pending jobs and each key's newest point stay;
    the dry run counts exactly what the prune then deletes."""
    for day in range(10):
        await day_of_work(store, clock, "A-1", 100 + day)   # changes daily: 10 points
        await day_of_work(store, clock, f"B-{day}", 5)      # a key a day, one point each
        clock.advance(DAY)
    await store.enqueue([JobSpec("stockx", "OLD-PENDING", "9")], 0)  # never pruned
    before = (await store.database_stats())["rows"]
    assert before["market_jobs"] == 41 and before["market_job_runs"] == 20
    cfg = RetentionConfig(jobs_days=3, history_days=3, runs_days=3, metrics_days=3,
                          batch_rows=2)
    now = clock.now() - 60
    counted = await prune(store, cfg, now, dry_run=True)
    assert (await store.database_stats())["rows"] == before
    done = await prune(store, cfg, now)
    assert {k: v["rows"] for k, v in done.items()} == {k: v["rows"] for k, v in counted.items()}
    rows = (await store.database_stats())["rows"]
    # days 7, 8 and 9 are younger than 3 days
    assert rows["market_jobs"] == 3 * 4 + 1
    assert rows["market_job_runs"] == 6 and rows["market_provider_metrics"] == 6
    assert len(await store.price_history("stockx", "A-1", "10")) == 3
    for day in range(7):  # an old key keeps its one (newest) point
        assert len(await store.price_history("stockx", f"B-{day}", "10")) == 1
    assert [j.sku for j in await store.list_jobs(status="pending")] == ["OLD-PENDING"]
    again = await prune(store, cfg, now)
    assert all(v["rows"] == 0 for v in again.values())


async def test_runs_take_their_metrics_and_zero_keeps_forever(
        store: Store, clock: FakeClock) -> None:
    await day_of_work(store, clock, "A-1", 1)
    clock.advance(10 * DAY)
    runs_only = RetentionConfig(jobs_days=0, history_days=0, runs_days=1, metrics_days=0)
    assert (await prune(store, runs_only, clock.now(), dry_run=True))["runs"]["rows"] == 1
    report = await prune(store, runs_only, clock.now())
    assert report["jobs"] == {"days": 0, "before": None, "rows": 0}
    assert report["runs"]["rows"] == 1 and report["metrics"]["rows"] == 0
    rows = (await store.database_stats())["rows"]
    assert rows["market_job_runs"] == 0 and rows["market_provider_metrics"] == 0
    assert rows["market_jobs"] == 2
    with pytest.raises(ValueError):
        await store.prune("market_jobs", 0, limit=1)


async def test_database_stats(store: Store, clock: FakeClock) -> None:
    await day_of_work(store, clock, "A-1", 1)
    stats = await store.database_stats()
    assert stats["size_bytes"] > 0
    assert stats["rows"]["market_prices"] == 1 and stats["rows"]["market_price_history"] == 1
    assert (stats["wal_bytes"] is None) == (type(store).__name__ == "PostgresStore")


async def test_daily_prune_after_runs(store: Store, clock: FakeClock) -> None:
    """The after-run hook prunes at once, then not again before every_hours have passed."""
    retention = Retention(store, RetentionConfig(jobs_days=1, every_hours=24), clock)
    await day_of_work(store, clock, "A-1", 1)
    clock.advance(2 * DAY)
    await retention.after_run()
    assert retention.task is not None
    await retention.task
    assert retention.last is not None and retention.last["kinds"]["jobs"]["rows"] == 2
    first = retention.task
    clock.advance(3600)
    await retention.after_run()
    assert retention.task is first  # not due yet
    clock.advance(24 * 3600)
    await retention.after_run()
    assert retention.task is not first
    await retention.stop()
