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

