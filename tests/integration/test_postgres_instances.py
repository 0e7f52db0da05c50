"""Who works on PostgreSQL, each daemon a store of its own on one fresh database: lane locks
held by one daemon at a time and released by the server when the holder's connection dies,
wake-ups between daemons (LISTEN/NOTIFY), and a live daemon's running jobs never rescued.
The backend-neutral meaning is in tests/integration/test_store.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from marketd.clock import FakeClock
from marketd.models import JobSpec, JobStatus
from tests.conftest import postgres_database

asyncpg = pytest.importorskip("asyncpg")
from marketd.store.postgres import PostgresStore  # noqa: E402
from marketd.store.postgres.instances import PgLaneLocks  # noqa: E402

OpenPg = Callable[[], Awaitable[PostgresStore]]
A_ID = "00000000-0000-4000-8000-00000000000a"
B_ID = "00000000-0000-4000-8000-00000000000b"


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
    opened: list[PostgresStore] = []

    async def open_one() -> PostgresStore:
        s = await PostgresStore.open(pg_url, clock)
        opened.append(s)
        return s

    yield open_one
    for s in opened:
        await s.close()


def spec(sku: str) -> JobSpec:
    return JobSpec("stockx", sku, "10")


async def test_one_daemon_at_a_time_holds_a_lane_and_its_death_frees_it(
        open_pg: OpenPg, pg_url: str) -> None:
    """A holds stockx; B cannot take it. A's connection dies (as when its process is killed):
    the server drops the lock, B takes it, and A finds it has lost it."""
    a_store, b_store = await open_pg(), await open_pg()
    a, b = a_store.lane_locks(), b_store.lane_locks()
    await a.open(lambda _: None)
    await b.open(lambda _: None)
    try:
        assert await a.try_acquire("stockx") and await a.try_acquire("alias")
        assert not await b.try_acquire("stockx")
        assert await b.try_acquire("ebay")  # one lock per provider
        assert isinstance(a, PgLaneLocks)
        pid = a.server_pid()
        assert pid is not None
        admin = await asyncpg.connect(pg_url)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        for _ in range(100):  # the server ends the session: a real event, not a clock
            if await b.try_acquire("stockx"):
                break
            await asyncio.sleep(0.02)
        assert b.holds("stockx")
        await a.check()  # (reconnects)
        assert not a.holds("stockx") and not a.holds("alias")
        assert not await a.try_acquire("stockx")  # reconnected, but b holds it now
        assert await a.try_acquire("alias")
        await b.release("stockx")
        assert await a.try_acquire("stockx")  # a graceful hand-over: at once
    finally:
        await a.close()
        await b.close()


async def test_closing_the_locks_hands_every_lane_over(open_pg: OpenPg) -> None:
    a_store, b_store = await open_pg(), await open_pg()
    a, b = a_store.lane_locks(), b_store.lane_locks()
    await a.open(lambda _: None)
    await b.open(lambda _: None)
    try:
        assert await a.try_acquire("stockx")
        assert not await b.try_acquire("stockx")
        await a.close()
        assert await b.try_acquire("stockx")
    finally:
        await a.close()
        await b.close()


async def test_a_wake_up_reaches_every_daemon(open_pg: OpenPg) -> None:
    """B's notify_wake reaches A's listener (the lane's holder runs the job)."""
    a_store, b_store = await open_pg(), await open_pg()
    a, b = a_store.lane_locks(), b_store.lane_locks()
    got: asyncio.Queue[str] = asyncio.Queue()
    await a.open(got.put_nowait)
    await b.open(lambda _: None)
    try:
        await b.notify_wake("ebay")
        assert await asyncio.wait_for(got.get(), 5) == "ebay"
    finally:
        await a.close()
        await b.close()


async def test_a_live_daemons_running_jobs_are_never_rescued(
        open_pg: OpenPg, clock: FakeClock) -> None:
    """rescue_dead returns a daemon's jobs only once its heartbeat is stale; running jobs no
    instance claimed (an older marketd) only once they have run that long."""
    a, b = await open_pg(), await open_pg()
    await a.register_instance(A_ID, "h", 1)
    await b.register_instance(B_ID, "h", 2)
    await a.enqueue([spec("A-1"), spec("A-2"), spec("N-1")], 0)
    [job] = await a.claim("stockx", 1)
    clock.advance(4)
    assert await b.rescue_dead(5) == 0
    await a.heartbeat(["stockx"])
    clock.advance(4)
    assert await b.rescue_dead(5) == 0  # a beat 4 s ago
    b.instance_id, unowned_by = None, b.instance_id
    [unowned] = await b.claim("stockx", 1)
    b.instance_id = unowned_by
    assert await b.rescue_dead(5) == 0  # just started
    clock.advance(6)
    assert await b.rescue_dead(5) == 2  # a's heartbeat is 10 s old; unowned ran 6 s
    for j in (job, unowned):
        got = await b.get_job(j.id)
        assert got is not None and got.status == JobStatus.PENDING
