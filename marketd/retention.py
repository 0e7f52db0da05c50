"""Retention: old rows go, a small transaction at a time, so the database stops growing.

``[retention]`` says how many days to keep finished jobs, price history (every key keeps its
newest point), scheduler runs, per-batch metrics and settled webhook deliveries (0: forever).
The daemon prunes after a scheduler run once ``every_hours`` have passed since its last prune
(on a task of its own: no run waits for it); ``marketd prune`` does the same now, and
``--dry-run`` counts what would go. Each transaction deletes at most ``batch_rows`` rows, so
enqueues and batches get the write lock between them. SQLite's WAL, grown by a large prune,
is cut back by the store's checkpoints (``journal_size_limit``)."""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Any

import structlog

from marketd.clock import Clock, iso
from marketd.config_data import RetentionConfig
from marketd.store import Store
from marketd.store.records import PRUNE_KINDS

log = structlog.get_logger(__name__)

DAY_S = 86400.0


def kept_days(cfg: RetentionConfig, kind: str) -> float:
    days: float = getattr(cfg, f"{kind}_days")
    return days


async def prune(store: Store, cfg: RetentionConfig, now: float, *,
                dry_run: bool = False) -> dict[str, dict[str, Any]]:
    """Prune every kind by its days (or, ``dry_run``, count what would go): ``{kind: {"days",
    "before", "rows"}}``; ``rows`` deleted (or that would be), ``before`` null where kept
    forever."""
    out: dict[str, dict[str, Any]] = {}
    for kind in PRUNE_KINDS:
        days = kept_days(cfg, kind)
        if days <= 0:
            out[kind] = {"days": 0, "before": None, "rows": 0}
            continue
        before = now - days * DAY_S
        if dry_run:
            n = await store.count_prunable(kind, before)
        else:
            n = 0
            while True:
                done = await store.prune(kind, before, limit=cfg.batch_rows)
                n += done
                if done < cfg.batch_rows:
                    break
                await asyncio.sleep(0)  # others' writes go between two transactions
        out[kind] = {"days": days, "before": iso(before), "rows": n}
    return out


class Retention:
    """The daemon's daily prune, started after a scheduler run (an after-run hook)."""

    def __init__(self, store: Store, cfg: RetentionConfig, clock: Clock) -> None:
        self.store, self.cfg, self.clock = store, cfg, clock
        self.last_at: float | None = None
        self.last: dict[str, Any] | None = None  # the last prune's report, for /status
        self.task: asyncio.Task[None] | None = None

    async def after_run(self, summary: Any = None) -> None:
        if self.cfg.every_hours <= 0 or (self.task is not None and not self.task.done()):
            return
        now = self.clock.now()
        if self.last_at is not None and now - self.last_at < self.cfg.every_hours * 3600:
            return
        self.last_at = now
        self.task = asyncio.create_task(self._prune(now))

    async def _prune(self, now: float) -> None:
        started = time.monotonic()
        try:
            report = await prune(self.store, self.cfg, now)
        except Exception:
            log.exception("prune_failed")
            return
        took = round(time.monotonic() - started, 3)
        self.last = {"at": iso(now), "seconds": took, "kinds": report}
        log.info("pruned", seconds=took, **{k: v["rows"] for k, v in report.items()})

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
