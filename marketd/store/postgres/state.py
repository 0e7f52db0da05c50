"""Prices, provider state, tokens and the catalog on PostgreSQL, and the reads of the status
page and /metrics, in the SQLite store's shapes (times as ISO-8601 UTC text)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from marketd.store.postgres.base import Q, Tables, plain, row_dict, ts, ts_text
from marketd.store.postgres.database import Conn
from marketd.store.records import PAGE_COUNT_CAP, PageCursor, ProviderState, cursor_params


class StateTables(Tables):
    # ---- provider state, tokens, catalog -----------------------------------------------------

    async def provider_states(self) -> dict[str, ProviderState]:
        return {r["provider"]: ProviderState(r["provider"], r["paused_until"], r["pause_reason"],
                                             r["credential"])
                for r in await self._fetch("get_state")}

    async def set_pause(self, provider: str, until: float | None, reason: str | None,
                        credential: str | None = None) -> None:
        await self._write_one("set_pause", {
            "provider": provider, "paused_until": until, "reason": reason,
            "credential": credential, "now": self.now_ts()})

    async def get_token(self, provider: str, kind: str) -> tuple[str, float | None] | None:
        rows = await self._fetch("get_token", {"provider": provider, "kind": kind})
        return (rows[0]["value"], rows[0]["expires_at"]) if rows else None

    async def put_token(self, provider: str, kind: str, value: str,
                        expires_at: float | None) -> None:
        await self._write_one("put_token", {"provider": provider, "kind": kind, "value": value,
                                            "expires_at": expires_at, "now": self.now_ts()})

    async def get_catalog(self, provider: str, sku: str) -> dict[str, Any] | None:
        rows = await self._fetch("get_catalog", {"provider": provider, "sku": sku})
        if not rows:
            return None
        r = rows[0]
        return {"product_id": r["product_id"], "title": r["title"], "brand": r["brand"],
                "image_url": r["image_url"], "colourway": r["colourway"],
                "data": json.loads(r["data"]),
                "fetched_at": plain(r["fetched_at"])}

    async def put_catalog(self, provider: str, sku: str, *, product_id: str | None,
                          title: str | None = None, brand: str | None = None,
                          image_url: str | None = None,
                          data: Mapping[str, Any] | None = None,
                          colourway: str | None = None) -> None:
        await self._write_one("put_catalog", {
            "provider": provider, "sku": sku, "product_id": product_id, "title": title,
            "brand": brand, "image_url": image_url, "data": json.dumps(data or {}),
            "colourway": colourway,
            "now": self.now_ts()})

    async def delete_catalog(self, provider: str, sku: str) -> None:
        await self._write_one("delete_catalog", {"provider": provider, "sku": sku})

    # ---- the status page and /metrics --------------------------------------------------------

    async def page_jobs(self, *, view: str, provider: str | None, now: float, limit: int,
                        offset: int = 0, after: PageCursor | None = None,
                        count_cap: int = PAGE_COUNT_CAP) -> tuple[int, list[dict[str, Any]]]:
        params = {"view": view, "provider": provider}
        total = int((await self._fetch("page_jobs_count", {**params, "cap": count_cap}))[0]["n"])
        keys = cursor_params(after)
        if after is not None:
            keys["after_created_at"] = ts_text(after.created_at)
        rows = await self._rows("page_jobs", {**params, **keys, "limit": limit,
                                              "offset": offset})
        return total, rows

    async def pending_ahead(self, *, provider: str, priority: int, created_at: str,
                            row_id: int, now: float, cap: int = PAGE_COUNT_CAP) -> int:
        rows = await self._fetch("page_pending_ahead", {
            "provider": provider, "priority": priority, "created_at": ts_text(created_at),
            "row_id": row_id, "now": ts(now), "cap": cap})
        return int(rows[0]["n"])

    async def pending_count(self) -> int:
        return int((await self._fetch("page_pending_count"))[0]["n"])

    def write_problem(self) -> str | None:
        return self.db.write_error

    async def queue_samples_since(self, since: float) -> list[dict[str, Any]]:
        return await self._rows("page_samples_since", {"since": ts(since)})

    async def record_queue_samples(self, rows: Sequence[Mapping[str, Any]],
                                   prune_before: float) -> None:
        """The samples, and the pruning of those older than ``prune_before``, in one
        transaction."""
        insert, prune = Q["page_insert_sample"], Q["page_prune_samples"]
        samples = insert.rows({**r, "sampled_at": ts_text(r["sampled_at"])} for r in rows)
        before = prune.args({"before": ts(prune_before)})

        async def work(conn: Conn) -> None:
            if samples:
                await conn.executemany(insert.sql, samples)
            await conn.execute(prune.sql, *before)

        await self.db.write(work)

    async def run_durations(self) -> tuple[list[tuple[float, int]], int, float]:
        totals = (await self._fetch("page_run_totals"))[0]
        buckets = [(float(r["le"]), int(r["n"])) for r in await self._fetch("page_run_buckets")]
        return buckets, int(totals["n"]), float(totals["total_ms"]) / 1000

    async def price_ages(self) -> list[dict[str, Any]]:
        return [row_dict(r) for r in await self._fetch("page_price_ages")]
