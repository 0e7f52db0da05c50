"""The prices going out on SQLite: history (one point per change) and the export's pages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from marketd.clock import iso
from marketd.store.history import sku_list
from marketd.store.sqlite.base import Q, Tables
from marketd.store.sqlite.rows import price_dict


class PriceTables(Tables):
    async def list_prices(self, *, provider: str | None = None, sku: str | None = None,
                          size: str | None = None, limit: int = 1000,
                          skus: Sequence[str] | None = None, user_id: str | None = None,
                          after: Sequence[str] | None = None) -> list[dict[str, Any]]:
        wanted = sku_list(sku, skus)
        a_sku, a_provider, a_size = after if after is not None else (None, None, None)
        rows = await self.db.read(Q["list_prices"], {
            "provider": provider, "skus": None if wanted is None else json.dumps(wanted),
            "size": size, "user_id": user_id, "after_sku": a_sku,
            "after_provider": a_provider, "after_size": a_size, "limit": limit})
        return [price_dict(r) for r in rows]

    async def price_history(self, provider: str, sku: str, size: str | None, *,
                            since: float | None = None) -> list[dict[str, Any]]:
        return await self._rows(Q["price_history"], {
            "provider": provider, "sku": sku, "size": size or "", "since": iso(since)})

    async def portfolio_prices(self, *, limit: int = 200,
                               after: tuple[str, str] = ("", "")) -> list[dict[str, Any]]:
        rows = await self.db.read(Q["portfolio_prices"], {
            "limit": limit, "after_sku": after[0], "after_size": after[1]})
        return [price_dict(r) for r in rows]

    async def enrich_candidates(self, *, limit: int,
                                looked_up_within_s: float) -> list[dict[str, Any]]:
        return await self._rows(Q["enrich_candidates"], {
            "limit": limit, "recent": iso(self.clock.now() - looked_up_within_s)})
