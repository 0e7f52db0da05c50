"""Issue 16's store-side hardening, against real SQLite files (and a fresh PostgreSQL database
where the page reads differ): /healthz says when the database refuses writes, the page's deep
pages come by keyset with bounded counts, the WAL is truncated after a large write, and the
database file and its WAL files are owner-only after the store opens them."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer
from bs4 import BeautifulSoup

from marketd.app import create_daemon
from marketd.clock import FakeClock
from marketd.config import parse_config
from marketd.daemon import Daemon
from marketd.models import JobSpec
from marketd.page import cursor_of
from marketd.store import SQLiteStore
from marketd.store.records import PAGE_COUNT_CAP
from marketd.web import create_app
from tests.conftest import postgres_database
from tests.support import make_config, scripted_factory

PAGE_SIZE = 50


@dataclass
class Served:
    daemon: Daemon
    client: TestClient[Any, Any]


async def serve(config: Any, clock: FakeClock) -> Served:
    factory = scripted_factory({})
    daemon = await create_daemon(config, clock=clock, clients=dict.fromkeys(
        ("stockx", "alias", "ebay"), factory))
    client = TestClient(TestServer(create_app(daemon), host="127.0.0.1"))
    try:
        await client.start_server()
    except BaseException:
        await daemon.close()
        raise
    return Served(daemon, client)


@pytest.fixture
async def sqlite_served(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Served]:
    s = await serve(make_config(tmp_path, scheduler={"manual_wake_ms": 60000}), clock)
    yield s
    await s.client.close()
    await s.daemon.close()


# ---- /healthz when the database refuses writes -------------------------------------------------


async def _writer_pragma(store: Any, pragma: str, *, then_fail: bool = False) -> int:
    """Run a PRAGMA on the store's own write connection (max_page_count is per connection:
    SQLite's way to make the disk "full" without filling one). ``then_fail``: the write
    that carries it fails afterwards, so no write has succeeded since."""

    def work(conn: sqlite3.Connection) -> int:
        value = int(conn.execute(pragma).fetchone()[0])
        if then_fail:
            raise RuntimeError("not a successful write")
        return value

    try:
        return int(await store.db.write(work))
    except RuntimeError:
        return -1


async def test_healthz_is_503_while_writes_are_refused_and_200_after_one_succeeds(
        sqlite_served: Served) -> None:
    """A write the disk refuses turns /healthz to 503, writable false, with the reason; it
    stays so until a write succeeds (room alone is not enough), then 200 again."""
    daemon, client = sqlite_served.daemon, sqlite_served.client
    store = daemon.store
    # the scheduler is started only at the end: its start-up run writes too, and a write that
    # succeeds in between would (rightly) clear the refusal before the test looked
    resp = await client.get("/healthz")
    body = await resp.json()
    assert body["writable"] is True and "refuses writes" not in body.get("reason", "")

    # the disk is full: no page may be added to the file
    pages = await _writer_pragma(store, "PRAGMA page_count")
    await _writer_pragma(store, f"PRAGMA max_page_count = {pages}")
    jobs = [{"provider": "stockx", "sku": f"FULL-{i}", "size": "10"} for i in range(500)]
    resp = await client.post("/enqueue", json={"jobs": jobs})
    assert resp.status == 503, await resp.text()

    resp = await client.get("/healthz")
    body = await resp.json()
    assert resp.status == 503, body
    assert body["ok"] is False and body["writable"] is False
    assert body["database"] is True  # it still answers reads
    assert "the database refuses writes: database or disk is full" in body["reason"]

    # room again, but nothing written yet: still refused (the last write failed)
    await _writer_pragma(store, "PRAGMA max_page_count = 1073741823", then_fail=True)
    body = await (await client.get("/healthz")).json()
    assert body["writable"] is False

    resp = await client.post("/enqueue", json={"jobs": jobs})
    assert resp.status == 202, await resp.text()
    daemon.scheduler.start()
    try:
        resp = await client.get("/healthz")
        body = await resp.json()
        assert resp.status == 200, body
        assert body == {"ok": True, "database": True, "writable": True, "scheduler": True}
    finally:
        await daemon.scheduler.stop(daemon.config.scheduler.shutdown_grace_seconds)


# ---- the page: keyset cursors, bounded counts --------------------------------------------------


async def _fill(daemon: Daemon, clock: FakeClock, n: int) -> list[str]:
    """``n`` pending stockx jobs of varied priority over several enqueue times; returns their
    SKUs in the scheduler's order (priority descending, then age, then insertion)."""
    made: list[tuple[int, int, int, str]] = []
    batch = 1000
    for b, start in enumerate(range(0, n, batch)):
        specs = []
        for i in range(start, min(n, start + batch)):
            priority = 100 + (i * 7919) % 5 * 10
            sku = f"K{i:06d}"
            specs.append(JobSpec("stockx", sku, "10", priority=priority))
            made.append((-priority, b, i, sku))
        results = await daemon.store.enqueue(specs, 0)
        assert all(r.status == "pending" for r in results)
        clock.advance(1)
    return [sku for *_, sku in sorted(made)]


def _page_skus(doc: BeautifulSoup) -> list[str]:
    return [tr.find_all("td")[1].get_text(strip=True) for tr in doc.select("#jobs tr[data-status]")]


def _next_link(doc: BeautifulSoup) -> str | None:
    a = doc.select_one('a[rel="next"]')
    return str(a["href"]) if a is not None else None


async def _get(client: TestClient[Any, Any], path: str) -> BeautifulSoup:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return BeautifulSoup(await resp.text(), "html.parser")


async def _check_keyset_page(served: Served, clock: FakeClock) -> None:
    daemon, client = served.daemon, served.client
    n = PAGE_COUNT_CAP + 2 * PAGE_SIZE + 7
    order = await _fill(daemon, clock, n)

    asked: list[dict[str, Any]] = []  # what the page asked of the store (not a mock: a spy)
    real = daemon.store.page_jobs

    async def spy(**kw: Any) -> Any:
        asked.append(kw)
        return await real(**kw)

    daemon.store.page_jobs = spy  # type: ignore[method-assign]

    # the first pages by their next links: each the next 50 of the queue, in order
    doc = await _get(client, "/?status=all")
    assert _page_skus(doc) == order[:PAGE_SIZE]
    summary = doc.get_text(" ", strip=True)
    assert f"{PAGE_COUNT_CAP} or more job(s)" in summary
    at = PAGE_SIZE
    for _ in range(3):
        href = _next_link(doc)
        assert href is not None
        doc = await _get(client, href)
        assert _page_skus(doc) == order[at:at + PAGE_SIZE]
        at += PAGE_SIZE

    # a deep cursor: the next link of the page ending with the queue's 5,000th job
    full = await real(view="all", provider=None, now=clock.now(), limit=n, offset=0)
    rows = full[1]
    assert [r["sku"] for r in rows] == order
    deep = 5000
    doc = await _get(client, "/?" + _query(status="all", page="101",
                                           after=cursor_of(rows[deep - 1])))
    assert _page_skus(doc) == order[deep:deep + PAGE_SIZE]
    href = _next_link(doc)
    assert href is not None
    doc = await _get(client, href)
    assert _page_skus(doc) == order[deep + PAGE_SIZE:deep + 2 * PAGE_SIZE]

    # past the count cap: the last rows still come, and the last page has no next link
    doc = await _get(client, "/?" + _query(status="all", page="999",
                                           after=cursor_of(rows[n - 31])))
    assert _page_skus(doc) == order[n - 30:]
    assert _next_link(doc) is None

    # a deep page number without a cursor is not read at a deep OFFSET: it is page 1
    doc = await _get(client, "/?status=all&page=999999")
    assert _page_skus(doc) == order[:PAGE_SIZE]

    # the pending view's "jobs ahead" is bounded: the last job says "or more"
    doc = await _get(client, "/?" + _query(status="pending", page="999",
                                           after=cursor_of(rows[n - 2])))
    assert _page_skus(doc) == order[n - 1:]
    why = doc.select("#jobs tr[data-status]")[0].find_all("td")[8].get_text(" ", strip=True)
    m = re.search(r"behind ([0-9]+) or more job", why)
    assert m is not None and int(m[1]) >= PAGE_COUNT_CAP, why

    assert asked, "the page did not read the job table"
    for kw in asked:
        assert kw["offset"] <= 20 * PAGE_SIZE, kw
        if kw.get("after") is not None:
            assert kw["offset"] == 0, kw
        assert kw["limit"] <= PAGE_SIZE + 1, kw


def _query(**params: str) -> str:
    return urlencode(params)


async def test_deep_keyset_pages_on_a_large_queue_sqlite(sqlite_served: Served,
                                                          clock: FakeClock) -> None:
    await _check_keyset_page(sqlite_served, clock)


async def test_deep_keyset_pages_on_a_large_queue_postgres(tmp_path: Path,
                                                            clock: FakeClock) -> None:
    databases = cast(AsyncGenerator[str, None], postgres_database())
    url = await anext(databases)
    try:
        config = parse_config({"database": {"url": url}, "server": {"port": 0},
                               "scheduler": {"manual_wake_ms": 60000}}, env={})
        served = await serve(config, clock)
        try:
            await _check_keyset_page(served, clock)
        finally:
            await served.client.close()
            await served.daemon.close()
    finally:
        await databases.aclose()


# ---- the WAL after a large write ---------------------------------------------------------------

JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


async def test_wal_is_truncated_after_a_large_enqueue(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "marketd.db"
    store = await SQLiteStore.open(str(path), clock)
    try:
        wal = Path(f"{path}-wal")
        (limit,) = (await store.db.read("PRAGMA journal_size_limit"))[0]
        assert limit == JOURNAL_SIZE_LIMIT
        before = store.checkpoints
        for start in range(0, 30_000, 10_000):
            await store.enqueue([JobSpec("stockx", f"BIG-{i}", "10")
                                 for i in range(start, start + 10_000)], 0)
        grown = wal.stat().st_size
        assert grown > 4 * 1024 * 1024, grown  # the enqueue went through the WAL
        # idle: the background checkpoint runs and truncates
        await store.wait_checkpoint()
        assert store.checkpoints > before
        assert wal.stat().st_size == 0
        # and the rows are in the database file itself
        assert (await store.pending_count()) == 30_000
    finally:
        await store.close()


# ---- file modes --------------------------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


async def test_a_database_created_0644_is_0600_after_the_store_opens_it(
        tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "marketd.db"
    old = os.umask(0o022)
    try:
        other = sqlite3.connect(path)  # someone else's tool, under a permissive umask
        other.execute("PRAGMA journal_mode = WAL")
        other.execute("CREATE TABLE scratch (x)")
        other.execute("INSERT INTO scratch VALUES (1)")
        other.commit()
    finally:
        os.umask(old)
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    assert [_mode(p) for p in files] == [0o644] * 3
    store = await SQLiteStore.open(str(path), clock)
    try:
        assert [_mode(p) for p in files] == [0o600] * 3
        await store.enqueue([JobSpec("stockx", "DD1391-100", "10")], 0)
        assert [_mode(p) for p in files] == [0o600] * 3
    finally:
        other.close()
        await store.close()
    assert _mode(path) == 0o600


async def test_wal_files_made_by_the_store_are_0600(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "marketd.db"
    sqlite3.connect(path).close()  # an empty file, made 0644 under the usual umask
    os.chmod(path, 0o644)
    store = await SQLiteStore.open(str(path), clock)
    try:
        await store.enqueue([JobSpec("stockx", "DD1391-100", "10")], 0)
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert _mode(p) == 0o600, p
    finally:
        await store.close()

