"""What several daemons on one PostgreSQL database rely on, each daemon a store of its own
(its own pool, its own transactions) on a fresh database: dedupe across daemons, exact budgets,
claims never doubled, migrations from several hosts at once, and the seed's troubleshooting
SQL running verbatim on the schema. The store interface itself is tests/integration/
test_store.py, which runs against this backend too."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from marketd.clock import Clock, FakeClock, iso
from marketd.errors import StoreError
from marketd.models import JobSpec
from marketd.store import Call, Store
from tests.conftest import postgres_database

asyncpg = pytest.importorskip("asyncpg")
from marketd.store.postgres import PostgresStore, without_password  # noqa: E402
from marketd.store.postgres.base import migrations  # noqa: E402

ALL_VERSIONS = [version for version, _, _ in migrations()]

OpenPg = Callable[..., Awaitable[PostgresStore]]


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    databases = postgres_database()
    url = await anext(databases)
    try:
        yield url
    finally:
        await databases.aclose()


@pytest.fixture
async def open_pg(pg_url: str, clock: FakeClock) -> AsyncIterator[OpenPg]:
    """Opens one more daemon's store on the test's database; all are closed at the end."""
    opened: list[PostgresStore] = []

    async def open_one(clock_: Clock | None = None, *, migrate: bool = True) -> PostgresStore:
        s = await PostgresStore.open(pg_url, clock_ or clock, migrate=migrate)
        opened.append(s)
        return s

    yield open_one
    for s in opened:
        await s.close()


def spec(sku: str, size: str | None = "10", priority: int = 100) -> JobSpec:
    return JobSpec("stockx", sku, size, priority=priority)


async def test_same_keys_enqueued_on_two_daemons_at_once_are_one_job_each(
        open_pg: OpenPg) -> None:
    """Two daemons enqueue the same 60 keys at once (in opposite orders, so their batches
    cross): each key is one pending job, both daemons are told its id, one of them was first."""
    a, b = await open_pg(), await open_pg()
    keys = [spec(f"K-{i}") for i in range(60)]
    for _ in range(3):
        ra, rb = await asyncio.gather(a.enqueue(keys, 0), b.enqueue(keys[::-1], 0))
        rb = rb[::-1]
        for x, y in zip(ra, rb, strict=True):
            assert x.id == y.id and x.status == y.status == "pending"
        counts = await a.job_counts()
        assert counts == {"stockx": {"pending": 60}}
    firsts = [not x.deduplicated for x in ra] + [not y.deduplicated for y in rb]
    assert sum(firsts) == 0  # the third round found every key active


async def test_first_enqueue_of_a_key_is_told_new_on_exactly_one_daemon(
        open_pg: OpenPg) -> None:
    """Racing first enqueues of one key: exactly one daemon created it."""
    stores = [await open_pg() for _ in range(4)]
    for i in range(10):
        results = await asyncio.gather(*(s.enqueue([spec(f"R-{i}")], 0) for s in stores))
        assert len({r[0].id for r in results}) == 1
        assert sum(not r[0].deduplicated for r in results) == 1


async def test_reservations_from_several_daemons_never_exceed_a_limit(
        open_pg: OpenPg, clock: FakeClock) -> None:
    """5 daemons x 20 attempts against 30 calls an hour: exactly 30 recorded, each daemon
    keeping its own log by 'calls after the last id I saw', as the limiter does."""
    stores = [await open_pg() for _ in range(5)]
    await stores[0].ensure_budgets({"stockx": 30})

    async def daemon(store: PostgresStore) -> int:
        log: list[Call] = []
        granted = 0

        def decide(rows: list[Call], now: float) -> tuple[int, float]:
            window = [c for c in log + rows if c[1] > now - 3600]
            return (1, now) if len(window) < 30 else (0, now)

        for _ in range(20):
            after = log[-1][0] if log else 0
            new, _, rows = await store.reserve_calls("stockx", 30, after, 0.0, decide)
            log.extend(rows + new)
            log.sort()
            granted += len(new)
            await asyncio.sleep(0)
        return granted

    granted = await asyncio.gather(*(daemon(s) for s in stores))
    assert sum(granted) == 30
    assert len(await stores[0].load_calls("stockx", 0.0)) == 30
    [budget] = await stores[0].budgets()
    assert (budget["used"], budget["rate_limit"]) == (30, 30)


async def test_calls_after_an_id_never_miss_another_daemons_call(open_pg: OpenPg) -> None:
    """Within a provider, ids grow in commit order: a daemon reading 'after the last id I
    saw' sees every call the others recorded."""
    stores = [await open_pg() for _ in range(3)]
    seen: list[list[Call]] = [[], [], []]

    async def daemon(k: int) -> None:
        for _ in range(15):
            after = seen[k][-1][0] if seen[k] else 0
            new, _, rows = await stores[k].reserve_calls(
                "stockx", 1000, after, 0.0, lambda rows, now: (2, now))
            seen[k] = sorted(seen[k] + rows + new)
            await asyncio.sleep(0)

    await asyncio.gather(*(daemon(k) for k in range(3)))
    everything = await stores[0].load_calls("stockx", 0.0)
    assert len(everything) == 90
    for k in range(3):  # each saw everything recorded before its last reservation
        last = seen[k][-1][0]
        assert seen[k] == [c for c in everything if c[0] <= last]


async def test_claims_from_several_daemons_never_hand_a_job_twice(open_pg: OpenPg) -> None:
    """Three daemons claim in small batches at once until the queue is empty: every job is
    handed out exactly once."""
    stores = [await open_pg() for _ in range(3)]
    await stores[0].enqueue([spec(f"C-{i}", str(s)) for i in range(50) for s in (8, 9, 10, 11)],
                            0)

    async def daemon(store: PostgresStore) -> list[str]:
        got: list[str] = []
        while jobs := await store.claim("stockx", 7):
            got += [j.id for j in jobs]
            await asyncio.sleep(0)
        return got

    claimed = await asyncio.gather(*(daemon(s) for s in stores))
    every = [i for ids in claimed for i in ids]
    assert len(every) == len(set(every)) == 200
    assert await stores[0].job_counts() == {"stockx": {"running": 200}}


async def test_migrate_from_three_hosts_at_once(open_pg: OpenPg) -> None:
    """Three daemons migrating a fresh database at once: one applies every migration, the
    others find nothing to do, and the schema works."""
    stores = [await open_pg(migrate=False) for _ in range(3)]
    applied = await asyncio.gather(*(s.migrate() for s in stores))
    assert sorted(applied, key=len) == [[], [], ALL_VERSIONS]
    [r] = await stores[1].enqueue([spec("M-1")], 0)
    assert r.status == "pending"
    assert await stores[2].migrate() == []


# the seed's troubleshooting SQL (docs: market-queue-system.md, "Troubleshooting"), verbatim
SEED_RECENT_RUNS = "SELECT * FROM market_job_runs ORDER BY started_at DESC LIMIT 5;"
SEED_BUDGETS = """SELECT * FROM market_budgets
   WHERE hour_window = date_trunc('hour', NOW());"""
SEED_STUCK = """UPDATE market_jobs
SET status = 'pending', started_at = NULL
WHERE status = 'running'
  AND started_at < NOW() - INTERVAL '10 minutes';"""
SEED_USAGE = """SELECT provider, used, rate_limit,
  ROUND(100.0 * used / rate_limit, 1) as pct_used
FROM market_budgets
WHERE hour_window = date_trunc('hour', NOW());"""


async def test_the_seeds_troubleshooting_sql_runs_verbatim(open_pg: OpenPg, pg_url: str) -> None:
    """The seed's queries run as written on marketd's tables, and mean what they say: this
    hour's budget rows, the usage percentage, the stuck-job reset, the recent runs."""
    for _ in range(3):  # an hour boundary between marketd's clock and NOW(): try again
        clock = FakeClock(time.time() - 700)
        store = await open_pg(clock)
        await store.enqueue([spec("S-1"), spec("S-2")], 0)
        await store.claim("stockx", 1)  # started 700 s ago by the time the SQL runs
        clock.advance(700)
        await store.claim("stockx", 1)  # started just now: not stuck
        run_id, _ = await store.begin_run("manual", {"stockx": 100, "alias": 200}, 3600, 0)
        await store.reserve_calls("stockx", 100, 0, 0.0, lambda rows, now: (3, now))
        conn = await asyncpg.connect(pg_url)
        try:
            budgets = await conn.fetch(SEED_BUDGETS)
            if len(budgets) != 2:
                await conn.execute("TRUNCATE market_jobs, market_budgets, market_calls, "
                                   "market_job_runs CASCADE")
                continue
            usage = {r["provider"]: (r["used"], r["rate_limit"], float(r["pct_used"]))
                     for r in await conn.fetch(SEED_USAGE)}
            assert usage == {"stockx": (3, 100, 3.0), "alias": (0, 200, 0.0)}
            assert await conn.execute(SEED_STUCK) == "UPDATE 1"
            runs = await conn.fetch(SEED_RECENT_RUNS)
            assert [r["id"] for r in runs] == [run_id]
        finally:
            await conn.close()
        counts = await store.job_counts()
        assert counts == {"stockx": {"pending": 1, "running": 1}}
        return
    pytest.fail("marketd's hour and NOW()'s hour differed three times")


async def test_open_store_picks_the_backend_from_the_configuration(
        pg_url: str, tmp_path: Path, clock: FakeClock) -> None:
    """open_store: a [database] section with a url opens PostgreSQL, a path (or a section
    without a url) opens SQLite, as every caller did before."""
    from marketd.config import DatabaseConfig
    from marketd.store import SQLiteStore, open_store

    pg = await open_store(DatabaseConfig(url=pg_url), clock)
    sq = await open_store(DatabaseConfig(path=str(tmp_path / "a.db")), clock)
    sq2 = await open_store(str(tmp_path / "b.db"), clock)
    pg2 = await open_store(str(tmp_path / "c.db"), clock, url=pg_url)
    try:
        assert isinstance(pg, PostgresStore) and isinstance(pg2, PostgresStore)
        assert isinstance(sq, SQLiteStore) and isinstance(sq2, SQLiteStore)
    finally:
        for s in (pg, sq, sq2, pg2):
            await s.close()


async def test_schema_uses_postgresql_types(open_pg: OpenPg, pg_url: str) -> None:
    """The SQLite schema's tables and columns, in PostgreSQL's types: a job_status enum, uuid
    ids, timestamptz times; the migration is recorded."""
    await open_pg()
    conn = await asyncpg.connect(pg_url)
    try:
        types = {(r["table_name"], r["column_name"]): r["udt_name"] for r in await conn.fetch(
            "SELECT table_name, column_name, udt_name FROM information_schema.columns "
            "WHERE table_schema = 'public'")}
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()
    assert types[("market_jobs", "status")] == "job_status"
    assert types[("market_jobs", "id")] == "uuid"
    assert types[("market_jobs", "created_at")] == "timestamptz"
    assert types[("market_budgets", "hour_window")] == "timestamptz"
    assert versions == ALL_VERSIONS
    sqlite_tables = {"market_jobs", "market_budgets", "market_calls", "market_job_runs",
                     "market_provider_metrics", "market_prices", "market_price_history",
                     "market_catalog", "market_wanted", "provider_state", "provider_tokens",
                     "market_queue_samples", "market_instances", "schema_migrations",
                     "market_user_keys", "market_webhook_outbox"}
    assert {t for t, _ in types} == sqlite_tables


async def test_rows_have_the_sqlite_stores_shapes(open_pg: OpenPg, clock: FakeClock) -> None:
    """Page rows, budgets and runs come back with ISO-8601 UTC text times and text ids, as
    the SQLite store gives them; the URL's password never shows in ``path``."""
    from marketd.clock import iso

    store = await open_pg()
    [r] = await store.enqueue([spec("P-1")], 0)
    total, rows = await store.page_jobs(view="active", provider=None, now=clock.now(),
                                        limit=10, offset=0)
    assert total == 1 and rows[0]["id"] == r.id and rows[0]["created_at"] == iso(clock.now())
    assert rows[0]["status"] == "pending" and isinstance(rows[0]["row_id"], int)
    ahead = await store.pending_ahead(provider="stockx", priority=100,
                                      created_at=rows[0]["created_at"],
                                      row_id=rows[0]["row_id"], now=clock.now())
    assert ahead == 0
    await store.ensure_budgets({"stockx": 100})
    assert await store.budgets() == [{"provider": "stockx", "rate_limit": 100, "used": 0,
                                      "hour_window": iso(clock.now() - clock.now() % 3600)}]
    assert "***" in PostgresStore("postgresql://u:secret@h/db", clock).path


async def _parity_script(store: Store, clock: FakeClock) -> dict[str, Any]:
    """The methods the store suite leaves out, called the same way on any backend; what they
    return, with random ids replaced by their order of appearance."""
    from marketd.models import Price
    from marketd.store import Defer, Outcomes, Retry

    out: dict[str, Any] = {}
    res = await store.enqueue([spec("A-1", "9"), spec("A-1", "10"), spec("B-1", None),
                               JobSpec("alias", "C-1", "8", "US", 150, "user-7")], 0)
    jobs = await store.claim("stockx", 3) + await store.claim("alias", 1)
    now = clock.now()
    await store.record(Outcomes(
        completed=[jobs[0].id], failed=[(jobs[1].id, "HTTP 404")],
        retried=[Retry(jobs[2].id, "HTTP 503", now + 60)], deferred=[Defer(jobs[3].id)],
        prices=[Price("stockx", "A-1", "9", "GBP", 100, 90, 95, now),
                Price("stockx", "B-1", None, "GBP", 50, None, None, now - 5000)],
        wanted=[("stockx", "A-1", "9", "9", "UK"), ("stockx", "B-1", "", None, "UK")]))
    out["jobs"] = [j.as_dict() | {"id": None} for j in await store.list_jobs()]
    out["jobs_failed"] = len(await store.list_jobs(status="failed", provider="stockx"))
    out["any_due"] = [await store.any_due("stockx"), await store.any_due("alias", 200)]
    out["prices"] = await store.list_prices()
    out["prices_b"] = await store.list_prices(sku="B-1", size="")
    clock.advance(100)
    out["stale"] = await store.enqueue_stale("stockx", 5, per_sku=True, older_than_s=3600,
                                             asked_within_s=86400, priority=50)
    out["reset"] = await store.reset_failed("stockx")
    out["counts"] = await store.job_counts()
    await store.set_pause("ebay", now + 300, "429", "api_key")
    out["states"] = await store.provider_states()
    await store.put_token("ebay", "access", "tok", now + 7200)
    out["token"] = [await store.get_token("ebay", "access"), await store.get_token("x", "y")]
    await store.put_catalog("stockx", "A-1", product_id="p1", title="Dunk",
                            data={"sizes": [9, 10]})
    out["catalog"] = await store.get_catalog("stockx", "A-1")
    await store.delete_catalog("stockx", "A-1")
    out["catalog_gone"] = await store.get_catalog("stockx", "A-1")
    run_id, rescued = await store.begin_run("manual", {"stockx": 100}, 600, now - 7200)
    calls, _, _ = await store.reserve_calls("stockx", 100, 0, 0.0, lambda rows, t: (4, t))
    store.release_soon("stockx", [c[0] for c in calls[2:]], clock.now())
    store.record_metrics_soon(run_id=run_id, provider="stockx", batch_size=3, succeeded=1,
                              failed=1, deferred=1, calls=2, rate_limited=0, duration_ms=40)
    await store.finish_run(run_id, selected=3, succeeded=1, failed=1, deferred=1, rescued=0,
                           duration_ms=1234, outcome="partial")
    out["rescued"] = rescued
    out["calls"] = [t for _, t in await store.load_calls("stockx", 0.0)]
    out["budgets"] = await store.budgets()
    out["budgets_since"] = await store.budgets(since=now - 7200)
    out["runs"] = [r | {"id": None} for r in await store.recent_runs()]
    out["metrics"] = [r | {"id": None, "run_id": None} for r in await store.recent_metrics()]
    out["durations"] = await store.run_durations()
    out["ages"] = await store.price_ages()
    await store.record_queue_samples([{"sampled_at": iso(clock.now()), "provider": "stockx",
                                       "pending": 1, "running": 2, "completed": 3,
                                       "failed": 4}], clock.now() - 60)
    out["samples"] = await store.queue_samples_since(clock.now() - 10)
    out["pruned"] = await store.prune_calls(clock.now() + 1)
    total, rows = await store.page_jobs(view="all", provider="stockx", now=clock.now(),
                                        limit=2, offset=1)
    out["page"] = (total, [(r["sku"], r["size"], r["status"]) for r in rows])
    out["claimed"] = [(j.sku, j.status) for j in await store.claim("alias", 5)]
    out["rescue_all"] = await store.rescue_stuck(0)
    out["rescued_job"] = [(j.error_message, j.status) for j in await store.list_jobs(
        provider="alias")]
    assert res[0].id
    return out


async def test_every_other_method_answers_as_the_sqlite_store(tmp_path: Path,
                                                              pg_url: str) -> None:
    """The same calls on both backends (each with its own fake clock at the same instant)
    give the same answers."""
    from marketd.store import SQLiteStore

    answers = []
    for open_one in (lambda c: SQLiteStore.open(str(tmp_path / "p.db"), c),
                     lambda c: PostgresStore.open(pg_url, c)):
        clock = FakeClock()
        store = await open_one(clock)
        try:
            answers.append(await _parity_script(store, clock))
        finally:
            await store.close()
    sqlite, postgres = answers
    for key in sqlite:
        assert postgres[key] == sqlite[key], key


async def test_backup_is_a_private_pg_dump_of_the_rows(pg_url: str, clock: FakeClock,
                                                       tmp_path: Path) -> None:
    """backup() writes pg_dump's custom format to a new 0600 file that pg_restore reads, with
    the rows, from a URL carrying a password (handed to pg_dump as PGPASSWORD, its URL
    without it); an existing target is refused and left alone."""
    user, rest = pg_url.split("://", 1)[1].split("@", 1)
    with_password = f"postgresql://{user}:s%3Acret@{rest}"  # trust auth: it is not checked
    assert without_password(with_password) == (pg_url, "s:cret")
    store = await PostgresStore.open(with_password, clock)
    try:
        await store.enqueue([spec("BACKUP-1")], 0)
        target = tmp_path / "m.dump"
        await store.backup(str(target))
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
        listing = subprocess.run(["pg_restore", "--list", str(target)], capture_output=True,
                                 text=True, check=True)
        assert "market_jobs" in listing.stdout
        data = subprocess.run(["pg_restore", "--data-only", "--table=market_jobs", "-f", "-",
                               str(target)], capture_output=True, text=True, check=True)
        assert "BACKUP-1" in data.stdout
        with pytest.raises(StoreError, match="exists"):
            await store.backup(str(target))
        assert "BACKUP-1" in subprocess.run(["pg_restore", "--data-only", "-f", "-",
                                             str(target)], capture_output=True, text=True,
                                            check=True).stdout
    finally:
        await store.close()
