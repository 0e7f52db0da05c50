"""The store on a real SQLite file: schema, queue operations, dedupe, freshness, rescue."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from marketd import sql
from marketd.clock import FakeClock
from marketd.errors import StoreError
from marketd.models import JobSpec, Price
from marketd.store import Defer, Outcomes, Retry, Store


def spec(sku: str = "DD1391-100", size: str | None = "10", provider: str = "stockx",
         priority: int = 100) -> JobSpec:
    return JobSpec(provider, sku, size, priority=priority)


def schema_of(path: str) -> set[tuple[str, str]]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                           "AND name != 'schema_migrations'").fetchall()
    finally:
        con.close()
    # a table rebuilt by a migration is renamed, which SQLite records with quotes
    return {(n, " ".join(s.replace("IF NOT EXISTS ", "").replace('"', "").split()))
            for n, s in rows}


async def test_wal_and_private_file(store: Store) -> None:
    """The database is in WAL mode and readable by its owner only."""
    rows = await store.execute_read("pragma_setup")
    assert rows[0]["journal_mode"] == "wal"
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert mode == 0o600


async def test_migrations_produce_schema_sql(tmp_path: Path, clock: FakeClock) -> None:
    """Applying the numbered migrations in order yields exactly schema.sql."""
    fresh = await Store.open(str(tmp_path / "a.db"), clock)
    await fresh.close()
    con = sqlite3.connect(tmp_path / "b.db")
    for _, _, text in sql.migrations():
        con.executescript(text)
    con.close()
    assert schema_of(str(tmp_path / "a.db")) == schema_of(str(tmp_path / "b.db"))


async def test_migrate_twice_is_safe(store: Store) -> None:
    """migrate() on an up-to-date database applies nothing."""
    assert await store.migrate() == []


async def test_enqueue_dedupes_and_keeps_higher_priority(store: Store) -> None:
    """One active job per key; a duplicate raises the priority and is told deduplicated."""
    [a] = await store.enqueue([spec(priority=100)], 3600)
    [b] = await store.enqueue([spec(priority=200)], 3600)
    [c] = await store.enqueue([spec(priority=150)], 3600)
    assert (a.deduplicated, b.deduplicated, c.deduplicated) == (False, True, True)
    assert a.id == b.id == c.id
    assert c.priority == 200
    assert (await store.job_counts()) == {"stockx": {"pending": 1}}


async def test_duplicates_inside_one_batch(store: Store) -> None:
    """The same key twice in one batch is one job; the second entry is the duplicate."""
    res = await store.enqueue([spec(), spec("OTHER-1"), spec(priority=150)], 3600)
    assert [r.deduplicated for r in res] == [False, False, True]
    assert res[0].id == res[2].id


async def test_enqueue_after_completion_creates_new_job(store: Store, clock: FakeClock) -> None:
    """A completed job does not block a new one for the same key (when the price is stale)."""
    [a] = await store.enqueue([spec()], 0)
    [job] = await store.claim("stockx", 1)
    await store.record(Outcomes(completed=[job.id]))
    [b] = await store.enqueue([spec()], 0)
    assert b.id != a.id and not b.deduplicated


async def test_fresh_price_answers_background_and_hot(store: Store, clock: FakeClock) -> None:
    """A price younger than fresh_for_seconds answers background/hot enqueues; manual runs."""
    await store.record(Outcomes(prices=[Price("stockx", "DD1391-100", "10", "GBP", 9600, None,
                                              None, clock.now())]))
    clock.advance(100)
    [bg] = await store.enqueue([spec(priority=150)], 3600)
    assert (bg.status, bg.id) == ("fresh", None)
    [manual] = await store.enqueue([spec(priority=200)], 3600)
    assert manual.status == "pending" and manual.id
    clock.advance(4000)
    [stale] = await store.enqueue([spec("DD1391-100", "10", "stockx", 100)], 3600)
    assert stale.status == "pending"


async def test_claim_walks_priority_then_age(store: Store, clock: FakeClock) -> None:
    """claim() takes due pending jobs, highest priority first, then oldest, and marks them."""
    await store.enqueue([spec("A-1")], 0)
    clock.advance(1)
    await store.enqueue([spec("B-1", priority=150), spec("C-1", provider="alias")], 0)
    jobs = await store.claim("stockx", 10)
    assert [j.sku for j in jobs] == ["B-1", "A-1"]
    assert all(j.status == "running" and j.started_at for j in jobs)
    assert await store.claim("stockx", 10) == []


async def test_backoff_hides_jobs_until_due(store: Store, clock: FakeClock) -> None:
    """A retried job is not claimed before its next_attempt_at."""
    await store.enqueue([spec()], 0)
    [job] = await store.claim("stockx", 1)
    await store.record(Outcomes(retried=[Retry(job.id, "HTTP 503", clock.now() + 30)]))
    assert await store.claim("stockx", 1) == []
    clock.advance(31)
    [again] = await store.claim("stockx", 1)
    assert again.retry_count == 1 and again.error_message == "HTTP 503"


async def test_defer_keeps_retry_count(store: Store) -> None:
    """Deferring returns a job to pending without spending a retry."""
    await store.enqueue([spec()], 0)
    [job] = await store.claim("stockx", 1)
    await store.record(Outcomes(deferred=[Defer(job.id)]))
    back = await store.get_job(job.id)
    assert back is not None and (back.status, back.retry_count) == ("pending", 0)


async def test_rescue_and_reset_failed(store: Store, clock: FakeClock) -> None:
    """Stuck running jobs return to pending; reset-failed moves failed back, per provider."""
    await store.enqueue([spec("A-1"), spec("B-1"), spec("C-1", provider="alias")], 0)
    jobs = await store.claim("stockx", 2) + await store.claim("alias", 1)
    await store.record(Outcomes(failed=[(jobs[0].id, "x"), (jobs[2].id, "y")]))
    clock.advance(601)
    assert await store.rescue_stuck(600) == 1
    assert await store.reset_failed("alias") == 1
    assert await store.reset_failed(None) == 1
    counts = await store.job_counts()
    assert counts == {"stockx": {"pending": 2}, "alias": {"pending": 1}}


async def test_reset_failed_never_duplicates_an_active_key(store: Store) -> None:
    """A failed job whose key is active again stays failed (one active job per key)."""
    await store.enqueue([spec()], 0)
    [job] = await store.claim("stockx", 1)
    await store.record(Outcomes(failed=[(job.id, "x")]))
    await store.enqueue([spec()], 0)
    assert await store.reset_failed(None) == 0


async def test_prices_latest_and_history(store: Store, clock: FakeClock) -> None:
    """market_prices keeps the latest per key; market_price_history keeps them all."""
    for ask in (100, 200):
        await store.record(Outcomes(prices=[Price("alias", "X-1", None, "USD", ask, None, 50,
                                                  clock.now())]))
        clock.advance(10)
    [p] = await store.list_prices(provider="alias")
    assert (p["lowest_ask"], p["size"], p["last_sale"]) == (200, None, 50)
    con = sqlite3.connect(store.path)
    assert con.execute("SELECT count(*) FROM market_price_history").fetchone()[0] == 2
    con.close()


async def test_batch_is_atomic(store: Store) -> None:
    """A batch that fails in the database leaves nothing behind."""
    bad = JobSpec("nosuch", "X", None)  # violates the provider CHECK constraint
    with pytest.raises(StoreError):
        await store.enqueue([spec("A-1"), bad], 0)
    assert await store.job_counts() == {}


async def test_backup_is_a_consistent_copy(store: Store, tmp_path: Path) -> None:
    """backup() copies the live database to a new private file."""
    await store.enqueue([spec()], 0)
    target = tmp_path / "copy.db"
    await store.backup(str(target))
    con = sqlite3.connect(target)
    assert con.execute("SELECT count(*) FROM market_jobs").fetchone()[0] == 1
    con.close()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


async def test_claim_caps_distinct_skus(store: Store, clock: FakeClock) -> None:
    """With max_skus, every size of an included SKU comes along; new SKUs stop at the cap."""
    await store.enqueue([spec("A-1", "8"), spec("B-1", "8"), spec("A-1", "9"),
                         spec("C-1", "8"), spec("B-1", "9")], 0)
    jobs = await store.claim("stockx", 50, max_skus=2)
    assert [(j.sku, j.size) for j in jobs] == [("A-1", "8"), ("B-1", "8"), ("A-1", "9"),
                                                ("B-1", "9")]


async def test_stored_price_answers_pending_jobs_of_that_key(store: Store,
                                                            clock: FakeClock) -> None:
    """A price stored by a fetch of the same product completes pending jobs for its key."""
    await store.enqueue([spec("A-1", "9"), spec("A-1", "10")], 0)
    [job9] = await store.claim("stockx", 1)
    price = Price("stockx", "A-1", "10", "GBP", 100, None, None, clock.now())
    own = Price("stockx", "A-1", "9", "GBP", 90, None, None, clock.now())
    await store.record(Outcomes(completed=[job9.id], prices=[own, price]))
    assert await store.job_counts() == {"stockx": {"completed": 2}}
    [answered] = [j for j in await store.list_jobs() if j.size == "10"]
    assert answered.error_message == "answered by a fetch of the same product"


async def test_job_ids_are_uuid4(store: Store) -> None:
    """Job ids are distinct RFC 4122 version-4 UUIDs."""
    import uuid

    results = await store.enqueue([spec(f"U-{i}") for i in range(50)], 0)
    ids = [uuid.UUID(r.id or "") for r in results]
    assert len(set(ids)) == 50 and all(u.version == 4 for u in ids)


async def test_concurrent_enqueues_share_commits_but_not_failures(store: Store) -> None:
    """Concurrent callers are grouped, each gets its own answers, and one caller's failing
    batch fails only that caller."""
    import asyncio

    calls = [store.enqueue([spec(f"G-{i}", "9")], 0) for i in range(40)]
    calls.append(store.enqueue([spec("G-0", "9", priority=200)], 0))  # a duplicate of call 0
    calls.append(store.enqueue([spec("OK-1"), JobSpec("nosuch", "X", None)], 0))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results[:41])
    assert [r[0].dedupe_key for r in results[:40]] == [  # type: ignore[index]
        f"stockx|G-{i}|9" for i in range(40)]
    dup = results[40][0]  # type: ignore[index]
    assert dup.deduplicated and dup.id == results[0][0].id and dup.priority == 200  # type: ignore[index]
    assert isinstance(results[41], StoreError)
    assert (await store.job_counts())["stockx"] == {"pending": 40}


async def test_checkpoints_run_beside_writes_not_inside_them(store: Store) -> None:
    """The write connection never checkpoints on commit; a background checkpoint on a
    connection of its own copies the WAL back once enough rows changed and the writer is
    idle."""
    auto = await store.w.execute("PRAGMA wal_autocheckpoint")
    assert (await auto.fetchone())[0] == 0
    temp = await store.w.execute("PRAGMA temp_store")
    assert (await temp.fetchone())[0] == 2  # MEMORY: the staging table makes no file
    store.checkpoint_after_changes = 200
    store.checkpoint_idle_s = 0  # (a real writer waits for a quarter second without writes)
    await store.enqueue([spec(f"SKU-{i}") for i in range(50)], 0)
    await store.wait_checkpoint()
    assert store.checkpoints == 0  # 50 jobs: not enough changes yet
    await store.enqueue([spec(f"SKU-{i}") for i in range(50, 400)], 0)
    await store.wait_checkpoint()
    assert store.checkpoints == 1
    # everything committed so far is in the main file: a new checkpoint finds nothing to copy
    con = sqlite3.connect(store.path)
    try:
        busy, frames, copied = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        con.close()
    assert busy == 0 and frames == copied


async def test_reserve_reads_only_calls_it_has_not_seen(store: Store) -> None:
    """Before each call the store reads calls recorded after the last one it saw by id, not
    every call in the window (a 25000/day limit keeps a day of calls)."""
    plan = sqlite3.connect(":memory:")
    try:
        plan.executescript(sql.schema())
        detail = " ".join(r[3] for r in plan.execute(
            "EXPLAIN QUERY PLAN " + sql.queries()["calls_after"],
            {"after_id": 1, "provider": "stockx", "since": 0.0}))
    finally:
        plan.close()
    assert "INTEGER PRIMARY KEY (rowid>?)" in detail
    first = await store.reserve_call("stockx", 100, 0, 0.0, lambda rows, now: True)
    assert first[0] and len(first[2]) == 1
    seen = first[2][-1][0]
    other = await store.reserve_call("stockx", 100, 0, 0.0, lambda rows, now: True)
    mine = await store.reserve_call("stockx", 100, seen, 0.0, lambda rows, now: True)
    # the other caller's call (id after `seen`) and this one's own
    assert [r[0] for r in mine[2]] == [other[2][-1][0], mine[2][-1][0]]


async def test_queued_results_share_the_next_calls_commit(store: Store, clock: FakeClock) -> None:
    """record_soon writes nothing by itself; the next write transaction (here a call's
    reservation) commits the results with it."""
    await store.enqueue([spec("A-1")], 0)
    [job] = await store.claim("stockx", 10)
    store.record_soon(Outcomes(completed=[job.id], prices=[
        Price("stockx", "A-1", "10", "GBP", 100, 90, 95, clock.now())]))
    assert (await store.get_job(job.id)).status == "running"  # type: ignore[union-attr]
    assert await store.list_prices() == []
    allowed, _, _ = await store.reserve_call("stockx", 100, 0, 0.0, lambda rows, now: True)
    assert allowed
    assert (await store.get_job(job.id)).status == "completed"  # type: ignore[union-attr]
    assert [p["lowest_ask"] for p in await store.list_prices()] == [100]


async def test_queued_results_survive_a_failed_transaction(store: Store) -> None:
    """When the transaction carrying queued results fails, they are rolled back with it and
    written by the next one, not lost."""
    await store.enqueue([spec("A-1")], 0)
    [job] = await store.claim("stockx", 10)
    store.record_soon(Outcomes(completed=[job.id]))

    def broken(rows: list[tuple[int, float]], now: float) -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(StoreError):
        await store.reserve_call("stockx", 100, 0, 0.0, broken)
    assert (await store.get_job(job.id)).status == "running"  # type: ignore[union-attr]
    await store.flush()
    assert (await store.get_job(job.id)).status == "completed"  # type: ignore[union-attr]
    assert await store.load_calls("stockx", 0.0) == []  # the failed reservation left nothing


async def test_close_writes_queued_results(tmp_path: Path, clock: FakeClock) -> None:
    path = str(tmp_path / "m.db")
    store = await Store.open(path, clock)
    await store.enqueue([spec("A-1")], 0)
    [job] = await store.claim("stockx", 10)
    store.record_soon(Outcomes(completed=[job.id]))
    await store.close()
    again = await Store.open(path, clock)
    try:
        assert (await again.get_job(job.id)).status == "completed"  # type: ignore[union-attr]
    finally:
        await again.close()


async def test_bad_queued_results_never_block_other_writes(store: Store,
                                                           clock: FakeClock) -> None:
    """Results the database refuses for their data are dropped (their jobs wait for the
    stuck-job rescue); the write that carried them, and later ones, go through."""
    await store.enqueue([spec("A-1"), spec("B-1")], 0)
    jobs = await store.claim("stockx", 10)
    bad = Price("stockx", "A-1", "10", None, 1, 1, 1, clock.now())  # type: ignore[arg-type]
    store.record_soon(Outcomes(completed=[jobs[0].id], prices=[bad]))
    [result] = await store.enqueue([spec("C-1")], 0)
    assert result.status == "pending"
    assert (await store.get_job(jobs[0].id)).status == "running"  # type: ignore[union-attr]
    await store.record(Outcomes(completed=[jobs[1].id]))
    assert (await store.get_job(jobs[1].id)).status == "completed"  # type: ignore[union-attr]
