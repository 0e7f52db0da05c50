"""The durable call log, hourly budget rows, runs and per-batch metrics on SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from marketd.clock import hour_window, iso
from marketd.store.interface import Call, Decide
from marketd.store.sqlite.base import Q, Tables


class CallTables(Tables):
    async def ensure_budgets(self, rate_limits: Mapping[str, int]) -> None:
        rows = _budget_rows(rate_limits, iso(hour_window(self.clock.now())))
        await self.db.write(lambda conn: conn.executemany(Q["ensure_budget"], rows).close())

    async def load_calls(self, provider: str, since: float, after_id: int = 0) -> list[Call]:
        rows = await self.db.read(Q["calls_since"], {"provider": provider,
                                                     "after_id": after_id, "since": since})
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
        """Inside one ``BEGIN IMMEDIATE`` (which serialises every process's reservations):
        read the calls recorded after ``after_id``, hand them and ``now`` to ``decide``, record
        its calls and count them in this hour's market_budgets row."""
        def work(conn: sqlite3.Connection) -> tuple[list[Call], float, list[Call]]:
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

        return await self.db.write(work)

    def release_soon(self, provider: str, call_ids: Sequence[int], reserved_at: float) -> None:
        ids = json.dumps(list(call_ids))
        budget = {"provider": provider, "hour_window": iso(hour_window(reserved_at)),
                  "n": len(call_ids)}

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(Q["release_calls"], {"ids": ids})
            conn.execute(Q["unspend_budget"], budget)

        self.db.pending.add(write, self.clock.now())

    async def prune_calls(self, before: float) -> int:
        return await self.db.write(
            lambda conn: conn.execute(Q["prune_calls"], {"before": before}).rowcount)

    async def budgets(self, *, since: float | None = None) -> list[dict[str, Any]]:
        if since is None:
            return await self._rows(Q["budgets_for_hour"],
                                    {"hour_window": iso(hour_window(self.clock.now()))})
        return await self._rows(Q["budgets_since"], {"since": iso(hour_window(since))})

    # ---- runs and metrics --------------------------------------------------------------------

    async def begin_run(self, trigger: str, rate_limits: Mapping[str, int],
                        stuck_after_s: float, prune_before: float) -> tuple[int, int]:
        now = self.clock.now()
        budgets = _budget_rows(rate_limits, iso(hour_window(now)))
        before = iso(now - stuck_after_s) if stuck_after_s > 0 else "9999"

        def work(conn: sqlite3.Connection) -> tuple[int, int]:
            run_id = conn.execute(Q["insert_run"], {"started_at": iso(now),
                                                    "trigger": trigger,
                                                    "instance": self.instance_id}).lastrowid or 0
            conn.executemany(Q["ensure_budget"], budgets)
            rescued = conn.execute(Q["rescue_stuck"], {
                "now": iso(now), "before": before, "instance": self.instance_id}).rowcount
            conn.execute(Q["prune_calls"], {"before": prune_before})
            return run_id, rescued

        return await self.db.write(work)

    async def finish_run(self, run_id: int, **summary: Any) -> None:
        params = {"id": run_id, "finished_at": self.now_iso(), **summary}
        await self.db.write(lambda conn: conn.execute(Q["finish_run"], params).close())

    def record_metrics_soon(self, **metrics: Any) -> None:
        params = {"created_at": self.now_iso(), **metrics}
        self.db.pending.add(lambda conn: conn.execute(Q["insert_metrics"], params).close(),
                            self.clock.now())

    async def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return await self._rows(Q["recent_runs"], {"limit": limit})

    async def recent_metrics(self, limit: int = 50) -> list[dict[str, Any]]:
        return await self._rows(Q["recent_metrics"], {"limit": limit})


def _budget_rows(rate_limits: Mapping[str, int], hw: str | None) -> list[dict[str, Any]]:
    return [{"provider": p, "hour_window": hw, "rate_limit": n} for p, n in rate_limits.items()]
