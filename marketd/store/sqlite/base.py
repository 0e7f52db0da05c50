"""What every part of the SQLite store shares: the database, the clock and the named queries."""

from __future__ import annotations

from typing import Any

from marketd import sql
from marketd.clock import Clock, iso
from marketd.store.database import Database

Q = sql.queries()


class Tables:
    """What every part of the SQLite store shares: the database and the clock."""

    path: str
    clock: Clock
    db: Database
    instance_id: str | None = None  # this daemon's, once registered (store.interface)
    # price-change webhooks: None (off), or their min_change_percent (store.interface)
    price_webhooks: float | None = None

    def now_iso(self) -> str:
        return iso(self.clock.now()) or ""

    async def _rows(self, query: str, params: Any = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.db.read(query, params)]
