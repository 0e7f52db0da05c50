"""What both backends decide the same way about the rows their SQL returns (no I/O)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from marketd.models import EnqueueResult, Job

# aging raises this many jobs per write transaction: a backlog of a million aged in one held
# the writer (and every enqueue behind it) for 5.5 s and doubled the daemon's RSS
AGE_BATCH_ROWS = 2000


def enqueue_results(rows: Iterable[Any]) -> list[EnqueueResult]:
    """One enqueue transaction's staged rows (sqlite3.Row or asyncpg.Record), in order, as the
    caller's answers: 'fresh' for a
    price young enough; a key given twice in one batch: the second is a duplicate of the first."""
    out: list[EnqueueResult] = []
    seen: set[str] = set()
    for r in rows:
        if r["fresh"]:
            out.append(EnqueueResult(None, r["dedupe_key"], "fresh", r["asked_priority"], False))
            continue
        job_id = str(r["id"])
        dup = job_id != str(r["proposed_id"]) or job_id in seen
        seen.add(job_id)
        out.append(EnqueueResult(job_id, r["dedupe_key"], r["status"], r["priority"], dup))
    return out


def pick_skus(rows: Iterable[tuple[Any, str]], max_skus: int | None) -> list[str]:
    """Job ids of ``(id, sku)`` rows in queue order, every size of at most ``max_skus``
    distinct SKUs (a product-level call prices every size of a SKU)."""
    ids: list[str] = []
    skus: set[str] = set()
    for job_id, sku in rows:
        if max_skus is not None and sku not in skus and len(skus) >= max_skus:
            continue
        skus.add(sku)
        ids.append(str(job_id))
    return ids


def in_order(jobs: Iterable[Job], ids: Sequence[str]) -> list[Job]:
    """Claimed jobs in the order they were selected."""
    order = {job_id: i for i, job_id in enumerate(ids)}
    return sorted(jobs, key=lambda j: order[j.id])


async def in_batches(write: Callable[[int], Awaitable[int]], batch: int) -> int:
    """Call ``write(batch)`` (one transaction touching at most ``batch`` rows) until one
    touches fewer; the total touched. Other writes take turns between the transactions."""
    total = 0
    while True:
        n = await write(batch)
        total += n
        if n < batch:
            return total
