"""The price-change webhook outbox on SQLite (rows are written with the prices: queue.py)."""

from __future__ import annotations

from typing import Any

from marketd.clock import iso
from marketd.store.sqlite.base import Q, Tables


class WebhookTables(Tables):
    async def claim_deliveries(self, limit: int, lease_s: float) -> list[dict[str, Any]]:
        now = self.clock.now()
        params = {"now": iso(now), "lease": iso(now + lease_s), "limit": limit}
        rows = await self.db.write(
            lambda conn: conn.execute(Q["outbox_claim"], params).fetchall())
        return sorted((dict(r) for r in rows), key=lambda r: r["id"])

    async def finish_delivery(self, delivery_id: int, *, ok: bool, error: str | None = None,
                              next_attempt_at: float | None = None,
                              give_up: bool = False) -> None:
        if ok:
            params: dict[str, Any] = {"id": delivery_id, "now": self.now_iso()}
            name = "outbox_delivered"
        else:
            params = {"id": delivery_id, "give_up": int(give_up), "error": (error or "")[:1000],
                      "next_attempt_at": iso(next_attempt_at) or self.now_iso()}
            name = "outbox_failed"
        await self.db.write(lambda conn: conn.execute(Q[name], params).close())

    async def webhook_summary(self, limit: int = 10) -> dict[str, Any]:
        out: dict[str, Any] = {"pending": 0, "delivered": 0, "dead": 0, "failing": 0}
        for r in await self.db.read(Q["outbox_counts"]):
            out[r["status"]] = int(r["n"])
            if r["status"] == "pending":
                out["failing"] = int(r["failing"] or 0)
        out["recent_failures"] = await self._rows(Q["outbox_failing"], {"limit": limit})
        return out
