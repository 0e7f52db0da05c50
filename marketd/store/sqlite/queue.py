"""The job queue on SQLite: enqueue (group commit), claim, outcomes, rescue and reads."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from marketd.clock import iso
from marketd.models import EnqueueResult, Job, JobSpec, Priority, dedupe_key
from marketd.store.records import Outcomes
from marketd.store.sqlite.base import Q, Tables
from marketd.store.sqlite.rows import job_from_row, price_row

_Queued = tuple[Sequence[JobSpec], float, "asyncio.Future[list[EnqueueResult]]"]


class QueueTables(Tables):
    _queued: list[_Queued]
    _group_writer: asyncio.Task[None] | None

    # ---- enqueue: group commit ---------------------------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec], fresh_for_s: float) -> list[EnqueueResult]:
        """Enqueue many jobs in one transaction, in order; all or nothing.

        Group commit: concurrent callers share one transaction (one staging fill, one upsert,
        one COMMIT), written by a task of the store's own, so a caller that goes away cannot
        strand the others. Each caller gets its own results in its own order, only after the
        COMMIT that made them durable; if a shared transaction fails, each caller's jobs are
        written alone, so one caller's failure is never another's.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[EnqueueResult]] = loop.create_future()
        fut.add_done_callback(_consume)
        self._queued.append((specs, fresh_for_s, fut))
        if self._group_writer is None or self._group_writer.done():
            self._group_writer = loop.create_task(self._drain())
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
        rows = [(i, ids[i], s.user_id, s.provider, s.sku, s.size, s.size_system,
                 s.priority, s.dedupe_key, s.size_key) for i, s in enumerate(specs)]

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

        out: list[EnqueueResult] = []
        seen: set[str] = set()
        for r in await self.db.write(work):
            if r["fresh"]:
                out.append(EnqueueResult(None, r["dedupe_key"], "fresh", r["asked_priority"],
                                         False))
                continue
            # a key given twice in one batch: the second is a duplicate of the first
            dup = r["id"] != r["proposed_id"] or r["id"] in seen
            seen.add(r["id"])
            out.append(EnqueueResult(r["id"], r["dedupe_key"], r["status"], r["priority"], dup))
        return out

    async def enqueue_stale(self, provider: str, units: int, *, per_sku: bool,
                            older_than_s: float, asked_within_s: float, priority: int) -> int:
        if units <= 0:
            return 0
        now = self.clock.now()
        rows = await self.db.read(Q["stale_wanted"], {
            "provider": provider, "per_sku": int(per_sku), "units": units,
            "before": iso(now - older_than_s), "asked_since": iso(now - asked_within_s)})
        if not rows:
            return 0
        specs = [JobSpec(provider, r["sku"], r["size"], r["size_system"], priority)
                 for r in rows]
        results = await self.enqueue(specs, older_than_s)
        return sum(1 for r in results if r.status == "pending")

    # ---- claim and outcomes ------------------------------------------------------------------

    async def claim(self, provider: str, limit: int, *, min_priority: int = 0,
                    max_skus: int | None = None) -> list[Job]:
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

        ids, claimed = await self.db.write(work)
        order = {job_id: i for i, job_id in enumerate(ids)}
        return sorted((job_from_row(r) for r in claimed), key=lambda j: order[j.id])

    async def record(self, outcomes: Outcomes) -> None:
        self.record_soon(outcomes)
        await self.db.flush()

    def record_soon(self, outcomes: Outcomes) -> None:
        """Queue one group's results as pending writes (store.pending has the rules): they
        share the commit of the next group's call reservation."""
        pending, now = self.db.pending, self.clock.now()
        last = pending.last
        if not isinstance(last, _Results):
            last = _Results()
            pending.add(last, now)
        last.add(outcomes, iso(now) or "")

    async def flush(self) -> None:
        await self.db.flush()

    async def flush_due(self) -> None:
        if self.db.pending.due(self.clock.now()):
            await self.db.flush()

    async def rescue_stuck(self, stuck_after_s: float) -> int:
        now = self.clock.now()
        params = {"now": iso(now),
                  "before": iso(now - stuck_after_s) if stuck_after_s > 0 else "9999"}
        return await self.db.write(lambda conn: conn.execute(Q["rescue_stuck"], params).rowcount)

    async def reset_failed(self, provider: str | None = None) -> int:
        params = {"now": self.now_iso(), "provider": provider}
        return await self.db.write(lambda conn: conn.execute(Q["reset_failed"], params).rowcount)

    # ---- reads -------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self.db.read(Q["job_by_id"], (job_id,))
        return job_from_row(rows[0]) if rows else None

    async def list_jobs(self, *, status: str | None = None, provider: str | None = None,
                        limit: int = 100, offset: int = 0) -> list[Job]:
        rows = await self.db.read(Q["list_jobs"], {"status": status, "provider": provider,
                                                   "limit": limit, "offset": offset})
        return [job_from_row(r) for r in rows]

    async def job_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in await self.db.read(Q["job_counts"]):
            out.setdefault(r["provider"], {})[r["status"]] = r["n"]
        return out

    async def any_due(self, provider: str, min_priority: int = 0) -> bool:
        rows = await self.db.read(Q["any_pending_due"], {
            "provider": provider, "min_priority": min_priority, "now": self.now_iso()})
        return bool(rows[0][0])


class _Results:
    """Results of consecutive groups waiting as one pending write, kept as rows so one
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
        self.prices += [price_row(p) for p in outcomes.prices]
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
            conn.execute(Q["complete_answered"], {
                "now": self.now, "keys": json.dumps([dedupe_key(*r[:3]) for r in self.prices])})
        if self.wanted:
            conn.executemany(Q["remember_wanted"], self.wanted)
        for name, params in self.jobs.items():
            if params:
                conn.executemany(Q[name], params)


def _consume(fut: asyncio.Future[list[EnqueueResult]]) -> None:
    """Retrieve the outcome of a caller's future even if the caller went away."""
    if not fut.cancelled():
        fut.exception()


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
