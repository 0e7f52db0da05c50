"""One PostgreSQL database: a connection pool, write transactions with the pending writes at
their front, reads, and the one translation of driver errors.

Writes are coroutines of an ``asyncpg.Connection`` run by :meth:`PgDatabase.write` inside one
transaction (READ COMMITTED), with everything waiting in :class:`PendingWritesOf` first, by the
same rules as the SQLite store (see :mod:`marketd.store.pending`). Unlike SQLite's single
writer, several of a daemon's transactions may run at once (and every daemon's): a deadlock or
a serialization failure reruns the whole transaction (its work is a pure function of the
connection), up to :data:`RETRIES` times. The transaction runs in a task of its own, so a
cancelled caller never leaves it half done, and never loses the pending writes it carried.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from marketd.config import redact_url as redact
from marketd.errors import StoreError
from marketd.store.pending import PendingWritesOf

T = TypeVar("T")
# what a write is handed: a connection of the pool
Conn = asyncpg.Connection | PoolConnectionProxy
PgWrite = Callable[[Conn], Awaitable[None]]
log = structlog.get_logger(__name__)

POOL_MIN = 1
POOL_MAX = 10
CONNECT_TIMEOUT_S = 10.0
RETRIES = 8
# errors of the connection, the server or the network: nothing was decided about the data
# (InternalClientError: a connection the server ended mid-statement, seen under load)
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
    TimeoutError)
_OPEN_ERRORS: tuple[type[BaseException], ...] = (*DRIVER_ERRORS, ValueError)
# the transaction lost a race with another (any daemon's): running it again is the answer
_RACES = (asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError)
# the database refused the data itself (SQLSTATE classes 22 and 23)
_DATA = (asyncpg.exceptions.DataError, asyncpg.exceptions.IntegrityConstraintViolationError)


def translate(exc: BaseException, what: str) -> StoreError:
    """The one mapping of a driver error to marketd's own."""
    return StoreError(f"database {what} failed: {type(exc).__name__}: {exc}")


class _Requeue(Exception):
    """``cause`` ended the work before ``remaining`` pending writes were written."""

    def __init__(self, cause: BaseException, remaining: Sequence[PgWrite]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.remaining = remaining


async def _nothing(conn: Conn) -> None:
    """A transaction's own work when it only writes the pending writes (``flush``)."""


async def _transaction(conn: Conn,
                       work: Callable[[Conn], Awaitable[T]],
                       queued: Sequence[PgWrite] = ()) -> T:
    """BEGIN, the pending writes, ``work``, COMMIT; run again after a deadlock or a
    serialization failure."""
    for attempt in range(RETRIES):
        try:
            async with conn.transaction():
                for write in queued:
                    await write(conn)
                return await work(conn)
        except _RACES:
            if attempt == RETRIES - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.01 * 2 ** attempt))
    raise AssertionError("unreachable")  # pragma: no cover


async def _transaction_with_fallback(
        conn: Conn, work: Callable[[Conn], Awaitable[T]],
        queued: Sequence[PgWrite]) -> tuple[T, list[str]]:
    """One transaction of the pending writes and ``work``. If the database refuses it for
    its data and pending writes rode along, each pending write goes in a transaction of its
    own (those refused are dropped: their jobs stay 'running' until the stuck-job rescue),
    then ``work`` alone. Returns ``(work's result, errors of the dropped writes)``."""
    try:
        return await _transaction(conn, work, queued), []
    except _DATA:
        if not queued:
            raise
    except Exception as exc:
        raise _Requeue(exc, queued) from exc
    dropped: list[str] = []
    for at, write in enumerate(queued):
        try:
            await _transaction(conn, _nothing, (write,))
        except _DATA as exc:
            dropped.append(f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            raise _Requeue(exc, queued[at:]) from exc
    try:
        return await _transaction(conn, work), dropped
    except _DATA:
        raise
    except Exception as exc:
        raise _Requeue(exc, ()) from exc


class PgDatabase:
    """The PostgreSQL database behind the store: ``write(fn)``, ``read(query, *args)``."""

    def __init__(self, url: str, *, pool_max: int = POOL_MAX) -> None:
        self.url = url
        self.pool_max = pool_max
        self.pending: PendingWritesOf[PgWrite] = PendingWritesOf()
        self._pool: asyncpg.Pool | None = None
        self.write_error: str | None = None  # why the last write failed, until one succeeds
        self._carriers: set[asyncio.Task[Any]] = set()  # transactions carrying pending writes

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=POOL_MIN, max_size=self.pool_max, timeout=CONNECT_TIMEOUT_S,
                server_settings={"application_name": "marketd"})
        except _OPEN_ERRORS as exc:
            raise StoreError(f"cannot open database {redact(self.url)}: "
                             f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        """Write what is pending, wait for transactions carrying pending writes, close."""
        if self._pool is not None and self.pending:
            with suppress(StoreError, *DRIVER_ERRORS):
                await self.write(_nothing)
        await self._wait_carriers()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 10)
            except DRIVER_ERRORS:
                pool.terminate()

    # ---- writes ------------------------------------------------------------------------------

    async def write(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``work`` as one write transaction, with the pending writes first.

        If the awaiting task is cancelled, the transaction still commits or rolls back whole.
        Connection or server errors put the pending writes back for the next transaction; a
        pending write the database refuses for its data is dropped and logged, never failing
        ``work``."""
        pool = self._pool
        if pool is None:
            raise StoreError("the database is closed")
        queued = self.pending.take()
        task = asyncio.get_running_loop().create_task(self._write(pool, work, queued))
        task.add_done_callback(_consume)
        if queued:
            self._carriers.add(task)
            task.add_done_callback(self._carriers.discard)
        return await asyncio.shield(task)

    async def _write(self, pool: asyncpg.Pool,
                     work: Callable[[Conn], Awaitable[T]],
                     queued: Sequence[PgWrite]) -> T:
        try:
            async with pool.acquire() as conn:
                done, dropped = await _transaction_with_fallback(conn, work, queued)
        except _Requeue as exc:
            self.pending.put_back(exc.remaining)
            if isinstance(exc.cause, DRIVER_ERRORS):
                raise translate(exc.cause, "write") from exc.cause
            raise exc.cause from None
        except DRIVER_ERRORS as exc:
            # refused data: the pending writes were written or dropped already; any other
            # error here came before the transaction (acquiring a connection)
            if not isinstance(exc, _DATA):
                self.pending.put_back(queued)
                self.write_error = str(exc)
            raise translate(exc, "write") from exc
        self.write_error = None
        for error in dropped:
            log.error("queued_write_dropped", error=error)
        return done

    async def flush(self) -> None:
        """Write the pending writes now, if any; wait for transactions already carrying
        some (a write begun before this call may hold the results this caller queued)."""
        if self.pending:
            await self.write(_nothing)
        await self._wait_carriers()

    async def _wait_carriers(self) -> None:
        if self._carriers:
            await asyncio.gather(*list(self._carriers), return_exceptions=True)

    # ---- reads -------------------------------------------------------------------------------

    async def read(self, query: str, *args: Any) -> list[asyncpg.Record]:
        pool = self._pool
        if pool is None:
            raise StoreError("the database is closed")
        try:
            return list(await pool.fetch(query, *args))
        except DRIVER_ERRORS as exc:
            raise translate(exc, "read") from exc


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve the outcome even if the caller went away (no 'never retrieved' noise)."""
    if not fut.cancelled():
        fut.exception()
