"""The prices going out on SQLite: history (one point per change) and the export's pages."""

from __future__ import annotations

from typing import Any

from marketd.clock import iso
from marketd.store.sqlite.base import Q, Tables


class PriceTables(Tables):
    async def price_history(self, provider: str, sku: str, size: str | None, *,
                            since: float | None = None) -> list[dict[str, Any]]:
        return await self._rows(Q["price_history"], {
            "provider": provider, "sku": sku, "size": size or "", "since": iso(since)})
