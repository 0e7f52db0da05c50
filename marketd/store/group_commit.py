"""Group commit for enqueues, the same on every backend.

Concurrent callers share one transaction (one staging fill, one upsert, one COMMIT), written by
a task of the store's own, so a caller that goes away cannot strand the others. Each caller
gets its own results in its own order, only after the COMMIT that made them durable; if a
shared transaction fails, each caller's jobs are written alone, so one caller's failure is
never another's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress

from marketd.models import EnqueueResult, JobSpec

# one enqueue transaction of a backend: (jobs in order, fresh_for_s) -> their results
EnqueueTx = Callable[[Sequence[JobSpec], float], Awaitable[list[EnqueueResult]]]
_Queued = tuple[Sequence[JobSpec], float, "asyncio.Future[list[EnqueueResult]]"]


class GroupCommit:
    __slots__ = ("_queued", "_task", "_write")

    def __init__(self, write: EnqueueTx) -> None:
        self._write = write
        self._queued: list[_Queued] = []
        self._task: asyncio.Task[None] | None = None

    async def enqueue(self, specs: Sequence[JobSpec], fresh_for_s: float) -> list[EnqueueResult]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[EnqueueResult]] = loop.create_future()
        fut.add_done_callback(_consume)
        self._queued.append((specs, fresh_for_s, fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        # a caller that goes away cancels only its own future: its jobs are still written
        return await fut

    async def drained(self) -> None:
        """Wait until every enqueue already accepted is written (closing the store)."""
        if self._task is not None and not self._task.done():
            with suppress(Exception):
                await self._task

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # one loop turn: requests parsed meanwhile join this group
        while self._queued:
            group, self._queued = self._queued, []
            by_fresh: dict[float, list[_Queued]] = {}
            for item in group:
                by_fresh.setdefault(item[1], []).append(item)
            for fresh, items in by_fresh.items():
                await self._write_group(items, fresh)

    async def _write_group(self, items: list[_Queued], fresh_for_s: float) -> None:
        if len(items) > 1:
            try:
                results = await self._write([s for specs, _, _ in items for s in specs],
                                            fresh_for_s)
            except Exception:  # noqa: S110 - each caller is retried alone just below
                pass
            else:
                at = 0
                for specs, _, fut in items:
                    if not fut.done():
                        fut.set_result(results[at:at + len(specs)])
                    at += len(specs)
                return
        for specs, _, fut in items:
            try:
                result = await self._write(specs, fresh_for_s)
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(result)


def _consume(fut: asyncio.Future[list[EnqueueResult]]) -> None:
    """Retrieve the outcome of a caller's future even if the caller went away."""
    if not fut.cancelled():
        fut.exception()


def new_ids(n: int) -> list[str]:
    """n random UUIDv4 strings from one read of the OS's random source (uuid4() reads it once
    per id)."""
    raw = os.urandom(16 * n).hex()
    out = []
    for k in range(0, 32 * n, 32):
        h = raw[k:k + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-"
                   f"{h[20:]}")
    return out
