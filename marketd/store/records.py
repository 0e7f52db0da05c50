"""What the store takes and gives besides the models: a group's outcomes, a provider's state.
Backend-neutral frozen dataclasses, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from marketd.models import Price


@dataclass(frozen=True, slots=True)
class Retry:
    job_id: str
    error: str
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class Defer:
    job_id: str
    next_attempt_at: float | None = None
    error: str | None = None


# a key a user asked for and got, kept fresh by idle refresh:
# (provider, sku, size_key, size, size_system)
Wanted = tuple[str, str, str, str | None, str]


@dataclass(frozen=True, slots=True)
class Outcomes:
    """What one group of calls decided, written in one transaction."""

    completed: Sequence[str] = ()
    failed: Sequence[tuple[str, str]] = ()
    retried: Sequence[Retry] = ()
    deferred: Sequence[Defer] = ()
    prices: Sequence[Price] = ()
    wanted: Sequence[Wanted] = ()


@dataclass(frozen=True, slots=True)
class ProviderState:
    provider: str
    paused_until: float | None
    pause_reason: str | None
    credential: str | None



# ---- the status page's keyset pages ------------------------------------------------------------

# the page's counts (jobs in a view, jobs ahead of one) stop here: it says "10000 or more"
PAGE_COUNT_CAP = 10_000


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where the next page of the job table starts: after the row with these sort keys."""

    rank: int  # 0 running, 1 pending, 2 failed, 3 completed
    priority: int
    created_at: str
    row_id: int


def cursor_params(after: PageCursor | None) -> dict[str, object]:
    """The after_* parameters of the page_jobs query (all None: from the start)."""
    if after is None:
        return {"after_rank": None, "after_priority": None, "after_created_at": None,
                "after_row_id": None}
    return {"after_rank": after.rank, "after_priority": after.priority,
            "after_created_at": after.created_at, "after_row_id": after.row_id}


# what retention prunes, in the order it prunes them: per-batch metrics, scheduler runs (each
# with its batches' metrics), finished jobs, price history, settled webhook deliveries
PRUNE_KINDS = ("metrics", "runs", "jobs", "history", "webhooks")
