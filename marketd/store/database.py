"""One SQLite file: a write connection on a thread of marketd's own, and a read connection.

In the manner of Datasette's ``Database``: every write is a function of a ``sqlite3.Connection``
run by :meth:`Database.write` inside ``BEGIN IMMEDIATE ... COMMIT`` on the writer's thread, one
at a time, in the order they were asked for. The writes waiting in :class:`PendingWrites` ride
along at the front of that transaction. Reads go through aiosqlite (its own thread), which WAL
lets run beside the writer. Driver errors become :class:`StoreError` in one place
(:func:`translate`).

WAL checkpoints run on a connection and thread of their own, never inside a write, and only
when the writer is idle: the write connection's automatic checkpoint is off; once
``checkpoint_after_changes`` rows changed since the last checkpoint, a PASSIVE one starts after
``checkpoint_idle_s`` without a write (beside claims, checkpoints took their p99 to 3-5x p50), or
at once past ``CHECKPOINT_FORCE_CHANGES`` under sustained writes, which bounds the WAL.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from marketd import sql
from marketd.errors import StoreError
from marketd.store.pending import PendingWrites, Write
from marketd.store.writer import InlineWriter, ThreadWriter, Writer

T = TypeVar("T")
Q = sql.queries()
log = structlog.get_logger(__name__)

CHECKPOINT_AFTER_CHANGES = 5000
CHECKPOINT_FORCE_CHANGES = 100_000
CHECKPOINT_IDLE_S = 0.25
TRUNCATE_AFTER_CHANGES = 20_000


def translate(exc: sqlite3.Error, what: str) -> StoreError:
    """The one mapping of a driver error to marketd's own."""
    return StoreError(f"database {what} failed: {exc}")


def _translated(exc: sqlite3.Error, what: str) -> StoreError:
    out = translate(exc, what)
    out.__cause__ = exc
    return out


def connect(path: str) -> sqlite3.Connection:
    """A connection with marketd's pragmas (autocommit mode: transactions are explicit)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    for pragma in _pragmas():
        conn.execute(pragma)
    return conn


def _pragmas() -> list[str]:
    return [Q[name] for name in ("pragma_busy_timeout", "pragma_setup", "pragma_synchronous",
                                 "pragma_temp_store", "pragma_foreign_keys",
                                 "pragma_journal_size_limit")]


def _writer_connection(path: str) -> sqlite3.Connection:
    conn = connect(path)
    conn.execute(Q["pragma_no_autocheckpoint"])
    return conn


class Database:
    """The SQLite file behind the store: ``write(fn)``, ``read(query, params)``, checkpoints."""

    def __init__(self, path: str, *, inline: bool = False) -> None:
        self.path = path
        self.inline = inline  # writes on the event loop's thread: for tests and benchmarks
        self.pending = PendingWrites()
        self._writer: Writer | None = None
        self._r: aiosqlite.Connection | None = None
        # a reader per purpose beside the main one: /healthz's ping never queues behind the
        # status page's reads, nor they behind the API's
        self._readers: dict[str, aiosqlite.Connection] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self.write_error: str | None = None  # why the last write failed, until one succeeds
        self._truncate_after = False
        self._ck: aiosqlite.Connection | None = None
        self._ck_task: asyncio.Task[None] | None = None
        self._inflight = 0  # writes asked for and not yet answered
        self._changes = 0  # the write connection's total_changes after its last commit
        self._changes_at_ck = 0
        self.checkpoint_idle_s = CHECKPOINT_IDLE_S
        self.checkpoint_after_changes = CHECKPOINT_AFTER_CHANGES
        self.checkpoints = 0  # background checkpoints completed (for tests and /metrics)

    # ---- life cycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            create_private(Path(self.path), exclusive=False)
            make_private(Path(self.path))
            if self.inline:
                self._writer = InlineWriter(_writer_connection(self.path))
            else:
                self._writer = await ThreadWriter.start(lambda: _writer_connection(self.path))
            self._r = await self._aio_connection()
            self._readers["health"] = await self._aio_connection()
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise StoreError(f"cannot open database {self.path}: {_why(exc)}") from exc

    async def _aio_connection(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            conn.row_factory = aiosqlite.Row
            for pragma in _pragmas():
                await conn.execute(pragma)
        except BaseException:
            with suppress(Exception):  # its thread must end, or the process never exits
                await conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Write what is pending, stop the writer, close every connection."""
        if self._writer is not None and self.pending:
            with suppress(StoreError):
                await self.write(_nothing)
        if self._ck_task is not None and not self._ck_task.done():
            self._ck_task.cancel()  # closing checkpoints anyway (SQLite, last connection)
            with suppress(BaseException):
                await self._ck_task
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.stop()
        readers, self._readers = list(self._readers.values()), {}
        for conn in (self._r, self._ck, *readers):
            if conn is not None:
                with suppress(sqlite3.Error, ValueError):
                    await conn.close()
        self._r = self._ck = None

    # ---- writes ------------------------------------------------------------------------------

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` as one write transaction on the writer, with the pending writes first.

        If the awaiting task is cancelled, the transaction still commits or rolls back whole.
        Busy or I/O errors put the pending writes back for the next transaction; a pending
        write the database refuses for its data is dropped and logged, never failing ``work``.
        """
        writer = self._writer
        if writer is None:
            raise StoreError("the database is closed")
        queued = self.pending.take()
        caller: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inflight += 1

        def done(out: Any, exc: BaseException | None) -> None:
            # on the loop, whatever became of the caller: the bookkeeping never depends on it
            self._inflight -= 1
            if isinstance(exc, _Requeue):  # busy, I/O, a bug in work: they go again later
                self.pending.put_back(exc.remaining)
                exc = exc.cause
            if isinstance(exc, sqlite3.OperationalError) and _refused(exc):
                self.write_error = str(exc)
            if isinstance(exc, sqlite3.Error):
                exc = _translated(exc, "write")
            elif exc is None:
                self.write_error = None
                result, self._changes, dropped = out
                for error in dropped:
                    log.error("queued_write_dropped", error=error)
                self._maybe_checkpoint()
            if caller.done():
                return
            if exc is not None:
                caller.set_exception(exc)
            else:
                caller.set_result(result)

        writer.submit(done, _transaction_with_fallback, work, queued)
        return await caller

    async def flush(self) -> None:
        """Write the pending writes now, if any."""
        if self.pending:
            await self.write(_nothing)

    # ---- reads -------------------------------------------------------------------------------

    async def read(self, query: str, params: Any = (), *,
                   purpose: str = "main") -> list[sqlite3.Row]:
        """``purpose``: "main", or "health" and "page", each on a connection of its own."""
        conn = self._r if purpose == "main" else await self._reader(purpose)
        if conn is None:
            raise StoreError("the database is closed")
        try:
            async with conn.execute(query, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise translate(exc, "read") from exc

    async def _reader(self, purpose: str) -> aiosqlite.Connection | None:
        if self._r is None:
            return None
        conn = self._readers.get(purpose)
        if conn is not None:
            return conn
        lock = self._opening.setdefault(purpose, asyncio.Lock())
        async with lock:
            if purpose not in self._readers:
                try:
                    self._readers[purpose] = await self._aio_connection()
                except (OSError, sqlite3.Error) as exc:
                    raise translate(sqlite3.Error(str(exc)), "read") from exc
            return self._readers[purpose]

    async def backup(self, target: str) -> None:
        """A consistent copy of the live database (SQLite's online backup API)."""
        try:
            create_private(Path(target), exclusive=True)
        except FileExistsError:
            raise StoreError(f"{target} exists: choose a new file name") from None
        except OSError as exc:
            raise StoreError(f"cannot create {target}: {exc}") from None
        if self._r is None:
            raise StoreError("the database is closed")
        try:
            async with aiosqlite.connect(target) as dest:
                await self._r.backup(dest)
        except sqlite3.Error as exc:
            raise translate(exc, "backup") from exc

    # ---- checkpoints -------------------------------------------------------------------------

    def _maybe_checkpoint(self) -> None:
        """After a commit: once enough rows changed, start the background checkpoint that
        waits for the writer to be idle."""
        if self._changes - self._changes_at_ck < self.checkpoint_after_changes:
            return
        # after a large write the WAL is truncated, not only reused: it never stays huge
        self._truncate_after = self._changes - self._changes_at_ck >= TRUNCATE_AFTER_CHANGES
        if self._ck_task is not None and not self._ck_task.done():
            return
        self._ck_task = asyncio.get_running_loop().create_task(self._checkpoint_when_idle())

    async def _checkpoint_when_idle(self) -> None:
        while self._changes - self._changes_at_ck < CHECKPOINT_FORCE_CHANGES:
            seen = self._changes
            await asyncio.sleep(self.checkpoint_idle_s)
            if self._changes == seen and self._inflight == 0:
                break
        self._changes_at_ck = self._changes
        try:
            if self._ck is None:  # opened the first time it is needed: not at start-up
                self._ck = await self._aio_connection()
            truncate, self._truncate_after = self._truncate_after, False
            await self._ck.execute(Q["wal_checkpoint_truncate" if truncate else "wal_checkpoint"])
        except (sqlite3.Error, ValueError) as exc:  # the next one tries again
            log.warning("wal_checkpoint_failed", error=str(exc))
        else:
            self.checkpoints += 1

    async def wait_checkpoint(self) -> None:
        """Wait for a background checkpoint in progress, if any."""
        if self._ck_task is not None:
            with suppress(Exception):
                await self._ck_task


def _nothing(conn: sqlite3.Connection) -> None:
    """A transaction's own work when it only writes the pending writes (``flush``)."""


def _transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T],
                 queued: Sequence[Write] = ()) -> T:
    """BEGIN IMMEDIATE, the pending writes, ``work``, COMMIT (ROLLBACK on any failure)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for write in queued:
            write(conn)
        out = work(conn)
    except BaseException:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return out


class _Requeue(Exception):
    """``cause`` (busy, I/O, or not the database's) ended the transaction before
    ``remaining`` pending writes were written."""

    def __init__(self, cause: Exception, remaining: Sequence[Write]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.remaining = remaining


def _transaction_with_fallback(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T],
                               queued: Sequence[Write]) -> tuple[T, int, list[str]]:
    """On the writer: one transaction of the pending writes and ``work``. If the database
    refuses it for its data (not busy, not I/O) and pending writes rode along, each pending
    write goes in a transaction of its own (those refused are dropped: their jobs stay
    'running' until the stuck-job rescue), then ``work`` alone. Returns ``(work's result,
    total_changes, errors of the dropped writes)``."""
    try:
        return _transaction(conn, work, queued), conn.total_changes, []
    except sqlite3.OperationalError as exc:
        raise _Requeue(exc, queued) from exc
    except sqlite3.Error:
        if not queued:
            raise
    except Exception as exc:
        raise _Requeue(exc, queued) from exc
    dropped: list[str] = []
    for at, write in enumerate(queued):
        try:
            _transaction(conn, _nothing, (write,))
        except sqlite3.OperationalError as exc:
            raise _Requeue(exc, queued[at:]) from exc
        except sqlite3.Error as exc:
            dropped.append(f"{type(exc).__name__}: {exc}")
    try:
        return _transaction(conn, work), conn.total_changes, dropped
    except sqlite3.OperationalError as exc:
        raise _Requeue(exc, ()) from exc


def _refused(exc: sqlite3.OperationalError) -> bool:
    """A write the database refuses for its disk or file (full, read-only, I/O), not a busy
    lock that the next try may get."""
    text = str(exc).lower()
    return "locked" not in text and "busy" not in text


def _why(exc: BaseException) -> str:
    text = str(exc)
    if "readonly" in text or "unable to open" in text or isinstance(exc, PermissionError):
        return (f"{text} (marketd needs to write the file and create files beside it, "
                "its -wal and -shm: check the folder's owner and permissions)")
    return text


def make_private(path: Path) -> None:
    """The database (and its WAL files) readable by the owner only, whatever they were."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if p.exists() and p.stat().st_mode & 0o077:
                os.chmod(p, 0o600)
        except PermissionError:
            log.warning("database_not_private", path=str(p),
                        hint="owned by another user: chmod 600 it")


def create_private(path: Path, *, exclusive: bool) -> None:
    """Create the file readable by its owner only (the database holds tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_CREAT | os.O_WRONLY | (os.O_EXCL if exclusive else 0)
    if exclusive or not path.exists():
        os.close(os.open(path, flags, 0o600))
