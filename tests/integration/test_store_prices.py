"""The prices going out, on every backend of tests/conftest.py's STORE_BACKENDS: history that
records change, the export's filters and pages, and what rides with them."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from marketd.clock import FakeClock, iso
from marketd.models import JobSpec, Price
from marketd.store import Outcomes, SQLiteStore, Store
from tests.conftest import STORE_BACKENDS


@pytest.fixture(params=sorted(STORE_BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def price(clock: FakeClock, ask: int | None, *, sku: str = "A-1", size: str | None = "10",
          provider: str = "stockx", currency: str = "GBP", bid: int | None = None) -> Price:
    return Price(provider, sku, size, currency, ask, bid, None, clock.now())


async def test_history_records_only_changes(store: Store, clock: FakeClock) -> None:
    """The same price fetched three times leaves one history point; the latest price says when
    it was last confirmed; a change adds a point; history is oldest first."""
    first = clock.now()
    for _ in range(3):
        await store.record(Outcomes(prices=[price(clock, 9600)]))
        clock.advance(60)
    [latest] = await store.list_prices()
    assert latest["fetched_at"] == iso(first + 120)
    hist = await store.price_history("stockx", "A-1", "10")
    assert hist == [{"fetched_at": iso(first), "currency": "GBP", "lowest_ask": 9600,
                     "highest_bid": None, "last_sale": None}]
    await store.record(Outcomes(prices=[price(clock, 9500)]))
    clock.advance(60)
    await store.record(Outcomes(prices=[price(clock, 9500, bid=9000)]))
    clock.advance(60)
    await store.record(Outcomes(prices=[price(clock, 9500, bid=9000, currency="USD")]))
    points = await store.price_history("stockx", "A-1", "10")
    assert [(p["lowest_ask"], p["highest_bid"], p["currency"]) for p in points] == [
        (9600, None, "GBP"), (9500, None, "GBP"), (9500, 9000, "GBP"), (9500, 9000, "USD")]
    since = await store.price_history("stockx", "A-1", "10", since=first + 200)
    assert [p["currency"] for p in since] == ["GBP", "USD"]
    assert await store.price_history("stockx", "A-1", "9") == []


async def test_history_of_a_sizeless_key_and_an_older_fetch(store: Store,
                                                            clock: FakeClock) -> None:
    """Size-less keys have history under size None; a fetch older than the stored price is
    not a change; two rows of one key in one write count once (the newest)."""
    await store.record(Outcomes(prices=[price(clock, 100, size=None)]))
    old = price(clock, 50, size=None)
    clock.advance(10)
    await store.record(Outcomes(prices=[price(clock, 200, size=None)]))
    await store.record(Outcomes(prices=[old]))
    assert [p["lowest_ask"] for p in await store.price_history("stockx", "A-1", None)] == [
        100, 200]
    clock.advance(10)
    a = price(clock, 300, size=None)
    clock.advance(1)
    store.record_soon(Outcomes(prices=[a]))
    store.record_soon(Outcomes(prices=[price(clock, 400, size=None)]))
    await store.flush()
    assert [p["lowest_ask"] for p in await store.price_history("stockx", "A-1", None)] == [
        100, 200, 400]
    [latest] = await store.list_prices(sku="A-1")
    assert latest["lowest_ask"] == 400  # the newest of the write's two rows is the one stored


async def test_jobs_for_history_keys_still_complete(store: Store, clock: FakeClock) -> None:
    """An unchanged price still completes the jobs that asked for it."""
    await store.enqueue([JobSpec("stockx", "A-1", "10")], 0)
    await store.record(Outcomes(prices=[price(clock, 1)]))
    [job] = await store.claim("stockx", 1) or [None]
    assert job is None  # answered by the stored price
    await store.enqueue([JobSpec("stockx", "A-1", "10")], 0)
    [job] = await store.claim("stockx", 1)
    await store.record(Outcomes(completed=[job.id], prices=[price(clock, 1)]))
    assert await store.job_counts() == {"stockx": {"completed": 2}}
    assert len(await store.price_history("stockx", "A-1", "10")) == 1


async def test_migration_drops_repeated_history_rows(tmp_path: Path, clock: FakeClock) -> None:
    """Upgrading a database whose history repeats unchanged prices keeps the first row of
    every run of equal prices (SQLite; PostgreSQL's migration 0003 is the same statement)."""
    path = str(tmp_path / "old.db")
    store = await SQLiteStore.open(path, clock)
    await store.close()
    with closing(sqlite3.connect(path)) as conn, conn:
        rows = [("stockx", "A-1", "10", "GBP", ask, None, None, f"2026-01-01T00:0{i}:00.000Z")
                for i, ask in enumerate((1, 1, 2, 2, 1, None, None))]
        conn.executemany("INSERT INTO market_price_history (provider, sku, size, currency, "
                         "lowest_ask, highest_bid, last_sale, fetched_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("DELETE FROM schema_migrations WHERE version = 5")
    store = await SQLiteStore.open(path, clock)
    try:
        points = await store.price_history("stockx", "A-1", "10")
        assert [p["lowest_ask"] for p in points] == [1, 2, 1, None]
    finally:
        await store.close()


async def test_list_prices_filters_and_pages(store: Store, clock: FakeClock) -> None:
    """Several SKUs, a user's keys, and pages after a cursor in (sku, provider, size) byte
    order: every row exactly once, on every backend."""
    rows = [price(clock, i, sku=sku, size=size, provider=prov)
            for i, (sku, prov, size) in enumerate(
                (s, p, z) for s in ("A-1", "B-2", "a-3", "C-3") for p in ("alias", "stockx")
                for z in ("10", "9", "EU 40", None))]
    await store.record(Outcomes(prices=rows))
    every = await store.list_prices(limit=1000)
    assert len(every) == 32
    keys = [(r["sku"], r["provider"], r["size"] or "") for r in every]
    assert keys == sorted(keys, key=lambda k: tuple(s.encode() for s in k))
    paged: list[tuple[str, str, str]] = []
    after = None
    while True:
        page = await store.list_prices(limit=5, after=after)
        paged += [(r["sku"], r["provider"], r["size"] or "") for r in page]
        if len(page) < 5:
            break
        after = paged[-1]
    assert paged == keys
    two = await store.list_prices(skus=["B-2", "C-3"], provider="stockx", size="10")
    assert [(r["sku"], r["size"]) for r in two] == [("B-2", "10"), ("C-3", "10")]
    assert [r["sku"] for r in await store.list_prices(sku="A-1", skus=["B-2"], size="9")] == [
        "A-1", "A-1", "B-2", "B-2"]
    assert await store.list_prices(skus=[]) == []
    # a user's keys: the prices of the keys that user's jobs asked for
    await store.enqueue([JobSpec("stockx", "A-1", "10", user_id="u1"),
                         JobSpec("alias", "C-3", None, user_id="u1"),
                         JobSpec("stockx", "B-2", "40", "EU", user_id="u1"),
                         JobSpec("stockx", "B-2", "9", user_id="u2")], 0)
    mine = await store.list_prices(user_id="u1")
    assert [(r["provider"], r["sku"], r["size"]) for r in mine] == [
        ("stockx", "A-1", "10"), ("stockx", "B-2", "EU 40"), ("alias", "C-3", None)]
    assert await store.list_prices(user_id="nobody") == []
    jobs = await store.list_jobs(user_id="u1")
    assert len(jobs) == 3 and {j.user_id for j in jobs} == {"u1"}
    assert len(await store.list_jobs(user_id="u2", provider="stockx")) == 1


async def test_portfolio_prices(store: Store, clock: FakeClock) -> None:
    """Every provider's price of the keys users asked for, with a catalog title (its own
    provider's first, else any) and image; keys nobody asked for are left out."""
    await store.record(Outcomes(
        prices=[price(clock, 1), price(clock, 2, provider="alias", currency="USD"),
                price(clock, 3, size="9"), price(clock, 4, sku="B-2", size=None)],
        wanted=[("stockx", "A-1", "10", "10", "UK"), ("ebay", "B-2", "", None, "UK")]))
    await store.put_catalog("stockx", "A-1", product_id="p", title="Shoe A",
                            image_url="https://img/a.png")
    await store.put_catalog("alias", "A-1", product_id="q", title="Alias's Shoe A",
                            image_url="")
    rows = await store.portfolio_prices()
    assert [(r["provider"], r["sku"], r["size"], r["currency"], r["title"], r["image_url"])
            for r in rows] == [
        ("alias", "A-1", "10", "USD", "Alias's Shoe A", "https://img/a.png"),
        ("stockx", "A-1", "10", "GBP", "Shoe A", "https://img/a.png"),
        ("stockx", "B-2", None, "GBP", None, None)]
    assert len(await store.portfolio_prices(limit=1)) == 2
    # the next page starts after the last key of this one, byte order on every backend
    assert [(r["sku"], r["size"]) for r in await store.portfolio_prices(
        limit=1, after=("A-1", "10"))] == [("B-2", None)]
    assert await store.portfolio_prices(after=("B-2", "")) == []


async def test_portfolio_pages_over_keys_with_a_price(store: Store, clock: FakeClock) -> None:
    """A key asked for and not priced yet takes no place on a page: limit counts keys that
    have a price, so a page is short only at the end."""
    wanted = [("stockx", f"K-{i}", "10", "10", "UK") for i in range(5)]
    await store.record(Outcomes(prices=[price(clock, i, sku=f"K-{i}") for i in (0, 2, 4)],
                                wanted=wanted))
    first = await store.portfolio_prices(limit=2)
    assert [r["sku"] for r in first] == ["K-0", "K-2"]
    assert [r["sku"] for r in await store.portfolio_prices(limit=2, after=("K-2", "10"))] == [
        "K-4"]


async def test_enrichment_queues_lookups_for_untitled_skus(store: Store,
                                                           clock: FakeClock) -> None:
    """Untitled SKUs users asked for get one lowest-priority job per (provider, SKU), their
    title-less cache forgotten; titled ones, eBay, uncached and recent look-ups are left
    alone (unless asked now)."""
    from marketd.enrich import ENRICH_PRIORITY, enqueue_enrichment

    await store.record(Outcomes(wanted=[
        ("stockx", "A-1", "10", "10", "UK"), ("stockx", "A-1", "9", "9", "UK"),
        ("alias", "A-1", "EU 44", "44", "EU"), ("ebay", "B-2", "10", "10", "UK"),
        ("stockx", "C-3", "10", "10", "UK"), ("stockx", "D-4", "10", "10", "UK")]))
    await store.put_catalog("alias", "C-3", product_id="c", title="Named C")
    await store.put_catalog("stockx", "A-1", product_id="a", title=None)
    await store.put_catalog("alias", "A-1", product_id="a2", title="")
    await store.put_catalog("ebay", "B-2", product_id="b", title=None)
    clock.advance(8 * 86400)
    await store.put_catalog("stockx", "D-4", product_id="d", title="")  # looked up just now
    queued = await enqueue_enrichment(store)
    assert [(q["provider"], q["sku"], q["size"]) for q in queued] == [
        ("alias", "A-1", "44"), ("stockx", "A-1", "10")]
    assert await store.get_catalog("stockx", "A-1") is None
    assert await store.get_catalog("stockx", "D-4") is not None
    jobs = await store.list_jobs()
    assert {(j.provider, j.priority, j.size_system) for j in jobs} == {
        ("alias", ENRICH_PRIORITY, "EU"), ("stockx", ENRICH_PRIORITY, "UK")}
    await store.put_catalog("stockx", "A-1", product_id="a", title=None)  # looked up again
    await store.put_catalog("alias", "A-1", product_id="a2", title=None)
    assert await enqueue_enrichment(store) == []  # not again within the week
    now = await enqueue_enrichment(store, retry_after_s=0)  # `marketd enrich`: now
    assert len(now) == 3 and len(await store.list_jobs()) == 3  # + D-4; A-1's are pending
