"""The prices going out on PostgreSQL: history (one point per change) and the export's pages,
in the SQLite store's shapes."""

from __future__ import annotations

from typing import Any

from marketd.store.postgres.base import Tables, ts


class PriceTables(Tables):
    async def price_history(self, provider: str, sku: str, size: str | None, *,
                            since: float | None = None) -> list[dict[str, Any]]:
        return await self._rows("price_history", {
            "provider": provider, "sku": sku, "size": size or "", "since": ts(since)})
