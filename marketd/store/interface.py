"""The store as the rest of marketd sees it: one interface every backend implements.

The SQLite store (:mod:`marketd.store.sqlite`) is the embedded default; a second backend
implements the same methods with the same meaning, and the store test suite
(``tests/integration/test_store*.py``) runs against any backend given a fixture. Times are
epoch seconds everywhere; rows for the page and /metrics are plain dicts whose time columns are
ISO-8601 UTC text, as the API shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from marketd.clock import Clock
from marketd.models import EnqueueResult, Job, JobSpec
from marketd.store.records import PAGE_COUNT_CAP, Outcomes, PageCursor, ProviderState

# a call of the durable call log: (id, sent_at)
Call = tuple[int, float]
# reserve_calls' decision, given the calls read and now: (how many to record, their send time)
Decide = Callable[[list[Call], float], tuple[int, float]]


class LaneLocks(Protocol):
    """Which daemon runs each provider's batches: one lock per provider, held by one daemon at
    a time, and the wake-ups that reach it from any daemon.

    PostgreSQL: session advisory locks on a connection of the store's own (outside the pool),
    which the server itself releases when that connection ends (the daemon died), and LISTEN
    on the same connection. SQLite: one daemon per file, so every lock is granted within the
    process and a wake-up goes to this process only."""

    shared: bool  # True where other daemons may hold the locks (they are worth retrying)

    async def open(self, on_wake: Callable[[str], None]) -> None:
        """Connect; ``on_wake(payload)`` is then called for every wake-up any daemon sends
        (:meth:`notify_wake`), this one's too: the provider, then a space and the reason
        unless it is ``manual``."""

    async def try_acquire(self, provider: str) -> bool:
        """Take the provider's lock if no daemon holds it; True if this one holds it now."""

    async def release(self, provider: str) -> None:
        """Give the lock up (another daemon may take it at once)."""

    def holds(self, provider: str) -> bool: ...

    async def check(self) -> bool:
        """True while the locks' connection answers; when it has gone every lock is lost
        (holds() says so) and the next try_acquire reconnects."""

    async def notify_wake(self, provider: str, reason: str = "manual") -> None:
        """Ask whichever daemon runs ``provider`` for a run of it (``reason``: manual, hot,
        reset… as :meth:`marketd.scheduler.Scheduler.wake` takes it)."""

    async def close(self) -> None:
        """Release every lock and disconnect; safe to repeat."""


class Store(Protocol):
    """Everything marketd keeps: the queue, the call log and budgets, runs, prices, state."""

    path: str
    clock: Clock
    # this daemon's instance (register_instance): the jobs it claims and the runs it records
    # carry it; None in a store no daemon registered (tools, tests)
    instance_id: str | None
    # price-change webhooks: None (off), or their min_change_percent: a write that stores a
    # changed price also queues a price_changed delivery in the outbox (the same transaction)
    price_webhooks: float | None

    # ---- life cycle --------------------------------------------------------------------------

    async def close(self) -> None:
        """Write what is pending and close; safe to repeat."""

    async def migrate(self, *, dry_run: bool = False) -> list[int]:
        """Create or upgrade the schema; returns the versions applied now (``dry_run``: the
        versions that would be, changing nothing). Safe to repeat. Refuses a database from a
        newer marketd; takes a backup before changing an existing schema, where it can."""

    async def ping(self) -> bool:
        """True while the database answers a read."""

    async def backup(self, target: str) -> None:
        """A consistent copy of the live database at ``target`` (a new file)."""

    # ---- the queue ---------------------------------------------------------------------------

    async def enqueue(self, specs: Sequence[JobSpec], fresh_for_s: float) -> list[EnqueueResult]:
        """Enqueue jobs in order, all or nothing, deduplicated by key (a duplicate raises the
        active job's priority); a background or hot job whose price is younger than
        ``fresh_for_s`` is answered 'fresh' and not queued. Returns after the commit."""

    async def claim(self, provider: str, limit: int, *, min_priority: int = 0,
                    max_skus: int | None = None) -> list[Job]:
        """Mark up to ``limit`` due pending jobs running (highest priority, then oldest); with
        ``max_skus``, jobs of at most that many distinct SKUs."""

    async def record(self, outcomes: Outcomes) -> None:
        """Write one group's results now, with everything pending."""

    def record_soon(self, outcomes: Outcomes) -> None:
        """Queue one group's results for the next write transaction (see store.pending)."""

    async def flush(self) -> None:
        """Write everything pending now."""

    async def flush_due(self) -> None:
        """Write everything pending if the oldest has waited its limit (store.pending)."""

    async def rescue_stuck(self, stuck_after_s: float) -> int:
        """Running jobs started over ``stuck_after_s`` ago (all, with 0) back to pending: once
        an instance is registered, only its own and unowned ones (see rescue_dead)."""

    async def reset_failed(self, provider: str | None = None) -> int:
        """Failed jobs (of one provider, or all) back to pending; returns how many."""

    async def get_job(self, job_id: str) -> Job | None: ...

    async def list_jobs(self, *, status: str | None = None, provider: str | None = None,
                        limit: int = 100, offset: int = 0,
                        user_id: str | None = None) -> list[Job]:
        """Newest first; ``user_id``: only that user's jobs."""

    async def job_counts(self) -> dict[str, dict[str, int]]:
        """``{provider: {status: n}}``."""

    async def any_due(self, provider: str, min_priority: int = 0) -> bool: ...

    async def next_attempt_at(self, provider: str) -> float | None:
        """When the earliest pending job of ``provider`` not yet due comes due (a retry's
        backoff); None when there is none."""

    async def age_jobs(self, provider: str, *, above: int, to: int,
                       enqueued_before: float) -> int:
        """Starvation: pending jobs of ``provider`` with a priority above ``above`` and below
        ``to`` enqueued before ``enqueued_before`` rise to ``to``; returns how many."""

    async def outside_writes(self) -> bool:
        """True once after another process wrote to the database since the last call (SQLite:
        seen with each heartbeat; PostgreSQL: never, wake-ups come by NOTIFY)."""

    async def enqueue_stale(self, provider: str, units: int, *, per_sku: bool,
                            older_than_s: float, asked_within_s: float, priority: int) -> int:
        """Enqueue refreshes of keys users asked for whose price is older than
        ``older_than_s``, oldest first; returns how many jobs are now pending for them."""

    # ---- who works: instances, heartbeats, lanes ---------------------------------------------

    async def register_instance(self, instance_id: str, host: str, pid: int) -> None:
        """Record this daemon's instance row (and heartbeat); claims and runs carry its id."""

    async def heartbeat(self, lanes: Sequence[str]) -> None:
        """This instance is alive and runs ``lanes``' batches."""

    async def rescue_dead(self, stale_after_s: float) -> int:
        """Running jobs of dead daemons back to pending; returns how many. Dead: PostgreSQL,
        an instance whose heartbeat is older than ``stale_after_s`` (or whose row is gone;
        unowned running jobs once started that long ago); SQLite, one daemon per file, every
        instance but this one. Never this daemon's own jobs, nor a live daemon's."""

    async def retire_instance(self) -> int:
        """A graceful stop: this instance's running jobs back to pending and its row gone, in
        one transaction; returns how many jobs."""

    async def instances(self) -> list[dict[str, Any]]:
        """Instance rows (id, host, pid, started_at, heartbeat_at, lanes), oldest first."""

    def lane_locks(self) -> LaneLocks:
        """This daemon's lane locks (see :class:`LaneLocks`); open them before use."""

    # ---- prices ------------------------------------------------------------------------------

    async def list_prices(self, *, provider: str | None = None, sku: str | None = None,
                          size: str | None = None, limit: int = 1000,
                          skus: Sequence[str] | None = None, user_id: str | None = None,
                          after: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Latest prices in (sku, provider, size) order (byte order on every backend), at
        most ``limit``: of ``sku`` and ``skus`` (None: all), of the keys ``user_id``'s jobs
        asked for, after the key ``after`` = (sku, provider, size key or '') (the next page
        starts after the last row of this one)."""

    async def price_history(self, provider: str, sku: str, size: str | None, *,
                            since: float | None = None) -> list[dict[str, Any]]:
        """One key's history, oldest first: a point (``fetched_at``, ``currency``,
        ``lowest_ask``, ``highest_bid``, ``last_sale``; amounts in minor units) per change of
        its price, from ``since`` on. An unchanged fetch adds none: the latest price's
        ``fetched_at`` (list_prices) says when it was last confirmed."""

    async def portfolio_prices(self, *, limit: int = 200,
                               after: tuple[str, str] = ("", "")) -> list[dict[str, Any]]:
        """Every provider's latest price of the first ``limit`` (sku, size) keys users asked
        for (market_wanted) that have a price, after the key ``after`` (sku, size key) in byte
        order, each with ``title`` and ``image_url`` from any provider's catalog (its own
        first), in (sku, size, provider) order."""

    async def enrich_candidates(self, *, limit: int,
                                looked_up_within_s: float) -> list[dict[str, Any]]:
        """Keys users asked for (provider, sku, size, size_system; StockX and Alias, whose
        catalogs give titles) of SKUs no catalog has a title for, where that provider's cached
        look-up (which named nothing) is older than ``looked_up_within_s``; at most ``limit``
        rows."""

    # ---- the call log and budgets ------------------------------------------------------------

    async def ensure_budgets(self, rate_limits: Mapping[str, int]) -> None:
        """This clock hour's market_budgets row for each provider."""

    async def load_calls(self, provider: str, since: float, after_id: int = 0) -> list[Call]:
        """Calls recorded after ``after_id`` and sent after ``since``, oldest first."""

    async def reserve_call(self, provider: str, rate_limit: int, after_id: int, since: float,
                           decide: Callable[[list[Call], float], bool],
                           ) -> tuple[bool, float, list[Call]]:
        """Record one call now if ``decide`` allows it: ``(allowed, now, calls read + new)``."""

    async def reserve_calls(self, provider: str, rate_limit: int, after_id: int, since: float,
                            decide: Decide) -> tuple[list[Call], float, list[Call]]:
        """In one transaction that serialises reservations: read the calls recorded (by any
        process) after ``after_id``, ask ``decide`` (pure: it runs inside the transaction),
        record its ``n`` calls at its time and count them in the hour's budget row. Returns
        ``(new calls, now, calls read)``."""

    def release_soon(self, provider: str, call_ids: Sequence[int], reserved_at: float) -> None:
        """Queue the removal of reserved calls never sent (until then they only count: the
        safe side)."""

    async def prune_calls(self, before: float) -> int: ...

    async def budgets(self, *, since: float | None = None) -> list[dict[str, Any]]:
        """market_budgets rows of this hour, or of every hour from ``since``."""

    # ---- runs and metrics --------------------------------------------------------------------

    async def begin_run(self, trigger: str, rate_limits: Mapping[str, int],
                        stuck_after_s: float, prune_before: float) -> tuple[int, int]:
        """Record a run, ensure budget rows, rescue stuck jobs and prune the call log in one
        transaction: ``(run id, jobs rescued)``."""

    async def finish_run(self, run_id: int, **summary: Any) -> None: ...

    def record_metrics_soon(self, **metrics: Any) -> None:
        """Queue one batch's metrics row for the next write transaction."""

    async def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]: ...

    async def recent_metrics(self, limit: int = 50) -> list[dict[str, Any]]: ...

    # ---- provider state, tokens, catalog -----------------------------------------------------

    async def provider_states(self) -> dict[str, ProviderState]: ...

    async def set_pause(self, provider: str, until: float | None, reason: str | None,
                        credential: str | None = None) -> None: ...

    async def get_token(self, provider: str, kind: str) -> tuple[str, float | None] | None: ...

    async def put_token(self, provider: str, kind: str, value: str,
                        expires_at: float | None) -> None: ...

    async def get_catalog(self, provider: str, sku: str) -> dict[str, Any] | None: ...

    async def put_catalog(self, provider: str, sku: str, *, product_id: str | None,
                          title: str | None = None, brand: str | None = None,
                          image_url: str | None = None,
                          data: Mapping[str, Any] | None = None,
                          colourway: str | None = None) -> None: ...

    async def delete_catalog(self, provider: str, sku: str) -> None: ...

    # ---- the price-change webhook outbox -------------------------------------------------------

    async def claim_deliveries(self, limit: int, lease_s: float) -> list[dict[str, Any]]:
        """Up to ``limit`` due deliveries (id, event, body, attempts, created_at), oldest due
        first, each leased for ``lease_s``: not claimed again (by any daemon) until the lease
        ends or :meth:`finish_delivery` settles it."""

    async def finish_delivery(self, delivery_id: int, *, ok: bool, error: str | None = None,
                              next_attempt_at: float | None = None,
                              give_up: bool = False) -> None:
        """A delivery answered 2xx (``ok``), or failed: due again at ``next_attempt_at``, or
        given up (``give_up``: status dead)."""

    async def webhook_summary(self, limit: int = 10) -> dict[str, Any]:
        """``{"pending", "delivered", "dead", "failing" (pending that failed at least once),
        "recent_failures": [rows, newest first]}``."""

    # ---- retention ---------------------------------------------------------------------------

    async def prune(self, kind: str, before: float, *, limit: int) -> int:
        """Delete up to ``limit`` rows of one kind (records.PRUNE_KINDS) older than ``before``
        in one transaction; returns how many. ``jobs``: completed and failed ones; ``history``:
        never a key's newest point; ``runs``: finished ones, with their batches' metrics rows."""

    async def count_prunable(self, kind: str, before: float) -> int:
        """How many rows :meth:`prune` would delete, all batches together."""

    async def database_stats(self) -> dict[str, Any]:
        """``{"size_bytes", "wal_bytes" (SQLite's WAL file; None where there is none),
        "rows": {table: rows}}``."""

    # ---- the status page and /metrics --------------------------------------------------------

    async def page_jobs(self, *, view: str, provider: str | None, now: float, limit: int,
                        offset: int = 0, after: PageCursor | None = None,
                        count_cap: int = PAGE_COUNT_CAP) -> tuple[int, list[dict[str, Any]]]:
        """One page of a view ('active', 'all' or a status): (rows in the view counted up to
        ``count_cap``, the page's rows in queue order, each with ``row_id`` and
        ``status_rank``), starting after ``after`` (keyset) and then ``offset`` rows."""

    async def pending_ahead(self, *, provider: str, priority: int, created_at: str,
                            row_id: int, now: float, cap: int = PAGE_COUNT_CAP) -> int:
        """Due pending jobs of ``provider`` the scheduler selects before the given one, counted
        up to ``cap`` in each of priority and age."""

    async def pending_count(self) -> int:
        """Pending jobs, all providers (what scheduler.max_pending_jobs caps)."""

    def write_problem(self) -> str | None:
        """Why the last write failed (the disk full, the file read-only...), until a write
        succeeds again; None while writes succeed."""

    async def queue_samples_since(self, since: float) -> list[dict[str, Any]]: ...

    async def record_queue_samples(self, rows: Sequence[Mapping[str, Any]],
                                   prune_before: float) -> None: ...

    async def run_durations(self) -> tuple[list[tuple[float, int]], int, float]:
        """``(cumulative buckets (le seconds, runs), runs, total seconds)``."""

    async def price_ages(self) -> list[dict[str, Any]]:
        """Per provider: ``n`` prices, ``oldest`` and ``newest`` fetch times."""
