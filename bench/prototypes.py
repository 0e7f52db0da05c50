"""Bench-only variants of the Store, measured beside marketd in the same run. Nothing here is
imported by marketd; the benchmarks swap these in explicitly and label the rows "prototype".
(The earlier prototypes, group commit and memoised validation, are marketd's own code now.)

- :class:`InlineStore`: the real store with its write transactions run on the event loop's
  thread instead of the writer's own: what removing the thread hop would give.
- :class:`NoWriteStore`: ``enqueue`` answers without the database: the ceiling any store change
  can reach.
"""

from __future__ import annotations

from collections.abc import Sequence

from marketd.clock import Clock
from marketd.models import EnqueueResult, JobSpec
from marketd.store import SQLiteStore


class InlineStore(SQLiteStore):
    """The real SQLite store with its writer in-line: write transactions run on the event
    loop's thread (``Database(inline=True)``) instead of the writer's own thread."""

    def __init__(self, path: str, clock: Clock, *, inline: bool = True) -> None:
        super().__init__(path, clock, inline=True)


class NoWriteStore(SQLiteStore):
    """Not a fix: ``enqueue`` answers without touching the database, to measure the ceiling
    any store change can reach (marketd's HTTP handler, validation and answer alone)."""

    async def enqueue(self, specs: Sequence[JobSpec], fresh_for_s: float) -> list[EnqueueResult]:
        return [EnqueueResult(f"id-{i}", s.dedupe_key, "pending", s.priority, False)
                for i, s in enumerate(specs)]
