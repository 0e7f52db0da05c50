"""The prices going out on PostgreSQL: history (one point per change) and the export's pages,
in the SQLite store's shapes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from marketd.store.history import sku_list
from marketd.store.postgres.base import Tables, ts


class PriceTables(Tables):
    async def list_prices(self, *, provider: str | None = None, sku: str | None = None,
                          size: str | None = None, limit: int = 1000,
                          skus: Sequence[str] | None = None, user_id: str | None = None,
                          after: Sequence[str] | None = None) -> list[dict[str, Any]]:
        a_sku, a_provider, a_size = after if after is not None else (None, None, None)
        rows = await self._rows("list_prices", {
            "provider": provider, "skus": sku_list(sku, skus), "size": size, "user_id": user_id,
            "after_sku": a_sku, "after_provider": a_provider, "after_size": a_size,
            "limit": limit})
        return [r | {"size": r["size"] or None} for r in rows]

    async def price_history(self, provider: str, sku: str, size: str | None, *,
                            since: float | None = None) -> list[dict[str, Any]]:
        return await self._rows("price_history", {
            "provider": provider, "sku": sku, "size": size or "", "since": ts(since)})

    async def portfolio_prices(self, *, limit: int = 200,
                               after: tuple[str, str] = ("", "")) -> list[dict[str, Any]]:
        rows = await self._rows("portfolio_prices", {
            "limit": limit, "after_sku": after[0], "after_size": after[1]})
        return [r | {"size": r["size"] or None} for r in rows]

    async def enrich_candidates(self, *, limit: int,
                                looked_up_within_s: float) -> list[dict[str, Any]]:
        return await self._rows("enrich_candidates", {
            "limit": limit, "recent": ts(self.clock.now() - looked_up_within_s)})
