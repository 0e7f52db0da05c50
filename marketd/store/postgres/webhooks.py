"""The price-change webhook outbox on PostgreSQL (rows are written with the prices: queue.py),
in the SQLite store's shapes."""

from __future__ import annotations

from typing import Any

from marketd.store.postgres.base import Q, Tables, row_dict, ts
from marketd.store.postgres.database import Conn


class WebhookTables(Tables):
    async def claim_deliveries(self, limit: int, lease_s: float) -> list[dict[str, Any]]:
        now = self.clock.now()
        q = Q["outbox_claim"]
        args = q.args({"now": ts(now), "lease": ts(now + lease_s), "limit": limit})

        async def work(conn: Conn) -> list[Any]:
            return list(await conn.fetch(q.sql, *args))

        rows = await self.db.write(work)
        return sorted((row_dict(r) for r in rows), key=lambda r: r["id"])

    async def finish_delivery(self, delivery_id: int, *, ok: bool, error: str | None = None,
                              next_attempt_at: float | None = None,
                              give_up: bool = False) -> None:
        if ok:
            await self._write_one("outbox_delivered", {"id": delivery_id, "now": self.now_ts()})
            return
        await self._write_one("outbox_failed", {
            "id": delivery_id, "give_up": give_up, "error": (error or "")[:1000],
            "next_attempt_at": ts(next_attempt_at) if next_attempt_at is not None
            else self.now_ts()})

    async def webhook_summary(self, limit: int = 10) -> dict[str, Any]:
        out: dict[str, Any] = {"pending": 0, "delivered": 0, "dead": 0, "failing": 0}
        for r in await self._fetch("outbox_counts"):
            out[r["status"]] = int(r["n"])
            if r["status"] == "pending":
                out["failing"] = int(r["failing"] or 0)
        out["recent_failures"] = await self._rows("outbox_failing", {"limit": limit})
        return out
