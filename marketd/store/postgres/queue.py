"""The job queue on PostgreSQL: enqueue (group commit, deduplicated by the partial unique
index across daemons), claim (``FOR UPDATE SKIP LOCKED``), outcomes, rescue and reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from marketd.clock import iso
from marketd.models import EnqueueResult, Job, JobSpec, Priority, dedupe_key
from marketd.store.group_commit import GroupCommit, new_ids
from marketd.store.history import changes, key_of, newest_per_key, price_event, significant
from marketd.store.postgres.base import Q, Tables, count, job_from_record, ts
from marketd.store.postgres.database import Conn
from marketd.store.records import Outcomes
from marketd.store.shared import enqueue_results, in_order, pick_skus
from marketd.store.sqlite.rows import extra_json


class QueueTables(Tables):
    _group: GroupCommit

    # ---- enqueue: group commit ---------------------------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec], fresh_for_s: float) -> list[EnqueueResult]:
        """Enqueue many jobs in one transaction, in order; all or nothing (concurrent callers
        share transactions: store.group_commit)."""
        return await self._group.enqueue(specs, fresh_for_s)

    async def _enqueue_tx(self, specs: Sequence[JobSpec],
                          fresh_for_s: float) -> list[EnqueueResult]:
        """One enqueue transaction: one statement (see enqueue_jobs)."""
        if not specs:
            return []
        now = self.clock.now()
        ids = new_ids(len(specs))
        q = Q["enqueue_jobs"]
        args = q.args({
            "ids": ids, "user_ids": [s.user_id for s in specs],
            "providers": [s.provider for s in specs], "skus": [s.sku for s in specs],
            "sizes": [s.size for s in specs], "size_systems": [s.size_system for s in specs],
            "priorities": [s.priority for s in specs],
            "dedupe_keys": [s.dedupe_key for s in specs],
            "size_keys": [s.size_key for s in specs],
            "fresh_after": ts(now - fresh_for_s) if fresh_for_s > 0 else None,
            "manual": int(Priority.MANUAL), "now": ts(now)})

        users = [s.user_id for s in specs]
        remember = Q["remember_user_keys"]

        async def work(conn: Conn) -> list[asyncpg.Record]:
            rows = list(await conn.fetch(q.sql, *args))
            if any(u is not None for u in users):  # for /prices?user_id=
                await conn.execute(remember.sql, *remember.args({
                    "user_ids": users, "dedupe_keys": [s.dedupe_key for s in specs],
                    "now": ts(now)}))
            return rows

        return enqueue_results(await self.db.write(work))

    async def enqueue_stale(self, provider: str, units: int, *, per_sku: bool,
                            older_than_s: float, asked_within_s: float, priority: int) -> int:
        if units <= 0:
            return 0
        now = self.clock.now()
        rows = await self._fetch("stale_wanted", {
            "provider": provider, "per_sku": per_sku, "units": units,
            "before": ts(now - older_than_s), "asked_since": ts(now - asked_within_s)})
        if not rows:
            return 0
        specs = [JobSpec(provider, r["sku"], r["size"], r["size_system"], priority)
                 for r in rows]
        results = await self.enqueue(specs, older_than_s)
        return sum(1 for r in results if r.status == "pending")

    # ---- claim and outcomes ------------------------------------------------------------------

    async def claim(self, provider: str, limit: int, *, min_priority: int = 0,
                    max_skus: int | None = None) -> list[Job]:
        """The due pending jobs, locked with ``FOR UPDATE SKIP LOCKED`` (another daemon's
        claim in progress is skipped, never waited for or doubled), marked running."""
        if limit <= 0 or (max_skus is not None and max_skus <= 0):
            return []
        now = ts(self.clock.now())
        select, update = Q["select_pending"], Q["claim_jobs"]
        select_args = select.args({"provider": provider, "now": now, "limit": limit,
                                   "min_priority": min_priority})

        async def work(conn: Conn) -> tuple[list[str], list[asyncpg.Record]]:
            ids = pick_skus(((r["id"], r["sku"]) for r in
                             await conn.fetch(select.sql, *select_args)), max_skus)
            if not ids:
                return ids, []
            claimed = await conn.fetch(update.sql, *update.args({"ids": ids, "now": now,
                                                                  "instance": self.instance_id}))
            return ids, list(claimed)

        ids, claimed = await self.db.write(work)
        return in_order((job_from_record(r) for r in claimed), ids)

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
        last.add(outcomes, now)

    async def flush(self) -> None:
        await self.db.flush()

    async def flush_due(self) -> None:
        if self.db.pending.due(self.clock.now()):
            await self.db.flush()

    async def rescue_stuck(self, stuck_after_s: float) -> int:
        now = self.clock.now()
        return count(await self._write_one("rescue_stuck", {
            "now": ts(now), "before": ts(now - stuck_after_s) if stuck_after_s > 0 else None,
            "instance": self.instance_id}))

    async def reset_failed(self, provider: str | None = None) -> int:
        """Failed jobs back to pending, and in the same transaction a NOTIFY marketd_wake for
        each provider that got some: whichever daemon runs it starts a run (the CLI's resets
        too)."""
        q, notify = Q["reset_failed"], Q["notify_wake_reason"]
        args = q.args({"now": self.now_ts(), "provider": provider})

        async def work(conn: Conn) -> int:
            rows = await conn.fetch(q.sql, *args)
            for name in sorted({r["provider"] for r in rows}):
                await conn.execute(notify.sql, *notify.args({"payload": f"{name} reset"}))
            return len(rows)

        return await self.db.write(work)

    # ---- reads -------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        if not _is_uuid(job_id):
            return None  # not a job id at all (SQLite finds no such row either)
        rows = await self._fetch("job_by_id", {"id": job_id})
        return job_from_record(rows[0]) if rows else None

    async def list_jobs(self, *, status: str | None = None, provider: str | None = None,
                        limit: int = 100, offset: int = 0,
                        user_id: str | None = None) -> list[Job]:
        rows = await self._fetch("list_jobs", {"status": status, "provider": provider,
                                               "user_id": user_id, "limit": limit,
                                               "offset": offset})
        return [job_from_record(r) for r in rows]

    async def job_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in await self._fetch("job_counts"):
            out.setdefault(r["provider"], {})[r["status"]] = r["n"]
        return out

    async def any_due(self, provider: str, min_priority: int = 0) -> bool:
        rows = await self._fetch("any_pending_due", {
            "provider": provider, "min_priority": min_priority, "now": self.now_ts()})
        return bool(rows[0][0])


class _Results:
    """Results of consecutive groups waiting as one pending write, kept as rows so one
    transaction writes them all with one statement of each kind."""

    __slots__ = ("completed", "jobs", "keys", "now", "prices", "wanted", "webhooks")

    def __init__(self, webhooks: float | None = None) -> None:
        self.webhooks = webhooks  # price-change events on, with their min_change_percent
        self.prices: list[tuple[Any, ...]] = []
        self.wanted: list[tuple[Any, ...]] = []
        self.keys: list[str] = []
        self.now: Any = None
        self.completed: dict[Any, list[str]] = {}  # ids by the time they were answered
        self.jobs: dict[str, list[tuple[Any, ...]]] = {
            "fail_job": [], "retry_job": [], "defer_job": []}

    def add(self, outcomes: Outcomes, now_s: float) -> None:
        now = self.now = ts(now_s)
        for p in outcomes.prices:
            self.prices.append((p.provider, p.sku, p.size or "", p.currency, p.lowest_ask,
                                p.highest_bid, p.last_sale, ts(p.fetched_at), extra_json(p)))
            self.keys.append(dedupe_key(p.provider, p.sku, p.size or ""))
        self.wanted += [(*w, now) for w in outcomes.wanted]
        jobs = self.jobs
        if outcomes.completed:
            self.completed.setdefault(now, []).extend(outcomes.completed)
        jobs["fail_job"] += Q["fail_job"].rows({"id": i, "now": now, "error": e[:1000]}
                                               for i, e in outcomes.failed)
        jobs["retry_job"] += Q["retry_job"].rows(
            {"id": r.job_id, "now": now, "error": r.error[:1000],
             "next_attempt_at": ts(r.next_attempt_at)} for r in outcomes.retried)
        jobs["defer_job"] += Q["defer_job"].rows(
            {"id": d.job_id, "now": now, "error": d.error,
             "next_attempt_at": ts(d.next_attempt_at)} for d in outcomes.deferred)

    async def __call__(self, conn: Conn) -> None:
        if self.prices:
            keys = list(newest_per_key(self.prices))
            q = Q["current_prices"]
            current = {key_of(tuple(r)): tuple(r) for r in await conn.fetch(q.sql, *q.args({
                "providers": [k[0] for k in keys], "skus": [k[1] for k in keys],
                "sizes": [k[2] for k in keys]}))}
            changed = changes(self.prices, current)
            newest = list(newest_per_key(self.prices).values())
            upsert = Q["upsert_prices"]
            await conn.execute(upsert.sql, *upsert.args(_columns(newest, PRICE_COLUMNS)))
            if changed:  # history records change (store.history)
                history = Q["insert_price_history"]
                await conn.execute(history.sql, *history.args(_columns(
                    [new for _, new in changed], PRICE_COLUMNS[:8])))
            if changed and self.webhooks is not None:  # the outbox, in the same transaction
                events = [(price_event(old, new, _iso), self.now) for old, new in changed
                          if significant(old, new, self.webhooks)]
                if events:
                    await conn.executemany(Q["outbox_insert"].sql, events)
            answered = Q["complete_answered"]
            await conn.execute(answered.sql, *answered.args({"now": self.now,
                                                             "keys": self.keys}))
        if self.wanted:
            await conn.executemany(Q["remember_wanted"].sql, self.wanted)
        done = Q["complete_jobs"]
        for at, ids in self.completed.items():
            await conn.execute(done.sql, *done.args({"now": at, "ids": ids}))
        for name, rows in self.jobs.items():
            if rows:
                await conn.executemany(Q[name].sql, rows)


# a price row's fields as the unnest statements name their arrays
PRICE_COLUMNS = ("providers", "skus", "sizes", "currencies", "asks", "bids", "lasts", "fetched",
                 "extras")


def _columns(rows: Sequence[Sequence[Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    """Rows as one list per column, named for an unnest statement's array parameters."""
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


def _iso(value: Any) -> str | None:
    return iso(value.timestamp()) if value is not None else None


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        return False
    return True
