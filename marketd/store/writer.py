"""Where write transactions run: a thread of marketd's own holding the one write connection
(:class:`ThreadWriter`), or the event loop's own thread (:class:`InlineWriter`, for tests and
benchmarks, as Datasette's in-line mode).

A thread keeps SQLite off the event loop: a commit's fsync or a lock held by another process
(``busy_timeout``) never stalls HTTP. Functions run one at a time, in the order asked.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
Fn = Callable[..., Any]


class Writer(Protocol):
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the write connection."""

    async def stop(self) -> None:
        """Finish what was asked, then close the connection."""


class InlineWriter:
    """Runs each function directly on the caller's thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn: sqlite3.Connection | None = conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the writer is stopped")
        return fn(self._conn, *args)

    async def stop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


_Item = tuple[Fn, tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"] | None


class ThreadWriter:
    """One daemon thread that owns the write connection and serves a queue of functions."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closing = False

    @classmethod
    async def start(cls, connect: Callable[[], sqlite3.Connection]) -> ThreadWriter:
        """Start the thread and open the connection on it (errors are raised here)."""
        self = cls()
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        self._stopped = loop.create_future()
        self._thread = threading.Thread(target=self._serve, args=(connect, loop, opened),
                                        name="marketd-writer", daemon=True)
        self._thread.start()
        try:
            await opened
        except BaseException:
            self._thread.join()  # it is returning: no thread outlives a failed open
            raise
        return self

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None or self._closing:
            raise sqlite3.ProgrammingError("the writer is stopped")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        fut.add_done_callback(_consume)
        self._queue.put((fn, args, loop, fut))
        # shielded: a cancelled caller leaves the transaction to finish whole on the thread
        return await asyncio.shield(fut)

    async def stop(self) -> None:
        if self._thread is None or self._stopped is None:
            return
        if not self._closing:
            self._closing = True
            self._queue.put(None)
        await asyncio.shield(self._stopped)
        self._thread = None

    def _serve(self, connect: Callable[[], sqlite3.Connection],
               loop: asyncio.AbstractEventLoop, opened: asyncio.Future[None]) -> None:
        try:
            conn = connect()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, opened, None, exc)
            loop.call_soon_threadsafe(_settle, self._stopped, None, None)
            return
        loop.call_soon_threadsafe(_settle, opened, None, None)
        try:
            while (item := self._queue.get()) is not None:
                fn, args, caller_loop, fut = item
                try:
                    result = fn(conn, *args)
                except BaseException as exc:
                    caller_loop.call_soon_threadsafe(_settle, fut, None, exc)
                else:
                    caller_loop.call_soon_threadsafe(_settle, fut, result, None)
        finally:
            with suppress(sqlite3.Error):
                conn.close()
            with suppress(RuntimeError):  # the loop may be closed already at exit
                loop.call_soon_threadsafe(_settle, self._stopped, None, None)


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve the outcome even if the caller went away (no 'never retrieved' noise)."""
    if not fut.cancelled():
        fut.exception()


def _settle(fut: asyncio.Future[Any] | None, result: Any, exc: BaseException | None) -> None:
    if fut is None or fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
