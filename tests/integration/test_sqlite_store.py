"""The SQLite store's own behaviour: the file, pragmas, migrations against schema.sql, WAL
checkpoints, the writer thread, and the pending writes' fallbacks on driver errors."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from marketd import sql
from marketd.clock import FakeClock
from marketd.errors import StoreError
from marketd.models import JobSpec, Price
from marketd.store import Outcomes, SQLiteStore, Store


def spec(sku: str = "DD1391-100", size: str | None = "10") -> JobSpec:
    return JobSpec("stockx", sku, size)


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


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(str(tmp_path / "marketd.db"), clock)
    yield s
    await s.close()


async def test_wal_and_private_file(store: SQLiteStore) -> None:
    """The database is in WAL mode and readable by its owner only."""
    assert await store.journal_mode() == "wal"
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert mode == 0o600


async def test_migrations_produce_schema_sql(tmp_path: Path, clock: FakeClock) -> None:
    """Applying the numbered migrations in order yields exactly schema.sql."""
    fresh = await SQLiteStore.open(str(tmp_path / "a.db"), clock)
    await fresh.close()
    con = sqlite3.connect(tmp_path / "b.db")
    for _, _, text in sql.migrations():
        con.executescript(text)
    con.close()
    assert schema_of(str(tmp_path / "a.db")) == schema_of(str(tmp_path / "b.db"))


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


async def test_backup_is_a_consistent_copy(store: Store, tmp_path: Path) -> None:
    """backup() copies the live database to a new private file."""
    await store.enqueue([spec()], 0)
    target = tmp_path / "copy.db"
    await store.backup(str(target))
    con = sqlite3.connect(target)
    assert con.execute("SELECT count(*) FROM market_jobs").fetchone()[0] == 1
    con.close()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


async def test_checkpoints_run_beside_writes_not_inside_them(store: SQLiteStore) -> None:
    """The write connection never checkpoints on commit; a background checkpoint on a
    connection of its own copies the WAL back once enough rows changed and the writer is
    idle."""
    def pragmas(conn: sqlite3.Connection) -> tuple[int, int]:
        return (conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
                conn.execute("PRAGMA temp_store").fetchone()[0])

    # on the write connection: no checkpoint on commit; MEMORY: the staging table makes no file
    assert await store.db.write(pragmas) == (0, 2)
    store.db.checkpoint_after_changes = 200
    store.db.checkpoint_idle_s = 0  # (a real writer waits for a quarter second without writes)
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



def test_reservations_read_only_calls_not_seen() -> None:
    """Before each call the store reads calls recorded after the last one it saw by id (a
    rowid range), not every call in the window (a 25000/day limit keeps a day of calls)."""
    plan = sqlite3.connect(":memory:")
    try:
        plan.executescript(sql.schema())
        detail = " ".join(r[3] for r in plan.execute(
            "EXPLAIN QUERY PLAN " + sql.queries()["calls_after"],
            {"after_id": 1, "provider": "stockx", "since": 0.0}))
    finally:
        plan.close()
    assert "INTEGER PRIMARY KEY (rowid>?)" in detail


def test_the_next_retry_is_found_without_reading_the_backlog() -> None:
    """After every run the scheduler asks when the provider's next retry comes due: that reads
    the jobs waiting out a backoff (a partial index), never every pending job (565 ms at 1M
    pending before the index)."""
    plan = sqlite3.connect(":memory:")
    try:
        plan.executescript(sql.schema())
        detail = " ".join(r[3] for r in plan.execute(
            "EXPLAIN QUERY PLAN " + sql.queries()["next_attempt_at"],
            {"provider": "stockx", "now": "2026-01-01T00:00:00.000Z"}))
    finally:
        plan.close()
    assert "market_jobs_retry_due (provider=? AND next_attempt_at>?)" in detail


async def test_busy_or_io_errors_keep_pending_writes(store: SQLiteStore) -> None:
    """A transaction that fails with a busy or I/O error becomes a StoreError; the pending
    writes it carried are rolled back with it and written by the next one."""
    await store.enqueue([spec("A-1")], 0)
    [job] = await store.claim("stockx", 10)
    store.record_soon(Outcomes(completed=[job.id]))

    def broken(rows: list[tuple[int, float]], now: float) -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(StoreError, match="disk I/O error"):
        await store.reserve_call("stockx", 100, 0, 0.0, broken)
    assert (await store.get_job(job.id)).status == "running"  # type: ignore[union-attr]
    assert store.db.pending.due(0.0)  # due at once: the next flush_due writes them
    await store.flush_due()
    assert (await store.get_job(job.id)).status == "completed"  # type: ignore[union-attr]


async def test_a_cancelled_caller_still_commits_whole(store: SQLiteStore) -> None:
    """A write whose caller is cancelled while it waits still commits whole on the writer,
    and later writes work; an enqueue's caller going away never strands the group."""
    def insert(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO market_queue_samples (sampled_at, provider, pending, running,"
                     " completed, failed) VALUES ('2026-01-01', 'stockx', 1, 2, 3, 4)")

    task = asyncio.ensure_future(store.db.write(insert))
    await asyncio.sleep(0)  # the write is on the writer's queue
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.db.write(lambda conn: None)  # writes run in order: the first one is done
    assert [r["running"] for r in await store.queue_samples_since(0)] == [2]
    enqueue = asyncio.ensure_future(store.enqueue([spec(f"C-{i}") for i in range(200)], 0))
    await asyncio.sleep(0)
    enqueue.cancel()
    [later] = await store.enqueue([spec("LATER-1")], 0)
    assert later.status == "pending"
    assert (await store.job_counts())["stockx"]["pending"] == 201


async def test_writes_run_on_a_thread_of_their_own(store: SQLiteStore) -> None:
    """Write transactions run on the writer thread, never on the event loop's; the in-line
    writer (tests, benchmarks) runs them on the loop."""
    def where(conn: sqlite3.Connection) -> str:
        return threading.current_thread().name

    assert await store.db.write(where) == "marketd-writer"
    inline = await SQLiteStore.open(store.path + "-inline", store.clock, inline=True)
    try:
        assert await inline.db.write(where) == threading.current_thread().name
    finally:
        await inline.close()


async def test_a_closed_store_says_so(tmp_path: Path, clock: FakeClock) -> None:
    """Every call on a closed store is a StoreError, never a hang; closing twice is safe."""
    s = await SQLiteStore.open(str(tmp_path / "c.db"), clock)
    await s.close()
    await s.close()
    with pytest.raises(StoreError, match="closed"):
        await s.enqueue([spec()], 0)
    with pytest.raises(StoreError, match="closed"):
        await s.job_counts()


async def test_an_unopenable_database_is_a_store_error(tmp_path: Path, clock: FakeClock) -> None:
    """A path that cannot hold a database is a StoreError naming it, and leaves no thread."""
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match=r"dir\.db"):
        await SQLiteStore.open(str(tmp_path / "dir.db"), clock)
    assert not [t for t in threading.enumerate() if t.name == "marketd-writer"]
