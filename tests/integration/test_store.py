"""The store interface, run against every backend in tests/conftest.py's STORE_BACKENDS: queue
operations, dedupe, freshness, rescue, the call log, and the writes that ride the next
transaction. Backend-specific behaviour (files, pragmas, checkpoints) has its own module."""

from __future__ import annotations

import inspect

import pytest

from marketd.clock import FakeClock, iso
from marketd.errors import StoreError
from marketd.models import JobSpec, JobStatus, Price
from marketd.store import Defer, Outcomes, Retry, SQLiteStore, Store
from marketd.store.pending import MAX_WAIT_S
from marketd.store.shared import AGE_BATCH_ROWS
from tests.conftest import STORE_BACKENDS, OpenStore


@pytest.fixture(params=sorted(STORE_BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def spec(sku: str = "DD1391-100", size: str | None = "10", provider: str = "stockx",
         priority: int = 100) -> JobSpec:
    return JobSpec(provider, sku, size, priority=priority)


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


async def test_batch_is_atomic(store: Store) -> None:
    """A batch that fails in the database leaves nothing behind."""
    bad = JobSpec("nosuch", "X", None)  # violates the provider CHECK constraint
    with pytest.raises(StoreError):
        await store.enqueue([spec("A-1"), bad], 0)
    assert await store.job_counts() == {}


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


async def test_reserve_reads_only_calls_it_has_not_seen(store: Store) -> None:
    """Before each call the store reads calls recorded after the last one it saw by id, not
    every call in the window (a 25000/day limit keeps a day of calls)."""
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
        raise RuntimeError("decide failed")

    with pytest.raises(RuntimeError):
        await store.reserve_call("stockx", 100, 0, 0.0, broken)
    assert (await store.get_job(job.id)).status == "running"  # type: ignore[union-attr]
    await store.flush()
    assert (await store.get_job(job.id)).status == "completed"  # type: ignore[union-attr]
    assert await store.load_calls("stockx", 0.0) == []  # the failed reservation left nothing


async def test_close_writes_queued_results(open_store: OpenStore) -> None:
    """Closing the store writes what was waiting for a transaction."""
    store = await open_store()
    await store.enqueue([spec("A-1")], 0)
    [job] = await store.claim("stockx", 10)
    store.record_soon(Outcomes(completed=[job.id]))
    await store.close()
    again = await open_store()
    assert (await again.get_job(job.id)).status == "completed"  # type: ignore[union-attr]


async def test_pending_writes_are_flushed_once_due(store: Store, clock: FakeClock) -> None:
    """flush_due writes nothing before the oldest pending write has waited its limit
    (store.pending.MAX_WAIT_S), and everything after."""
    await store.enqueue([spec("A-1")], 0)
    [job] = await store.claim("stockx", 10)
    store.record_soon(Outcomes(completed=[job.id]))
    clock.advance(MAX_WAIT_S / 2)
    await store.flush_due()
    assert (await store.get_job(job.id)).status == "running"  # type: ignore[union-attr]
    clock.advance(MAX_WAIT_S / 2)
    await store.flush_due()
    assert (await store.get_job(job.id)).status == "completed"  # type: ignore[union-attr]


async def test_jobs_carry_domain_types(store: Store, clock: FakeClock) -> None:
    """Jobs come back with a JobStatus and epoch-second times; the API shape has ISO text."""
    await store.enqueue([spec("A-1")], 0)
    [job] = await store.claim("stockx", 1)
    assert job.status is JobStatus.RUNNING
    assert job.created_at == pytest.approx(clock.now(), abs=0.001)
    assert job.started_at == pytest.approx(clock.now(), abs=0.001)
    shown = job.as_dict()
    assert shown["status"] == "running" and shown["created_at"] == iso(job.created_at)
    assert shown["completed_at"] is None


def test_every_backend_implements_the_interface() -> None:
    """Each backend class has every method of the Store protocol, with the same parameters."""
    members = [n for n in dir(Store) if not n.startswith("_") and callable(getattr(Store, n))]
    assert len(members) > 30
    from marketd.store.postgres import PostgresStore

    for cls in (SQLiteStore, PostgresStore):
        for name in members:
            theirs = inspect.signature(getattr(cls, name))
            ours = inspect.signature(getattr(Store, name))
            assert list(theirs.parameters) == list(ours.parameters), (cls.__name__, name)


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



# ---- who works: instances, heartbeats, the dead's jobs --------------------------------------

A_ID = "00000000-0000-4000-8000-00000000000a"
B_ID = "00000000-0000-4000-8000-00000000000b"


async def test_instance_rows_and_heartbeats(open_store: OpenStore, clock: FakeClock) -> None:
    """register_instance records the row; heartbeat moves heartbeat_at and the lanes;
    retire_instance removes it."""
    a = await open_store()
    await a.register_instance(A_ID, "host-a", 123)
    assert a.instance_id == A_ID
    [row] = await a.instances()
    assert row == {"id": A_ID, "host": "host-a", "pid": 123, "started_at": iso(clock.now()),
                   "heartbeat_at": iso(clock.now()), "lanes": []}
    clock.advance(3)
    await a.heartbeat(["ebay", "alias"])
    [row] = await a.instances()
    assert row["heartbeat_at"] == iso(clock.now()) and sorted(row["lanes"]) == ["alias", "ebay"]
    assert row["started_at"] == iso(clock.now() - 3)
    assert await a.retire_instance() == 0
    assert await a.instances() == []


async def test_claims_and_runs_carry_the_instance(open_store: OpenStore) -> None:
    """A registered store's claims and runs are its instance's; a graceful stop returns only
    its own running jobs to pending, and rescue_stuck(0) leaves another daemon's alone."""
    a, b = await open_store(), await open_store()
    await a.register_instance(A_ID, "h", 1)
    await b.register_instance(B_ID, "h", 2)
    await a.enqueue([spec("A-1"), spec("B-1")], 0)
    [ja] = await a.claim("stockx", 1)
    [jb] = await b.claim("stockx", 1)
    run_id, _ = await a.begin_run("manual", {"stockx": 100}, 600, 0)
    [run] = [r for r in await a.recent_runs() if r["id"] == run_id]
    assert run["instance_id"] == A_ID
    assert await b.rescue_stuck(0) == 1  # b's own
    assert (await a.get_job(ja.id)).status == JobStatus.RUNNING  # type: ignore[union-attr]
    assert (await a.get_job(jb.id)).status == JobStatus.PENDING  # type: ignore[union-attr]
    [jb] = await b.claim("stockx", 1)
    assert await a.retire_instance() == 1
    assert (await a.get_job(ja.id)).status == JobStatus.PENDING  # type: ignore[union-attr]
    assert (await a.get_job(jb.id)).status == JobStatus.RUNNING  # type: ignore[union-attr]
    assert [r["id"] for r in await b.instances()] == [B_ID]


async def test_a_dead_instances_running_jobs_go_back_but_never_the_rescuers(
        open_store: OpenStore, clock: FakeClock) -> None:
    """A daemon that stopped beating (killed) leaves running jobs; another daemon's
    rescue_dead returns them to pending once the heartbeat is stale, and keeps its own."""
    a, b = await open_store(), await open_store()
    await a.register_instance(A_ID, "h", 1)
    await b.register_instance(B_ID, "h", 2)
    await a.enqueue([spec("A-1"), spec("A-2"), spec("B-1")], 0)
    mine = await b.claim("stockx", 1)
    dead = await a.claim("stockx", 2)
    clock.advance(10)
    await b.heartbeat(["stockx"])
    assert await b.rescue_dead(5) == 2
    for job in dead:
        got = await b.get_job(job.id)
        assert got is not None and got.status == JobStatus.PENDING
        assert "stopped while it was running" in (got.error_message or "")
    assert (await b.get_job(mine[0].id)).status == JobStatus.RUNNING  # type: ignore[union-attr]
    assert await b.rescue_dead(5) == 0
    again = await b.claim("stockx", 5)
    assert sorted(j.id for j in again) == sorted(j.id for j in dead)


async def test_lane_locks_open_and_wake(store: Store) -> None:
    """A lane lock taken is held until released; a wake-up sent reaches this daemon too."""
    import asyncio

    locks = store.lane_locks()
    woken: list[str] = []
    got = asyncio.Event()

    def on_wake(provider: str) -> None:
        woken.append(provider)
        got.set()

    await locks.open(on_wake)
    try:
        assert await locks.try_acquire("stockx") and locks.holds("stockx")
        assert await locks.check()
        await locks.notify_wake("alias")
        await asyncio.wait_for(got.wait(), 5)  # a notification's delivery, not a clock
        assert woken == ["alias"]
        await locks.release("stockx")
        assert not locks.holds("stockx")
    finally:
        await locks.close()


async def test_aging_raises_a_backlog_larger_than_one_transaction(store: Store,
                                                                  clock: FakeClock) -> None:
    """Aging writes AGE_BATCH_ROWS jobs per transaction until none are left: every old job of
    the provider in the priority range rises, the count says so, nothing else moves."""
    n = AGE_BATCH_ROWS + 7
    await store.enqueue([spec(f"OLD-{i}") for i in range(n)], 0)
    await store.enqueue([spec("MANUAL-1", priority=200), spec("ALIAS-1", provider="alias"),
                         spec("IDLE-1", priority=40)], 0)
    clock.advance(3600)
    await store.enqueue([spec("YOUNG-1")], 0)
    raised = await store.age_jobs("stockx", above=50, to=150, enqueued_before=clock.now() - 60)
    assert raised == n
    jobs = await store.list_jobs(status="pending", limit=1000, offset=0)
    by_sku = {j.sku: j.priority for j in jobs}
    assert by_sku["MANUAL-1"] == 200 and by_sku["ALIAS-1"] == 100
    assert by_sku["IDLE-1"] == 40 and by_sku["YOUNG-1"] == 100
    counts: dict[int, int] = {}
    for offset in range(0, n + 4, 1000):
        for j in await store.list_jobs(status="pending", provider="stockx", limit=1000,
                                       offset=offset):
            counts[j.priority] = counts.get(j.priority, 0) + 1
    assert counts == {150: n, 200: 1, 100: 1, 40: 1}
    assert await store.age_jobs("stockx", above=50, to=150,
                                enqueued_before=clock.now() - 60) == 0
