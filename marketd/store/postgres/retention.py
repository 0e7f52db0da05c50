"""Retention on PostgreSQL: prune old rows a small transaction at a time, count what would
go, and the database's size and row counts (as the SQLite store gives them)."""

from __future__ import annotations

from typing import Any

from marketd.store.postgres.base import Tables, count, ts
from marketd.store.records import PRUNE_KINDS


class RetentionTables(Tables):
    async def prune(self, kind: str, before: float, *, limit: int) -> int:
        if kind not in PRUNE_KINDS:
            raise ValueError(f"no such kind of row to prune: {kind!r}")
        return count(await self._write_one(f"prune_{kind}", {"before": ts(before),
                                                             "limit": limit}))

    async def count_prunable(self, kind: str, before: float) -> int:
        if kind not in PRUNE_KINDS:
            raise ValueError(f"no such kind of row to prune: {kind!r}")
        return int((await self._fetch(f"count_prune_{kind}", {"before": ts(before)}))[0][0])

    async def database_stats(self) -> dict[str, Any]:
        size = int((await self._fetch("database_size"))[0]["bytes"])
        rows = {r["name"]: int(r["n"]) for r in await self._fetch("table_rows")}
        return {"size_bytes": size, "wal_bytes": None, "rows": rows}
