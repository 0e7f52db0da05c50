"""The durable call log, hourly budget rows, runs and per-batch metrics on PostgreSQL.

A reservation is one transaction that first takes ``pg_advisory_xact_lock`` on the provider
(``hashtext('marketd-budget:' || provider)``): every daemon's reservations for that provider
run one after another, each reading the calls the others committed before deciding, so N
daemons together never exceed a limit. Call ids come from an identity column, never reused,
and within a provider they grow in commit order (they are taken under the lock).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from marketd.clock import hour_window
from marketd.store.interface import Call, Decide
from marketd.store.postgres.base import Q, Tables, count, ts
from marketd.store.postgres.database import Conn


class CallTables(Tables):
    async def ensure_budgets(self, rate_limits: Mapping[str, int]) -> None:
        rows = Q["ensure_budget"].rows(_budget_rows(rate_limits, self.clock.now()))

        async def work(conn: Conn) -> None:
            if rows:
                await conn.executemany(Q["ensure_budget"].sql, rows)

        await self.db.write(work)

    async def load_calls(self, provider: str, since: float, after_id: int = 0) -> list[Call]:
        rows = await self._fetch("calls_since", {"provider": provider, "after_id": after_id,
                                                 "since": since})
        return [(r[0], r[1]) for r in rows]

    async def reserve_call(self, provider: str, rate_limit: int, after_id: int, since: float,
                           decide: Callable[[list[Call], float], bool],
                           ) -> tuple[bool, float, list[Call]]:
        reserved, now, rows = await self.reserve_calls(
            provider, rate_limit, after_id, since,
            lambda rows, t: (1, t) if decide(rows, t) else (0, t))
        return bool(reserved), now, rows + reserved

    async def reserve_calls(self, provider: str, rate_limit: int, after_id: int, since: float,
                            decide: Decide) -> tuple[list[Call], float, list[Call]]:
        """In one transaction holding the provider's advisory lock: read the calls recorded
        (by any daemon) after ``after_id``, hand them and ``now`` to ``decide``, record its
        calls and count them in this hour's market_budgets row."""
        lock, read = Q["budget_lock"], Q["calls_since"]
        insert, spend = Q["insert_calls"], Q["spend_budget"]

        async def work(conn: Conn) -> tuple[list[Call], float, list[Call]]:
            await conn.execute(lock.sql, *lock.args({"provider": provider}))
            now = self.clock.now()  # read under the lock: later than every call it sees
            rows: list[Call] = [(r[0], r[1]) for r in await conn.fetch(read.sql, *read.args({
                "provider": provider, "after_id": after_id, "since": since}))]
            n, at = decide(rows, now)
            if n <= 0:
                return [], now, rows
            ids = sorted(r[0] for r in await conn.fetch(insert.sql, *insert.args({
                "provider": provider, "sent_at": at, "n": n})))
            await conn.execute(spend.sql, *spend.args({
                "provider": provider, "hour_window": ts(hour_window(now)),
                "rate_limit": rate_limit, "n": n}))
            return [(i, at) for i in ids], now, rows

        return await self.db.write(work)

    def release_soon(self, provider: str, call_ids: Sequence[int], reserved_at: float) -> None:
        release, unspend = Q["release_calls"], Q["unspend_budget"]
        ids = release.args({"ids": list(call_ids)})
        budget = unspend.args({"provider": provider, "hour_window": ts(hour_window(reserved_at)),
                               "n": len(call_ids)})

        async def write(conn: Conn) -> None:
            await conn.execute(release.sql, *ids)
            await conn.execute(unspend.sql, *budget)

        self.db.pending.add(write, self.clock.now())

    async def prune_calls(self, before: float) -> int:
        return count(await self._write_one("prune_calls", {"before": before}))

    async def budgets(self, *, since: float | None = None) -> list[dict[str, Any]]:
        if since is None:
            return await self._rows("budgets_for_hour",
                                    {"hour_window": ts(hour_window(self.clock.now()))})
        return await self._rows("budgets_since", {"since": ts(hour_window(since))})

    # ---- runs and metrics --------------------------------------------------------------------

    async def begin_run(self, trigger: str, rate_limits: Mapping[str, int],
                        stuck_after_s: float, prune_before: float) -> tuple[int, int]:
        now = self.clock.now()
        budgets = Q["ensure_budget"].rows(_budget_rows(rate_limits, now))
        insert, rescue, prune = Q["insert_run"], Q["rescue_stuck"], Q["prune_calls"]
        before = ts(now - stuck_after_s) if stuck_after_s > 0 else None

        async def work(conn: Conn) -> tuple[int, int]:
            run_id = await conn.fetchval(insert.sql, *insert.args({
                "started_at": ts(now), "trigger": trigger, "instance": self.instance_id}))
            if budgets:
                await conn.executemany(Q["ensure_budget"].sql, budgets)
            rescued = count(await conn.execute(rescue.sql, *rescue.args({
                "now": ts(now), "before": before, "instance": self.instance_id})))
            await conn.execute(prune.sql, *prune.args({"before": prune_before}))
            return int(run_id or 0), rescued

        return await self.db.write(work)

    async def finish_run(self, run_id: int, **summary: Any) -> None:
        await self._write_one("finish_run", {"id": run_id, "finished_at": self.now_ts(),
                                             **summary})

    def record_metrics_soon(self, **metrics: Any) -> None:
        q = Q["insert_metrics"]
        args = q.args({"created_at": self.now_ts(), **metrics})

        async def write(conn: Conn) -> None:
            await conn.execute(q.sql, *args)

        self.db.pending.add(write, self.clock.now())

    async def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return await self._rows("recent_runs", {"limit": limit})

    async def recent_metrics(self, limit: int = 50) -> list[dict[str, Any]]:
        return await self._rows("recent_metrics", {"limit": limit})


def _budget_rows(rate_limits: Mapping[str, int], now: float) -> list[dict[str, Any]]:
    hw = ts(hour_window(now))
    return [{"provider": p, "hour_window": hw, "rate_limit": n} for p, n in rate_limits.items()]
