"""Bench-only variants of the Store, measured beside marketd in the same run. Nothing here is
imported by marketd; the benchmarks swap these in explicitly and label the rows "prototype".
(The earlier prototypes, group commit and memoised validation, are marketd's own code now.)

- :class:`InlineStore`: the real Store code with its statements run by the sqlite3 module on
  the event loop's thread, instead of in aiosqlite's: what removing the thread hop would give.
- :class:`NoWriteStore`: ``enqueue`` answers without the database: the ceiling any store change
  can reach.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator, Sequence
from typing import Any

from marketd.models import EnqueueResult, JobSpec
from marketd.store import Store


class _Cursor:
    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    @property
    def lastrowid(self) -> int | None:
        return self._cur.lastrowid

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    async def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    async def fetchone(self) -> Any:
        return self._cur.fetchone()

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cur.close()


class _Call:
    """What aiosqlite's ``execute`` returns: awaitable, and an async context manager."""

    def __init__(self, fn: Callable[[], sqlite3.Cursor]) -> None:
        self._fn = fn

    def __await__(self) -> Generator[Any, None, _Cursor]:
        return self._run().__await__()

    async def _run(self) -> _Cursor:
        return _Cursor(self._fn())

    async def __aenter__(self) -> _Cursor:
        return _Cursor(self._fn())

    async def __aexit__(self, *exc: object) -> None:
        return None


class InlineConnection:
    """The slice of aiosqlite.Connection that store.py uses, run inline on the loop."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row

    @property
    def row_factory(self) -> Any:
        return self._conn.row_factory

    @row_factory.setter
    def row_factory(self, value: Any) -> None:
        self._conn.row_factory = value

    def execute(self, sql: str, parameters: Any = ()) -> _Call:
        return _Call(lambda: self._conn.execute(sql, parameters))

    def executemany(self, sql: str, parameters: Any) -> _Call:
        return _Call(lambda: self._conn.executemany(sql, parameters))

    async def _execute(self, fn: Callable[..., Any], *args: Any) -> Any:
        """aiosqlite runs ``fn`` in its thread (Store._write); here, on the loop."""
        return fn(*args)

    async def close(self) -> None:
        self._conn.close()


class InlineStore(Store):
    """The real Store, its connections swapped for :class:`InlineConnection`."""

    async def _open(self) -> Any:
        return InlineConnection(self.path)


class NoWriteStore(Store):
    """Not a fix: ``enqueue`` answers without touching the database, to measure the ceiling
    any store change can reach (marketd's HTTP handler, validation and answer alone)."""

    async def enqueue(self, specs: Sequence[JobSpec], fresh_for_s: float) -> list[EnqueueResult]:
        return [EnqueueResult(f"id-{i}", s.dedupe_key, "pending", s.priority, False)
                for i, s in enumerate(specs)]
