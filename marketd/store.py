"""The only module that talks to SQLite.

One write connection (every write in ``BEGIN IMMEDIATE``, serialised by an asyncio lock) and
one read connection; WAL lets them work side by side. Methods return frozen dataclasses or
plain dicts and turn driver errors into :class:`~marketd.errors.StoreError`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import structlog

from marketd import sql
from marketd.clock import Clock, hour_window, iso
from marketd.errors import StoreError
from marketd.models import EnqueueResult, Job, JobSpec, Price, Priority, dedupe_key

Q = sql.queries()
log = structlog.get_logger(__name__)

# WAL checkpoints run on a connection and thread of their own, never inside a write, and when
# the writer is idle: the write connection's automatic checkpoint is off; once this many rows
# changed since the last checkpoint, a PASSIVE one starts after CHECKPOINT_IDLE_S without a
# write (beside claims, checkpoints took their p99 to 3-5x p50), or at once past
# CHECKPOINT_FORCE_CHANGES under sustained writes, which bounds the WAL
CHECKPOINT_AFTER_CHANGES = 5000
CHECKPOINT_FORCE_CHANGES = 100_000
CHECKPOINT_IDLE_S = 0.25


@dataclass(frozen=True, slots=True)
class Retry:
    job_id: str
    error: str
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class Defer:
    job_id: str
    next_attempt_at: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Outcomes:
    """What one group of calls decided, written in one transaction."""

    completed: Sequence[str] = ()
    failed: Sequence[tuple[str, str]] = ()
    retried: Sequence[Retry] = ()
    deferred: Sequence[Defer] = ()
    prices: Sequence[Price] = ()
    # keys a user asked for and got: (provider, sku, size_key, size, size_system)
    wanted: Sequence[tuple[str, str, str, str | None, str]] = ()


@dataclass(frozen=True, slots=True)
class ProviderState:
    provider: str
    paused_until: float | None
    pause_reason: str | None
    credential: str | None


_Queued = tuple[Sequence[JobSpec], float, "asyncio.Future[list[EnqueueResult]]"]


def _consume(fut: asyncio.Future[list[EnqueueResult]]) -> None:
    """Retrieve the outcome of a caller's future even if the caller went away."""
    if not fut.cancelled():
        fut.exception()


def _job(row: sqlite3.Row | Mapping[str, Any]) -> Job:
    return Job(
        id=row["id"], user_id=row["user_id"], provider=row["provider"], sku=row["sku"],
        size=row["size"], size_system=row["size_system"], priority=row["priority"],
        status=row["status"], error_message=row["error_message"],
        retry_count=row["retry_count"], started_at=row["started_at"],
        completed_at=row["completed_at"], dedupe_key=row["dedupe_key"],
        created_at=row["created_at"], next_attempt_at=row["next_attempt_at"],
    )


class _Results:
    """Results of consecutive groups waiting for a write transaction, kept as rows so one
    transaction writes them all with one statement of each kind."""

    __slots__ = ("jobs", "now", "prices", "wanted")

    def __init__(self) -> None:
        self.prices: list[tuple[Any, ...]] = []
        self.wanted: list[tuple[Any, ...]] = []
        self.now = ""
        self.jobs: dict[str, list[dict[str, Any]]] = {
            "complete_job": [], "fail_job": [], "retry_job": [], "defer_job": []}

    def add(self, outcomes: Outcomes, now: str) -> None:
        self.now = now
        self.prices += [_price_row(p) for p in outcomes.prices]
        self.wanted += [(*w, now) for w in outcomes.wanted]
        jobs = self.jobs
        jobs["complete_job"] += [{"id": i, "now": now} for i in outcomes.completed]
        jobs["fail_job"] += [{"id": i, "now": now, "error": e[:1000]}
                             for i, e in outcomes.failed]
        jobs["retry_job"] += [{"id": r.job_id, "now": now, "error": r.error[:1000],
                               "next_attempt_at": iso(r.next_attempt_at)}
                              for r in outcomes.retried]
        jobs["defer_job"] += [{"id": d.job_id, "now": now, "error": d.error,
                               "next_attempt_at": iso(d.next_attempt_at)}
                              for d in outcomes.deferred]

    def __call__(self, conn: sqlite3.Connection) -> None:
        if self.prices:
            conn.executemany(Q["upsert_price"], self.prices)
            conn.executemany(Q["insert_price_history"], self.prices)
            conn.execute(Q["complete_answered"], {"now": self.now,
                                                  "keys": json.dumps([dedupe_key(*r[:3])
                                                                      for r in self.prices])})
        if self.wanted:
            conn.executemany(Q["remember_wanted"], self.wanted)
        for name, params in self.jobs.items():
            if params:
                conn.executemany(Q[name], params)


def _nothing(conn: sqlite3.Connection) -> None:
    """A transaction's own work when it only writes queued results (``Store.flush``)."""


def _price_row(p: Price) -> tuple[Any, ...]:
    return (p.provider, p.sku, p.size or "", p.currency, p.lowest_ask, p.highest_bid,
            p.last_sale, iso(p.fetched_at))


class Store:
    def __init__(self, path: str, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        self._lock = _lock()
        self._queued: list[_Queued] = []
        # results of groups waiting for the next write transaction (record_soon)
        self._unrecorded: list[Callable[[sqlite3.Connection], None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._ck: aiosqlite.Connection | None = None
        self._ck_task: asyncio.Task[None] | None = None
        self._changes_at_ck = 0
        self._changes = 0  # the write connection's total_changes after its last commit
        self.checkpoint_idle_s = CHECKPOINT_IDLE_S
        self.checkpoints = 0  # background checkpoints completed (for tests and /metrics)
        self.checkpoint_after_changes = CHECKPOINT_AFTER_CHANGES

    # ---- life cycle ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str, clock: Clock | None = None, *, migrate: bool = True) -> Store:
        store = cls(path, clock or Clock())
        await store._connect()
        if migrate:
            await store.migrate()
        return store

    async def _connect(self) -> None:
        try:
            _create_private(Path(self.path), exclusive=False)
            self._w = await self._connection()
            await self._w.execute("PRAGMA wal_autocheckpoint = 0")
            self._r = await self._connection()
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    async def _open(self) -> aiosqlite.Connection:
        """The driver's connection (a seam for bench/prototypes.py's inline store)."""
        return await aiosqlite.connect(self.path, isolation_level=None)

    async def _connection(self) -> aiosqlite.Connection:
        conn = await self._open()
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA busy_timeout = 10000")
        await conn.execute(Q["pragma_setup"])
        await conn.execute("PRAGMA synchronous = NORMAL")
        # the enqueue staging table is TEMP: keep it in memory, not in a file made per write
        await conn.execute("PRAGMA temp_store = MEMORY")
        await conn.execute("PRAGMA foreign_keys = ON")
        return conn

    async def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            with suppress(Exception):
                await self._writer  # enqueues already accepted are written first
        if self._w is not None:
            with suppress(Exception):
                await self.flush()  # and results waiting for a transaction
        if self._ck_task is not None and not self._ck_task.done():
            self._ck_task.cancel()  # closing checkpoints anyway (SQLite, last connection)
            with suppress(BaseException):
                await self._ck_task
        for conn in (self._w, self._r, self._ck):
            if conn is not None:
                with suppress(sqlite3.Error, ValueError):
                    await conn.close()
        self._w = self._r = self._ck = None

    @property
    def w(self) -> aiosqlite.Connection:
        if self._w is None:
            raise StoreError("the database is closed")
        return self._w

    @property
    def r(self) -> aiosqlite.Connection:
        if self._r is None:
            raise StoreError("the database is closed")
        return self._r

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed on success."""
        async with self._lock:
            conn = self.w
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"database busy or unavailable: {exc}") from exc
            except BaseException:
                # cancelled while the driver's thread still runs BEGIN: undo it, or every
                # later write fails with "cannot start a transaction within a transaction"
                await _rollback(conn)
                raise
            try:
                yield conn
            except sqlite3.Error as exc:
                await _rollback(conn)
                raise StoreError(f"database write failed: {exc}") from exc
            except BaseException:
                await _rollback(conn)
                raise
            try:
                await conn.execute("COMMIT")
            except sqlite3.Error as exc:
                await _rollback(conn)  # or every later BEGIN fails inside this transaction
                raise StoreError(f"commit failed: {exc}") from exc
            self._maybe_checkpoint(conn)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` as one write transaction inside the driver's thread.

        One trip to aiosqlite's thread for the whole transaction instead of one per statement
        (the hot paths: enqueue, claim, record, reserve_call). If the awaiting task is
        cancelled, the transaction still commits or rolls back whole in the thread.
        """
        async with self._lock:
            conn = self.w
            queued, self._unrecorded = self._unrecorded, []
            try:
                done = await _run_in_thread(conn, work, queued)
            except sqlite3.OperationalError as exc:  # busy, I/O: try them all again later
                self._unrecorded[:0] = queued
                raise StoreError(f"database write failed: {exc}") from exc
            except sqlite3.Error as exc:
                if not queued:
                    raise StoreError(f"database write failed: {exc}") from exc
                # a queued write may hold bad data: it must not fail this caller's write
                await self._write_alone(conn, queued)
                try:
                    done = await _run_in_thread(conn, work, ())
                except sqlite3.Error as exc2:
                    raise StoreError(f"database write failed: {exc2}") from exc2
            self._maybe_checkpoint(conn)
            return done

    async def _write_alone(self, conn: aiosqlite.Connection,
                           queued: Sequence[Callable[[sqlite3.Connection], None]]) -> None:
        """Each queued write in a transaction of its own; one the database refuses for its
        data is dropped and logged (its jobs stay 'running' until the stuck-job rescue)."""
        for at, write in enumerate(queued):
            try:
                await _run_in_thread(conn, _nothing, (write,))
            except sqlite3.OperationalError:
                self._unrecorded[:0] = queued[at:]
                return
            except sqlite3.Error as exc:
                log.error("queued_write_dropped", error=f"{type(exc).__name__}: {exc}")

    def _maybe_checkpoint(self, conn: aiosqlite.Connection) -> None:
        """After a commit (with the write lock held: the driver's thread is idle, so reading
        its counter is safe): once enough rows changed, start the background checkpoint that
        waits for the writer to be idle."""
        self._changes = conn._conn.total_changes
        if self._changes - self._changes_at_ck < self.checkpoint_after_changes:
            return
        if self._ck_task is not None and not self._ck_task.done():
            return
        self._ck_task = asyncio.get_running_loop().create_task(self._checkpoint_when_idle())

    async def _checkpoint_when_idle(self) -> None:
        while self._changes - self._changes_at_ck < CHECKPOINT_FORCE_CHANGES:
            seen = self._changes
            await asyncio.sleep(self.checkpoint_idle_s)
            if self._changes == seen and not self._lock.locked():
                break
        self._changes_at_ck = self._changes
        if self._ck is None:  # opened the first time it is needed: not at start-up
            try:
                self._ck = await self._connection()
            except sqlite3.Error as exc:
                log.warning("wal_checkpoint_failed", error=str(exc))
                return
        await self._checkpoint(self._ck)

    async def wait_checkpoint(self) -> None:
        """Wait for a background checkpoint in progress, if any."""
        if self._ck_task is not None:
            with suppress(Exception):
                await self._ck_task

    async def _checkpoint(self, conn: aiosqlite.Connection) -> None:
        try:
            await conn.execute(Q["wal_checkpoint"])
        except (sqlite3.Error, ValueError) as exc:  # the next one tries again
            log.warning("wal_checkpoint_failed", error=str(exc))
        else:
            self.checkpoints += 1

    async def _read(self, query: str, params: Any = ()) -> list[aiosqlite.Row]:
        try:
            async with self.r.execute(query, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc

    def now_iso(self) -> str:
        return iso(self.clock.now()) or ""

    # ---- schema ------------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Create or upgrade the schema; returns the versions applied now. Safe to repeat."""
        migrations = sql.migrations()
        async with self.tx() as conn:
            exists = await (await conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'")).fetchone()
            if not exists:
                await _executescript(conn, sql.schema())
                for version, name, _ in migrations:
                    await conn.execute(Q["record_migration"], (version, name, self.now_iso()))
                return [v for v, _, _ in migrations]
            done = {r[0] for r in await (await conn.execute(Q["applied_migrations"])).fetchall()}
            applied = []
            for version, name, text in migrations:
                if version not in done:
                    await _executescript(conn, text)
                    await conn.execute(Q["record_migration"], (version, name, self.now_iso()))
                    applied.append(version)
            return applied

    async def ping(self) -> bool:
        try:
            await self._read("SELECT 1")
            return True
        except StoreError:
            return False

    # ---- the queue ---------------------------------------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec], fresh_for_s: float) -> list[EnqueueResult]:
        """Enqueue many jobs in one transaction, in order; all or nothing.

        Group commit: concurrent callers share one transaction (one staging fill, one upsert,
        one COMMIT), written by a writer task of the store's own, so a caller that goes away
        cannot strand the others. Each caller gets its own results in its own order, only
        after the COMMIT that made them durable; if a shared transaction fails, each caller's
        jobs are written alone, so one caller's failure is never another's.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[EnqueueResult]] = loop.create_future()
        fut.add_done_callback(_consume)
        self._queued.append((specs, fresh_for_s, fut))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain())
        return await asyncio.shield(fut)

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # one loop turn: requests parsed meanwhile join this group
        while self._queued:
            group, self._queued = self._queued, []
            by_fresh: dict[float, list[_Queued]] = {}
            for item in group:
                by_fresh.setdefault(item[1], []).append(item)
            for fresh, items in by_fresh.items():
                await self._write_group(items, fresh)

    async def _write_group(self, items: list[_Queued], fresh_for_s: float) -> None:
        if len(items) > 1:
            try:
                results = await self._enqueue_tx([s for specs, _, _ in items for s in specs],
                                                 fresh_for_s)
            except Exception:  # noqa: S110 - each caller is retried alone just below
                pass
            else:
                at = 0
                for specs, _, fut in items:
                    if not fut.done():
                        fut.set_result(results[at:at + len(specs)])
                    at += len(specs)
                return
        for specs, _, fut in items:
            try:
                result = await self._enqueue_tx(specs, fresh_for_s)
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(result)

    async def _enqueue_tx(self, specs: Sequence[JobSpec],
                          fresh_for_s: float) -> list[EnqueueResult]:
        """One enqueue transaction."""
        now = self.clock.now()
        ids = _new_ids(len(specs))
        rows = [
            (i, ids[i], s.user_id, s.provider, s.sku, s.size, s.size_system,
             s.priority, s.dedupe_key, s.size_key)
            for i, s in enumerate(specs)
        ]
        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            conn.execute(Q["create_staging"])
            conn.execute(Q["clear_staging"])
            conn.executemany(Q["stage_job"], rows)
            if fresh_for_s > 0:
                conn.execute(Q["mark_fresh"], {
                    "manual": int(Priority.MANUAL), "fresh_after": iso(now - fresh_for_s)})
            conn.execute(Q["upsert_staged_jobs"], {"now": iso(now)})
            results = conn.execute(Q["staged_results"]).fetchall()
            conn.execute(Q["clear_staging"])
            return results

        results = await self._write(work)
        out: list[EnqueueResult] = []
        seen: set[str] = set()
        for r in results:
            if r["fresh"]:
                out.append(EnqueueResult(None, r["dedupe_key"], "fresh", r["asked_priority"],
                                         False))
                continue
            # a key given twice in one batch: the second is a duplicate of the first
            dup = r["id"] != r["proposed_id"] or r["id"] in seen
            seen.add(r["id"])
            out.append(EnqueueResult(r["id"], r["dedupe_key"], r["status"], r["priority"], dup))
        return out

    async def claim(self, provider: str, limit: int, *, min_priority: int = 0,
                    max_skus: int | None = None) -> list[Job]:
        """Mark up to ``limit`` due pending jobs running, highest priority then oldest first.

        With ``max_skus``, jobs of at most that many distinct SKUs are taken (a provider whose
        product-level call serves every size of a SKU spends one call per SKU, not per job).
        """
        if limit <= 0 or (max_skus is not None and max_skus <= 0):
            return []
        now = iso(self.clock.now())
        def work(conn: sqlite3.Connection) -> tuple[list[str], list[sqlite3.Row]]:
            rows = conn.execute(Q["select_pending"], {
                "provider": provider, "now": now, "limit": limit,
                "min_priority": min_priority}).fetchall()
            ids: list[str] = []
            skus: set[str] = set()
            for job_id, sku in rows:
                if max_skus is not None and sku not in skus and len(skus) >= max_skus:
                    continue
                skus.add(sku)
                ids.append(job_id)
            claimed = conn.execute(Q["claim_jobs"], {"ids": json.dumps(ids),
                                                     "now": now}).fetchall()
            return ids, claimed

        ids, claimed = await self._write(work)
        order = {job_id: i for i, job_id in enumerate(ids)}
        return sorted((_job(r) for r in claimed), key=lambda j: order[j.id])

    async def record(self, outcomes: Outcomes) -> None:
        """Write one group's results (jobs and prices) now, in one transaction, with any
        results :meth:`record_soon` queued before."""
        self.record_soon(outcomes)
        await self.flush()

    def record_soon(self, outcomes: Outcomes) -> None:
        """Queue one group's results for the next write transaction.

        The worker records each group this way, so a group's results share the commit of the
        next group's call reservation (one commit per call instead of two). Until then the
        jobs stay 'running': a crash in between costs that call's answer, and start-up returns
        the jobs to pending, as after a crash mid-call. :meth:`flush` writes them now.
        """
        last = self._unrecorded[-1] if self._unrecorded else None
        if not isinstance(last, _Results):
            last = _Results()
            self._unrecorded.append(last)
        last.add(outcomes, self.now_iso())

    async def flush(self) -> None:
        """Write the results :meth:`record_soon` queued, if any."""
        if self._unrecorded:
            await self._write(_nothing)

    async def rescue_stuck(self, stuck_after_s: float) -> int:
        """Running jobs older than ``stuck_after_s`` (or all, with 0) go back to pending."""
        now = self.clock.now()
        before = iso(now - stuck_after_s) if stuck_after_s > 0 else "9999"
        async with self.tx() as conn:
            cur = await conn.execute(Q["rescue_stuck"], {"now": iso(now), "before": before})
            return cur.rowcount

    async def reset_failed(self, provider: str | None = None) -> int:
        async with self.tx() as conn:
            cur = await conn.execute(Q["reset_failed"], {"now": self.now_iso(),
                                                         "provider": provider})
            return cur.rowcount

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self._read(Q["job_by_id"], (job_id,))
        return _job(rows[0]) if rows else None

    async def list_jobs(self, *, status: str | None = None, provider: str | None = None,
                        limit: int = 100, offset: int = 0) -> list[Job]:
        rows = await self._read(Q["list_jobs"], {"status": status, "provider": provider,
                                                 "limit": limit, "offset": offset})
        return [_job(r) for r in rows]

    async def job_counts(self) -> dict[str, dict[str, int]]:
        """``{provider: {status: n}}``."""
        out: dict[str, dict[str, int]] = {}
        for r in await self._read(Q["job_counts"]):
            out.setdefault(r["provider"], {})[r["status"]] = r["n"]
        return out

    async def any_due(self, provider: str, min_priority: int = 0) -> bool:
        rows = await self._read(Q["any_pending_due"], {
            "provider": provider, "min_priority": min_priority, "now": self.now_iso()})
        return bool(rows[0][0])

    async def enqueue_stale(self, provider: str, units: int, *, per_sku: bool, older_than_s: float,
                            asked_within_s: float, priority: int) -> int:
        """Enqueue refreshes of the keys users asked for (within ``asked_within_s``) whose price
        is older than ``older_than_s``: ``units`` SKUs (``per_sku``) or keys, oldest price
        first, at ``priority``. Returns how many jobs are now pending for them."""
        if units <= 0:
            return 0
        now = self.clock.now()
        rows = await self._read(Q["stale_wanted"], {
            "provider": provider, "per_sku": int(per_sku), "units": units,
            "before": iso(now - older_than_s), "asked_since": iso(now - asked_within_s)})
        if not rows:
            return 0
        specs = [JobSpec(provider, r["sku"], r["size"], r["size_system"], priority)
                 for r in rows]
        results = await self.enqueue(specs, older_than_s)
        return sum(1 for r in results if r.status == "pending")

    # ---- prices ------------------------------------------------------------------------------

    async def list_prices(self, *, provider: str | None = None, sku: str | None = None,
                          size: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        rows = await self._read(Q["list_prices"], {"provider": provider, "sku": sku,
                                                   "size": size, "limit": limit})
        return [dict(r) | {"size": r["size"] or None} for r in rows]

    # ---- budgets and the call log -------------------------------------------------------------

    async def ensure_budgets(self, rate_limits: Mapping[str, int]) -> None:
        hw = iso(hour_window(self.clock.now()))
        async with self.tx() as conn:
            await conn.executemany(Q["ensure_budget"], [
                {"provider": p, "hour_window": hw, "rate_limit": n}
                for p, n in rate_limits.items()])

    async def load_calls(self, provider: str, since: float,
                         after_id: int = 0) -> list[tuple[int, float]]:
        rows = await self._read(Q["calls_since"], {"provider": provider, "after_id": after_id,
                                                   "since": since})
        return [(r[0], r[1]) for r in rows]

    async def reserve_call(
        self,
        provider: str,
        rate_limit: int,
        after_id: int,
        since: float,
        decide: Callable[[list[tuple[int, float]], float], bool],
    ) -> tuple[bool, float, list[tuple[int, float]]]:
        """Record one call, sent now, if ``decide`` allows it (see :meth:`reserve_calls`).
        Returns ``(allowed, now, rows)`` where rows are the calls read plus, when allowed,
        the new one."""
        reserved, now, rows = await self.reserve_calls(
            provider, rate_limit, after_id, since,
            lambda rows, t: (1, t) if decide(rows, t) else (0, t))
        return bool(reserved), now, rows + reserved

    async def reserve_calls(
        self,
        provider: str,
        rate_limit: int,
        after_id: int,
        since: float,
        decide: Callable[[list[tuple[int, float]], float], tuple[int, float]],
    ) -> tuple[list[tuple[int, float]], float, list[tuple[int, float]]]:
        """Record calls durably, before they are sent, as many as ``decide`` allows.

        Inside one ``BEGIN IMMEDIATE`` transaction: read the calls recorded (by any process)
        after ``after_id``, hand them and ``now`` to ``decide``, which answers ``(n, at)``:
        record ``n`` calls (0: none) with send time ``at``, and count them in this hour's
        market_budgets row. Returns ``(reserved, now, rows)``: the new calls' ``(id, at)``,
        the transaction's ``now`` and the calls read. ``decide`` runs in the database's
        thread: it must only read what it was given.
        """
        def work(conn: sqlite3.Connection) -> tuple[list[tuple[int, float]], float,
                                                     list[tuple[int, float]]]:
            now = self.clock.now()
            rows = [(r[0], r[1]) for r in conn.execute(Q["calls_after"], {
                "provider": provider, "after_id": after_id, "since": since}).fetchall()]
            n, at = decide(rows, now)
            if n <= 0:
                return [], now, rows
            ids = sorted(r[0] for r in conn.execute(Q["insert_calls"], {
                "provider": provider, "sent_at": at, "n": n}).fetchall())
            conn.execute(Q["spend_budget"], {"provider": provider,
                                             "hour_window": iso(hour_window(now)),
                                             "rate_limit": rate_limit, "n": n})
            return [(i, at) for i in ids], now, rows

        return await self._write(work)

    def release_soon(self, provider: str, call_ids: Sequence[int], reserved_at: float) -> None:
        """Queue the removal of calls reserved at ``reserved_at`` and never sent, for the
        next write transaction (:meth:`flush` writes it now). Until then they only count
        against the budget, which is the safe side."""
        ids = json.dumps(list(call_ids))
        budget = {"provider": provider, "hour_window": iso(hour_window(reserved_at)),
                  "n": len(call_ids)}

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(Q["release_calls"], {"ids": ids})
            conn.execute(Q["unspend_budget"], budget)

        self._unrecorded.append(work)

    async def prune_calls(self, before: float) -> int:
        async with self.tx() as conn:
            return (await conn.execute(Q["prune_calls"], {"before": before})).rowcount

    async def budgets(self, *, since: float | None = None) -> list[dict[str, Any]]:
        if since is None:
            rows = await self._read(Q["budgets_for_hour"],
                                    {"hour_window": iso(hour_window(self.clock.now()))})
        else:
            rows = await self._read(Q["budgets_since"], {"since": iso(hour_window(since))})
        return [dict(r) for r in rows]

    # ---- runs and metrics --------------------------------------------------------------------

    async def begin_run(self, trigger: str, rate_limits: Mapping[str, int],
                        stuck_after_s: float, prune_before: float) -> tuple[int, int]:
        """A run's opening bookkeeping in one transaction: record the run, ensure this hour's
        budget rows, return stuck jobs to pending, prune the call log. Returns (run id,
        jobs rescued)."""
        now = self.clock.now()
        hw = iso(hour_window(now))
        before = iso(now - stuck_after_s) if stuck_after_s > 0 else "9999"

        def work(conn: sqlite3.Connection) -> tuple[int, int]:
            run_id = conn.execute(Q["insert_run"], {"started_at": iso(now),
                                                    "trigger": trigger}).lastrowid or 0
            conn.executemany(Q["ensure_budget"], [
                {"provider": p, "hour_window": hw, "rate_limit": n}
                for p, n in rate_limits.items()])
            rescued = conn.execute(Q["rescue_stuck"], {"now": iso(now),
                                                       "before": before}).rowcount
            conn.execute(Q["prune_calls"], {"before": prune_before})
            return run_id, rescued

        return await self._write(work)

    async def finish_run(self, run_id: int, **summary: Any) -> None:
        params = {"id": run_id, "finished_at": self.now_iso(), **summary}
        await self._write(lambda conn: conn.execute(Q["finish_run"], params).close())

    def record_metrics_soon(self, **metrics: Any) -> None:
        """Queue one batch's metrics row for the next write transaction (the run's
        :meth:`finish_run`, at the latest)."""
        params = {"created_at": self.now_iso(), **metrics}
        self._unrecorded.append(lambda conn: conn.execute(Q["insert_metrics"], params).close())

    async def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._read(Q["recent_runs"], {"limit": limit})]

    async def recent_metrics(self, limit: int = 50) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._read(Q["recent_metrics"], {"limit": limit})]

    # ---- provider state, tokens, catalog -------------------------------------------------------

    async def provider_states(self) -> dict[str, ProviderState]:
        return {r["provider"]: ProviderState(r["provider"], r["paused_until"], r["pause_reason"],
                                             r["credential"])
                for r in await self._read(Q["get_state"])}

    async def set_pause(self, provider: str, until: float | None, reason: str | None,
                        credential: str | None = None) -> None:
        async with self.tx() as conn:
            await conn.execute(Q["set_pause"], {
                "provider": provider, "paused_until": until, "reason": reason,
                "credential": credential, "now": self.now_iso()})

    async def get_token(self, provider: str, kind: str) -> tuple[str, float | None] | None:
        rows = await self._read(Q["get_token"], {"provider": provider, "kind": kind})
        return (rows[0]["value"], rows[0]["expires_at"]) if rows else None

    async def put_token(self, provider: str, kind: str, value: str,
                        expires_at: float | None) -> None:
        async with self.tx() as conn:
            await conn.execute(Q["put_token"], {"provider": provider, "kind": kind,
                                                "value": value, "expires_at": expires_at,
                                                "now": self.now_iso()})

    async def get_catalog(self, provider: str, sku: str) -> dict[str, Any] | None:
        rows = await self._read(Q["get_catalog"], {"provider": provider, "sku": sku})
        if not rows:
            return None
        r = rows[0]
        return {"product_id": r["product_id"], "title": r["title"], "brand": r["brand"],
                "image_url": r["image_url"], "data": json.loads(r["data"]),
                "fetched_at": r["fetched_at"]}

    async def put_catalog(self, provider: str, sku: str, *, product_id: str | None,
                          title: str | None = None, brand: str | None = None,
                          image_url: str | None = None,
                          data: Mapping[str, Any] | None = None) -> None:
        async with self.tx() as conn:
            await conn.execute(Q["put_catalog"], {
                "provider": provider, "sku": sku, "product_id": product_id, "title": title,
                "brand": brand, "image_url": image_url, "data": json.dumps(data or {}),
                "now": self.now_iso()})

    async def delete_catalog(self, provider: str, sku: str) -> None:
        async with self.tx() as conn:
            await conn.execute(Q["delete_catalog"], {"provider": provider, "sku": sku})

    # ---- maintenance -------------------------------------------------------------------------

    async def backup(self, target: str) -> None:
        """A consistent copy of the live database (SQLite's online backup API)."""
        try:
            _create_private(Path(target), exclusive=True)
        except FileExistsError:
            raise StoreError(f"{target} exists: choose a new file name") from None
        except OSError as exc:
            raise StoreError(f"cannot create {target}: {exc}") from None
        try:
            async with aiosqlite.connect(target) as dest:
                await self.r.backup(dest)
        except sqlite3.Error as exc:
            raise StoreError(f"backup failed: {exc}") from exc

    # ---- the status page and /metrics --------------------------------------------------------

    async def page_jobs(self, *, view: str, provider: str | None, now: float, limit: int,
                        offset: int) -> tuple[int, list[dict[str, Any]]]:
        """One page of the job table for a view ('active', 'all' or a status): (total rows of
        the view, the page's rows with ``row_id``)."""
        params = {"view": view, "provider": provider, "now": iso(now)}
        total = int((await self._read(Q["page_jobs_count"], params))[0]["n"])
        rows = await self._read(Q["page_jobs"], {**params, "limit": limit, "offset": offset})
        return total, [dict(r) for r in rows]

    async def pending_ahead(self, *, provider: str, priority: int, created_at: str,
                            row_id: int, now: float) -> int:
        """Due pending jobs of ``provider`` that the scheduler selects before the given one."""
        rows = await self._read(Q["page_pending_ahead"], {
            "provider": provider, "priority": priority, "created_at": created_at,
            "row_id": row_id, "now": iso(now)})
        return int(rows[0]["n"])

    async def queue_samples_since(self, since: float) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._read(Q["page_samples_since"],
                                                  {"since": iso(since)})]

    async def record_queue_samples(self, rows: Sequence[Mapping[str, Any]],
                                   prune_before: float) -> None:
        """Queue-depth samples, and the pruning of those older than ``prune_before``, in one
        transaction."""
        before = iso(prune_before)

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(Q["page_insert_sample"], rows)
            conn.execute(Q["page_prune_samples"], {"before": before})

        await self._write(work)

    async def run_durations(self) -> tuple[list[tuple[float, int]], int, float]:
        """Scheduler run durations for a histogram: ``(cumulative buckets (le seconds, n),
        runs, total seconds)``."""
        totals = (await self._read(Q["page_run_totals"]))[0]
        buckets = [(float(r["le"]), int(r["n"])) for r in await self._read(Q["page_run_buckets"])]
        return buckets, int(totals["n"]), float(totals["total_ms"]) / 1000

    async def price_ages(self) -> list[dict[str, Any]]:
        """Per provider: ``n`` prices, ``oldest`` and ``newest`` fetch times."""
        return [dict(r) for r in await self._read(Q["page_price_ages"])]

    async def execute_read(self, query_name: str, params: Any = ()) -> list[dict[str, Any]]:
        """Run a named read query (for the status page's less common views)."""
        return [dict(r) for r in await self._read(Q[query_name], params)]

    async def execute_write(self, query_name: str, params: Any = (), *,
                            many: bool = False) -> int:
        """Run a named write query in its own transaction; returns the rows changed."""
        async with self.tx() as conn:
            if many:
                cur = await conn.executemany(Q[query_name], params)
            else:
                cur = await conn.execute(Q[query_name], params)
            return cur.rowcount


async def _executescript(conn: aiosqlite.Connection, script: str) -> None:
    # executescript would COMMIT our transaction; run statement by statement instead
    for statement in sql.statements(script):
        await conn.execute(statement)


T = TypeVar("T")


async def _run_in_thread(conn: aiosqlite.Connection, work: Callable[[sqlite3.Connection], T],
                         queued: Sequence[Callable[[sqlite3.Connection], None]]) -> T:
    """One :func:`_transaction` in the connection's thread: aiosqlite runs queued functions
    there in order (``_execute`` and ``_conn`` are its internals, pinned in pyproject.toml)."""
    done = await conn._execute(  # type: ignore[no-untyped-call]
        _transaction, conn._conn, work, queued)
    return cast(T, done)


def _transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T],
                 queued: Sequence[Callable[[sqlite3.Connection], None]] = ()) -> T:
    """BEGIN IMMEDIATE, the queued results, ``work``, COMMIT (ROLLBACK on any failure), in the
    driver's thread."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for write in queued:
            write(conn)
        out = work(conn)
    except BaseException:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return out


async def _rollback(conn: aiosqlite.Connection) -> None:
    """Roll back, even from a cancelled task (the driver runs statements in order)."""
    with suppress(sqlite3.Error, ValueError):
        await asyncio.shield(conn.execute("ROLLBACK"))


def _new_ids(n: int) -> list[str]:
    """n random UUIDv4 strings from one read of the OS's random source (uuid4() reads it once
    per id)."""
    raw = os.urandom(16 * n).hex()
    out = []
    for k in range(0, 32 * n, 32):
        h = raw[k:k + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-"
                   f"{h[20:]}")
    return out


def _lock() -> asyncio.Lock:
    return asyncio.Lock()


def _create_private(path: Path, *, exclusive: bool) -> None:
    """Create the file readable by its owner only (the database holds tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_CREAT | os.O_WRONLY | (os.O_EXCL if exclusive else 0)
    if exclusive or not path.exists():
        os.close(os.open(path, flags, 0o600))
