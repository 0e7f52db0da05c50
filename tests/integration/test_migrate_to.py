"""Moving over (``marketd migrate --to``, marketd.store.transfer): a populated SQLite store
copied into a fresh PostgreSQL database answers every read as the SQLite store did; a target
that holds rows, a missing SQLite file and a database a daemon has open are refused with
nothing changed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from marketd.clock import FakeClock, iso
from marketd.models import JobSpec, Price
from marketd.store import Outcomes, Retry, SQLiteStore, Store
from tests.conftest import postgres_database

asyncpg = pytest.importorskip("asyncpg")
from marketd.store.postgres import PostgresStore  # noqa: E402
from marketd.store.transfer import Refused, transfer  # noqa: E402

DAY = 86_400.0


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    databases = postgres_database()
    url = await anext(databases)
    try:
        yield url
    finally:
        await databases.aclose()


async def populate(path: str, clock: FakeClock) -> dict[str, Any]:
    """A store with some of everything, through the store's own API: returns what the copy
    should and should not hold."""
    store = await SQLiteStore.open(path, clock)
    try:
        old, _, _ = await store.reserve_calls("stockx", 100, 0, 0.0, lambda r, t: (3, t))
        clock.advance(2 * DAY)  # those three calls are outside every window now
        specs = [JobSpec(p, f"SKU-{i}", s, priority=pr, user_id=u)
                 for i in range(12)
                 for p, s, pr, u in (("stockx", "10", 100, "u1"), ("alias", None, 500, None),
                                     ("ebay", "EU 42", 50, "user 2"))]
        await store.enqueue(specs, 0)
        clock.advance(1)
        await store.enqueue([JobSpec("stockx", "SKU-0", "10", priority=900)], 0)  # dedupe
        run_id, _ = await store.begin_run("manual", {"stockx": 100, "alias": 200}, 600, 0.0)
        jobs = await store.claim("stockx", 6)
        now = clock.now()
        await store.record(Outcomes(
            completed=[j.id for j in jobs[:3]],
            failed=[(jobs[3].id, "not found")],
            retried=[Retry(jobs[4].id, "HTTP 503", now + 60)],
            prices=[Price("stockx", j.sku, "10", "GBP", 10_000 + i, 9_000, None, now)
                    for i, j in enumerate(jobs[:3])],
            wanted=[("stockx", j.sku, "10", "10", "UK") for j in jobs[:3]]))
        await store.claim("alias", 2)  # left running, as a stopped daemon might
        recent, _, _ = await store.reserve_calls("stockx", 100, 0, now - 3600,
                                                 lambda r, t: (4, t))
        await store.reserve_calls("ebay", 150, 0, now - 3600, lambda r, t: (2, t))
        store.record_metrics_soon(run_id=run_id, provider="stockx", batch_size=6, succeeded=3,
                                  failed=1, deferred=0, calls=4, rate_limited=0,
                                  duration_ms=321)
        await store.finish_run(run_id, selected=6, succeeded=3, failed=1, deferred=0,
                               rescued=0, duration_ms=400, outcome="partial")
        await store.put_token("stockx", "refresh", "r-token", None)
        await store.put_token("stockx", "access", "a-token", now + 3600)
        await store.put_catalog("stockx", "SKU-0", product_id="p-0", title="Dunk Low",
                                brand="Nike", image_url="https://img/0.png",
                                data={"sizes": {"10": "v-10"}, "n": [1, 2.5]})
        await store.set_pause("ebay", now + 900, "HTTP 429", None)
        await store.record_queue_samples(
            [{"sampled_at": iso(now), "provider": p, "pending": 3, "running": 1,
              "completed": 2, "failed": 0} for p in ("stockx", "alias")], now - DAY)
        await store.flush()
        return {"old_calls": [c[0] for c in old], "recent_calls": [c[0] for c in recent],
                "run_id": run_id}
    finally:
        await store.close()


async def reads(store: Store) -> dict[str, Any]:
    """Every read the daemon and the API make of what was copied."""
    out: dict[str, Any] = {
        "counts": await store.job_counts(),
        "jobs": await store.list_jobs(limit=1000),
        "running": await store.list_jobs(status="running"),
        "prices": await store.list_prices(),
        "budgets": [b | {"id": None} for b in await store.budgets(since=0.0)],
        "runs": await store.recent_runs(),
        "metrics": await store.recent_metrics(),
        "tokens": [await store.get_token("stockx", k) for k in ("refresh", "access", "none")],
        "catalog": [await store.get_catalog("stockx", "SKU-0"),
                    await store.get_catalog("stockx", "SKU-1")],
        "states": await store.provider_states(),
        "samples": await store.queue_samples_since(0.0),
        "ages": await store.price_ages(),
        "page": await store.page_jobs(view="all", provider=None, now=store.clock.now(),
                                      limit=50, offset=0),
    }
    for p in ("stockx", "alias", "ebay"):
        out[f"calls_{p}"] = await store.load_calls(p, store.clock.now() - DAY)
        out[f"due_{p}"] = await store.any_due(p)
    return out


async def test_copy_answers_every_read_as_the_sqlite_store(
        tmp_path: Path, clock: FakeClock, pg_url: str) -> None:
    path = str(tmp_path / "marketd.db")
    made = await populate(path, clock)
    report = await transfer(path, pg_url, windows={"stockx": 3600.0}, now=clock.now())
    copied = {t.table: t for t in report.tables}
    assert copied["market_jobs"].rows == 36
    assert copied["market_calls"].rows == 6 and copied["market_calls"].source_rows == 9
    assert copied["market_budgets"].defaulted == ("id",)  # integer ids: PostgreSQL's uuids
    assert report.rows == sum(t.source_rows for t in report.tables) - 3
    assert {"market_prices", "market_price_history", "market_catalog", "market_wanted",
            "provider_tokens", "provider_state", "market_job_runs", "market_provider_metrics",
            "market_queue_samples", "market_budgets"} <= set(copied)

    sqlite = await SQLiteStore.open(path, clock, migrate=False)
    pg = await PostgresStore.open(pg_url, clock)
    try:
        want, got = await reads(sqlite), await reads(pg)
        for key in want:
            assert got[key] == want[key], key
        assert [c[0] for c in got["calls_stockx"]] == made["recent_calls"]

        # the copy goes on where SQLite stopped: ids past the copied ones, the queue's order
        new, _, _ = await pg.reserve_calls("stockx", 100, 0, 0.0, lambda r, t: (1, t))
        assert new[0][0] > max(made["recent_calls"])
        run_id, rescued = await pg.begin_run("manual", {}, 600, 0.0)
        assert run_id > made["run_id"] and rescued == 0
        dup = await pg.enqueue([JobSpec("alias", "SKU-5", None, priority=100)], 0)
        assert dup[0].deduplicated and dup[0].id in {j.id for j in want["jobs"]}
        await pg.enqueue([JobSpec("stockx", "NEW-1", "10", priority=100)], 0)
        claimed = await pg.claim("stockx", 100)
        assert claimed[-1].sku == "NEW-1"  # after every copied job of its priority and age
        assert {j.sku for j in claimed} == {j.sku for j in want["jobs"]
                                            if j.provider == "stockx" and j.status == "pending"
                                            and (j.next_attempt_at or 0) <= clock.now()
                                            } | {"NEW-1"}
    finally:
        await sqlite.close()
        await pg.close()


async def test_a_target_that_holds_rows_is_refused_unchanged(
        tmp_path: Path, clock: FakeClock, pg_url: str) -> None:
    path = str(tmp_path / "marketd.db")
    await populate(path, clock)
    pg = await PostgresStore.open(pg_url, clock)
    try:
        await pg.enqueue([JobSpec("stockx", "THERE-1", "10")], 0)
        before = await reads(pg)
        with pytest.raises(Refused, match=r"not empty \(market_jobs"):
            await transfer(path, pg_url, now=clock.now())
        assert await reads(pg) == before
    finally:
        await pg.close()


async def test_a_missing_sqlite_file_is_refused_and_not_created(
        tmp_path: Path, pg_url: str) -> None:
    path = tmp_path / "nowhere" / "marketd.db"
    with pytest.raises(Refused, match="no SQLite database"):
        await transfer(str(path), pg_url)
    assert not path.parent.exists()
    conn = await asyncpg.connect(pg_url)
    try:  # nothing was made on the target either
        assert await conn.fetchval("SELECT to_regclass('market_jobs')") is None
    finally:
        await conn.close()


async def test_a_database_a_daemon_has_open_is_refused(
        tmp_path: Path, clock: FakeClock, pg_url: str) -> None:
    path = str(tmp_path / "marketd.db")
    await populate(path, clock)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sqlite3, sys
            conn = sqlite3.connect({path!r})
            conn.execute("SELECT count(*) FROM market_jobs").fetchone()
            print("open", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(Refused, match="open in another process"):
            await transfer(path, pg_url)
    finally:
        holder.communicate("", timeout=10)
    report = await transfer(path, pg_url, now=clock.now())  # once it is closed, it goes
    assert report.rows > 0


async def test_not_a_marketd_database_is_refused(tmp_path: Path, pg_url: str) -> None:
    other = tmp_path / "other.db"
    other.write_bytes(b"not a database at all" * 100)
    with pytest.raises(Refused, match="not an SQLite database"):
        await transfer(str(other), pg_url)
