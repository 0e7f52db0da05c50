"""The whole exception tree of marketd.

Retry decisions go by type, never by message text::

    MarketdError
    ├── ConfigError                 bad or unknown configuration key (exit 2)
    ├── ValidationError             bad input to enqueue and friends (HTTP 400, exit 2)
    ├── StoreError                  the database refused or failed
    ├── BudgetExhausted             no token left in some limit window; the job is deferred
    └── ProviderError               anything a provider call ended with
        ├── NotFound                the provider has no such SKU/product (job fails, no retry)
        ├── SizeError               the size cannot be matched or is ambiguous (job fails)
        ├── RateLimited             HTTP 429: provider pauses, batch back to pending
        │   └── QuotaExhausted      a daily quota is spent (eBay errorId 2001): pause until reset
        ├── AuthError               401/403 after a renewal attempt: provider pauses, jobs wait
        ├── PermanentError          a 4xx that retrying cannot fix (job fails)
        └── TransientError          408, 5xx, timeouts, network errors, bad JSON: retry w/ backoff
"""

from __future__ import annotations


class MarketdError(Exception):
    """Base of every error marketd raises on purpose."""


class ConfigError(MarketdError):
    """One or more configuration problems; ``problems`` holds ``(key, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {msg}" for key, msg in problems))


class ValidationError(MarketdError):
    """Bad user input; ``field`` is a path such as ``jobs[3].size``."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(message if field is None else f"{field}: {message}")


class StoreError(MarketdError):
    """The database failed (locked too long, corrupt, unreadable)."""


class QueueFull(MarketdError):
    """/enqueue beyond scheduler.max_pending_jobs: try again after ``retry_after_s``."""

    def __init__(self, pending: int, cap: int, retry_after_s: int) -> None:
        super().__init__(f"the queue is full: {pending} jobs pending, the limit is {cap} "
                         "(scheduler.max_pending_jobs); try again later")
        self.retry_after_s = retry_after_s


class BudgetExhausted(MarketdError):
    """No call may be sent now without breaking a limit.

    ``retry_at`` is the epoch second at which the next call would fit.
    """

    def __init__(self, provider: str, retry_at: float) -> None:
        self.provider = provider
        self.retry_at = retry_at
        super().__init__(f"{provider}: budget spent until {retry_at:.0f}")


class ProviderError(MarketdError):
    """A provider call failed. ``status`` is the HTTP status when there was one."""

    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        self.provider = provider
        self.message = message
        self.status = status
        super().__init__(f"{provider}: {message}")


class NotFound(ProviderError):
    """The provider does not know the SKU or product."""


class SizeError(ProviderError):
    """The job's size matches no variant, or more than one."""


class RateLimited(ProviderError):
    """HTTP 429. ``retry_after_s`` comes from Retry-After when the provider sent one."""

    def __init__(
        self,
        provider: str,
        message: str = "rate limited (HTTP 429)",
        *,
        retry_after_s: float | None = None,
        status: int | None = 429,
    ) -> None:
        super().__init__(provider, message, status=status)
        self.retry_after_s = retry_after_s


class QuotaExhausted(RateLimited):
    """A daily quota is spent; do not call again before ``retry_after_s``."""


class AuthError(ProviderError):
    """Credentials were refused even after renewal. ``credential`` names what to check."""

    def __init__(
        self, provider: str, message: str, *, credential: str, status: int | None = None
    ) -> None:
        super().__init__(provider, message, status=status)
        self.credential = credential


class PermanentError(ProviderError):
    """A request the provider will never accept as sent (most 4xx)."""


class TransientError(ProviderError):
    """Worth retrying later: 408, 5xx, timeouts, connection errors, truncated bodies."""
