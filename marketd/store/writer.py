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
from typing import Any, Protocol

Fn = Callable[..., Any]


# called with (result, None) or (None, exception) once a function has run
Done = Callable[[Any, BaseException | None], None]


class Writer(Protocol):
    def submit(self, done: Done, fn: Fn, *args: Any) -> None:
        """Run ``fn(connection, *args)`` on the write connection, then ``done`` on the loop;
        ``done`` is called whatever happens to the caller (a cancelled caller cannot lose
        what the transaction carried)."""

    async def stop(self) -> None:
        """Finish what was asked, then close the connection."""


class InlineWriter:
    """Runs each function directly on the caller's thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.connection: sqlite3.Connection | None = conn

    def submit(self, done: Done, fn: Fn, *args: Any) -> None:
        if self.connection is None:
            done(None, sqlite3.ProgrammingError("the writer is stopped"))
            return
        try:
            result = fn(self.connection, *args)
        except Exception as exc:
            done(None, exc)
        else:
            done(result, None)

    async def stop(self) -> None:
        conn, self.connection = self.connection, None
        if conn is not None:
            conn.close()


_Item = tuple[Done, Fn, tuple[Any, ...]] | None


class ThreadWriter:
    """One daemon thread that owns the write connection and serves a queue of functions."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._closing = False

    @classmethod
    async def start(cls, connect: Callable[[], sqlite3.Connection]) -> ThreadWriter:
        """Start the thread and open the connection on it (errors are raised here)."""
        loop = asyncio.get_running_loop()
        self = cls(loop)
        opened: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._serve, args=(connect, opened),
                                        name="marketd-writer", daemon=True)
        self._thread.start()
        try:
            await opened
        except BaseException:
            self._thread.join()  # it is returning: no thread outlives a failed open
            raise
        return self

    def submit(self, done: Done, fn: Fn, *args: Any) -> None:
        if self._thread is None or self._closing:
            done(None, sqlite3.ProgrammingError("the writer is stopped"))
            return
        self._queue.put((done, fn, args))

    async def stop(self) -> None:
        if self._thread is None:
            return
        if not self._closing:
            self._closing = True
            self._queue.put(None)
        await asyncio.shield(self._stopped)
        self._thread = None

    def _serve(self, connect: Callable[[], sqlite3.Connection],
               opened: asyncio.Future[None]) -> None:
        loop = self._loop
        try:
            conn = connect()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, opened, None, exc)
            loop.call_soon_threadsafe(_settle, self._stopped, None, None)
            return
        loop.call_soon_threadsafe(_settle, opened, None, None)
        try:
            while (item := self._queue.get()) is not None:
                done, fn, args = item
                try:
                    result = fn(conn, *args)
                except BaseException as exc:
                    loop.call_soon_threadsafe(done, None, exc)
                else:
                    loop.call_soon_threadsafe(done, result, None)
        finally:
            with suppress(sqlite3.Error):
                conn.close()
            with suppress(RuntimeError):  # the loop may be closed already at exit
                loop.call_soon_threadsafe(_settle, self._stopped, None, None)


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
