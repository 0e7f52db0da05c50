"""The job queue on SQLite: enqueue (group commit), claim, outcomes, rescue and reads."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from marketd.clock import iso
from marketd.models import EnqueueResult, Job, JobSpec, Priority, dedupe_key
from marketd.store.group_commit import GroupCommit, new_ids
from marketd.store.history import (
    Key,
    PriceRow,
    changes,
    key_of,
    newest_per_key,
    price_event,
    significant,
)
from marketd.store.records import Outcomes
from marketd.store.shared import enqueue_results, in_order, pick_skus
from marketd.store.sqlite.base import Q, Tables
from marketd.store.sqlite.rows import job_from_row, price_row


class QueueTables(Tables):
    _group: GroupCommit

    # ---- enqueue: group commit ---------------------------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec], fresh_for_s: float) -> list[EnqueueResult]:
        """Enqueue many jobs in one transaction, in order; all or nothing (concurrent callers
        share transactions: store.group_commit)."""
        return await self._group.enqueue(specs, fresh_for_s)

    async def _enqueue_tx(self, specs: Sequence[JobSpec],
                          fresh_for_s: float) -> list[EnqueueResult]:
        """One enqueue transaction."""
        now = self.clock.now()
        ids = new_ids(len(specs))
        rows = [(i, ids[i], s.user_id, s.provider, s.sku, s.size, s.size_system,
                 s.priority, s.dedupe_key, s.size_key) for i, s in enumerate(specs)]

        users = any(s.user_id is not None for s in specs)

        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            conn.execute(Q["create_staging"])
            conn.execute(Q["clear_staging"])
            conn.executemany(Q["stage_job"], rows)
            if fresh_for_s > 0:
                conn.execute(Q["mark_fresh"], {
                    "manual": int(Priority.MANUAL), "fresh_after": iso(now - fresh_for_s)})
            conn.execute(Q["upsert_staged_jobs"], {"now": iso(now)})
            if users:
                conn.execute(Q["remember_user_keys"], {"now": iso(now)})
            results = conn.execute(Q["staged_results"]).fetchall()
            conn.execute(Q["clear_staging"])
            return results

        return enqueue_results(await self.db.write(work))

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
            ids = pick_skus(rows, max_skus)
            claimed = conn.execute(Q["claim_jobs"], {"ids": json.dumps(ids),
                                                     "now": now,
                                                     "instance": self.instance_id}).fetchall()
            return ids, claimed

        ids, claimed = await self.db.write(work)
        return in_order((job_from_row(r) for r in claimed), ids)

    async def record(self, outcomes: Outcomes) -> None:
        self.record_soon(outcomes)
        await self.db.flush()

    def record_soon(self, outcomes: Outcomes) -> None:
        """Queue one group's results as pending writes (store.pending has the rules): they
        share the commit of the next group's call reservation."""
        pending, now = self.db.pending, self.clock.now()
        last = pending.last
        if not isinstance(last, _Results):
            last = _Results(self.price_webhooks)
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
                  "before": iso(now - stuck_after_s) if stuck_after_s > 0 else "9999",
                  "instance": self.instance_id}
        return await self.db.write(lambda conn: conn.execute(Q["rescue_stuck"], params).rowcount)

    async def reset_failed(self, provider: str | None = None) -> int:
        params = {"now": self.now_iso(), "provider": provider}
        return await self.db.write(lambda conn: conn.execute(Q["reset_failed"], params).rowcount)

    # ---- reads -------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self.db.read(Q["job_by_id"], (job_id,))
        return job_from_row(rows[0]) if rows else None

    async def list_jobs(self, *, status: str | None = None, provider: str | None = None,
                        limit: int = 100, offset: int = 0,
                        user_id: str | None = None) -> list[Job]:
        rows = await self.db.read(Q["list_jobs"], {"status": status, "provider": provider,
                                                   "user_id": user_id, "limit": limit,
                                                   "offset": offset})
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

    __slots__ = ("completed", "jobs", "now", "prices", "wanted", "webhooks")

    def __init__(self, webhooks: float | None = None) -> None:
        self.webhooks = webhooks  # price-change events on, with their min_change_percent
        self.prices: list[tuple[Any, ...]] = []
        self.wanted: list[tuple[Any, ...]] = []
        self.now = ""
        self.completed: dict[str, list[str]] = {}  # ids by the time they were answered
        self.jobs: dict[str, list[dict[str, Any]]] = {
            "fail_job": [], "retry_job": [], "defer_job": []}

    def add(self, outcomes: Outcomes, now: str) -> None:
        self.now = now
        self.prices += [price_row(p) for p in outcomes.prices]
        self.wanted += [(*w, now) for w in outcomes.wanted]
        jobs = self.jobs
        if outcomes.completed:
            self.completed.setdefault(now, []).extend(outcomes.completed)
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
            keys = json.dumps(list(newest_per_key(self.prices)))
            current: dict[Key, PriceRow] = {
                key_of(row): tuple(row)
                for row in conn.execute(Q["current_prices"], {"keys": keys})}
            changed = changes(self.prices, current)
            conn.executemany(Q["upsert_price"], self.prices)
            if changed:  # history records change (store.history)
                conn.executemany(Q["insert_price_history"], [new[:8] for _, new in changed])
            if changed and self.webhooks is not None:  # the outbox, in the same transaction
                conn.executemany(Q["outbox_insert"], [
                    {"body": price_event(old, new, str), "now": self.now}
                    for old, new in changed if significant(old, new, self.webhooks)])
            conn.execute(Q["complete_answered"], {
                "now": self.now, "keys": json.dumps([dedupe_key(*r[:3]) for r in self.prices])})
        if self.wanted:
            conn.executemany(Q["remember_wanted"], self.wanted)
        for at, ids in self.completed.items():
            conn.execute(Q["complete_jobs"], {"now": at, "ids": json.dumps(ids)})
        for name, params in self.jobs.items():
            if params:
                conn.executemany(Q[name], params)
