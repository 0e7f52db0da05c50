"""Retention on SQLite: prune old rows a small transaction at a time, count what would go,
and the database's size and row counts."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from typing import Any

from marketd.clock import iso
from marketd.store.records import PRUNE_KINDS
from marketd.store.sqlite.base import Q, Tables


class RetentionTables(Tables):
    async def prune(self, kind: str, before: float, *, limit: int) -> int:
        if kind not in PRUNE_KINDS:
            raise ValueError(f"no such kind of row to prune: {kind!r}")
        params = {"before": iso(before), "limit": limit}

        def work(conn: sqlite3.Connection) -> int:
            if kind != "runs":
                return int(conn.execute(Q[f"prune_{kind}"], params).rowcount)
            ids = json.dumps([r[0] for r in conn.execute(Q["runs_to_prune"], params)])
            conn.execute(Q["prune_runs_metrics"], {"ids": ids})  # a run's metrics go with it
            return int(conn.execute(Q["prune_runs"], {"ids": ids}).rowcount)

        return await self.db.write(work)

    async def count_prunable(self, kind: str, before: float) -> int:
        if kind not in PRUNE_KINDS:
            raise ValueError(f"no such kind of row to prune: {kind!r}")
        rows = await self.db.read(Q[f"count_prune_{kind}"], {"before": iso(before)})
        return int(rows[0][0])

    async def database_stats(self) -> dict[str, Any]:
        size = int((await self.db.read(Q["database_size"]))[0]["bytes"])
        wal = await asyncio.to_thread(_size, f"{self.path}-wal")
        rows = {r["name"]: int(r["n"]) for r in await self.db.read(Q["table_rows"])}
        return {"size_bytes": size, "wal_bytes": wal, "rows": rows}


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None
