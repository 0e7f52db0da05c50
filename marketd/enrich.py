"""Catalog enrichment: SKUs users asked for whose product no catalog has named get a catalog
look-up at the lowest priority, so only budget nothing else needs is spent on it.

A title (with brand, colourway and image) comes from a provider's catalog answer, which a
price fetch makes when the SKU is not cached. For a SKU no catalog has named, enrichment
forgets the provider's title-less cache entry and enqueues one price job per (provider, SKU)
at :data:`ENRICH_PRIORITY`, below idle refresh (50) and everything users queue, and never
aged: it runs only when nothing else is due. The daemon does this hourly after a run, for
cache entries older than :data:`RETRY_AFTER_S` (a catalog that named nothing a week ago may
now); ``marketd enrich`` does it now, whatever their age."""

from __future__ import annotations

from typing import Any

import structlog

from marketd.clock import Clock
from marketd.models import JobSpec
from marketd.store import Store

log = structlog.get_logger(__name__)

ENRICH_PRIORITY = 40
RETRY_AFTER_S = 7 * 86400.0
EVERY_S = 3600.0
PER_PASS = 20  # (provider, SKU) look-ups queued at most per pass


async def enqueue_enrichment(store: Store, *, limit: int = PER_PASS,
                             retry_after_s: float = RETRY_AFTER_S) -> list[dict[str, Any]]:
    """Queue look-ups for up to ``limit`` untitled (provider, SKU) pairs whose cached look-up
    is older than ``retry_after_s``; returns them with the job each got (``status`` pending,
    or the existing job's)."""
    rows = await store.enrich_candidates(limit=limit * 20, looked_up_within_s=retry_after_s)
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        chosen.setdefault((r["provider"], r["sku"]), r)
        if len(chosen) >= limit:
            break
    if not chosen:
        return []
    for provider, sku in chosen:
        cached = await store.get_catalog(provider, sku)
        if cached is not None and not cached.get("title"):
            await store.delete_catalog(provider, sku)  # the next fetch looks it up again
    specs = [JobSpec(r["provider"], r["sku"], r["size"], r["size_system"],
                     priority=ENRICH_PRIORITY) for r in chosen.values()]
    results = await store.enqueue(specs, 0)
    out = [{"provider": s.provider, "sku": s.sku, "size": s.size, "job": res.id,
            "status": res.status} for s, res in zip(specs, results, strict=True)]
    log.info("enrichment_queued", lookups=len(out))
    return out


class Enricher:
    """The daemon's hourly enrichment pass (an after-run hook)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store, self.clock = store, clock
        self.last_at: float | None = None

    async def after_run(self, summary: Any = None) -> None:
        now = self.clock.now()
        if self.last_at is not None and now - self.last_at < EVERY_S:
            return
        self.last_at = now
        await enqueue_enrichment(self.store)
