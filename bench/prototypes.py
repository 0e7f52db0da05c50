"""Bench-only prototypes of the fixes proposed in bench/README.md, so that each proposal comes
with a before/after measured in the same run. Nothing here is imported by marketd; the
benchmarks swap these in explicitly and label the rows "prototype".

- :class:`GroupCommitStore`: ``Store.enqueue`` with group commit of concurrent callers.
- :class:`InlineStore`: every statement of the real Store code run by the sqlite3 module on
  the event loop's thread, instead of one round trip to aiosqlite's thread per statement: the
  floor that "one thread hop per transaction" approaches.
- :class:`InlineGroupCommitStore`: both.
- :func:`fast_enqueue_path`: ``Store.enqueue``'s ids from one ``os.urandom`` call per 4,096
  and ``parse_job``'s normalisers memoised.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

from marketd.models import EnqueueResult, JobSpec
from marketd.store import Store


class GroupCommitStore(Store):
    """Concurrent ``enqueue`` calls share one transaction.

    The first caller becomes the leader and writes everything queued so far in one
    ``Store.enqueue`` (one BEGIN IMMEDIATE ... COMMIT); callers that arrive while that commit
    is in flight queue up and go in the next one. No timer: a lone request waits one turn of
    the event loop. Each caller still gets its own results, in its own order; if the shared
    transaction fails, every caller of that group is retried alone so one bad request cannot
    fail the others.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queued: list[tuple[Sequence[JobSpec], float, asyncio.Future[list[EnqueueResult]]]]
        self._queued = []
        self._leader = False
        self.groups: list[int] = []  # requests per transaction, for the report

    async def enqueue(self, specs: Sequence[JobSpec], fresh_for_s: float) -> list[EnqueueResult]:
        fut: asyncio.Future[list[EnqueueResult]] = asyncio.get_running_loop().create_future()
        self._queued.append((specs, fresh_for_s, fut))
        if not self._leader:
            self._leader = True
            try:
                # one turn of the loop: requests already parsed and waiting to run join in
                # (without it a store whose statements never yield would never group)
                await asyncio.sleep(0)
                while self._queued:
                    group, self._queued = self._queued, []
                    await self._write_group(group)
            finally:
                self._leader = False
        return await fut

    async def _write_group(self, group: list[Any]) -> None:
        self.groups.append(len(group))
        if len(group) == 1 or len({f for _, f, _ in group}) > 1:
            for specs, fresh, fut in group:
                await self._write_one(specs, fresh, fut)
            return
        combined = [s for specs, _, _ in group for s in specs]
        try:
            results = await Store._enqueue_tx(self, combined, group[0][1])
        except Exception:
            for specs, fresh, fut in group:
                await self._write_one(specs, fresh, fut)
            return
        at = 0
        for specs, _, fut in group:
            mine = results[at:at + len(specs)]
            at += len(specs)
            if not fut.done():
                fut.set_result(mine)

    async def _write_one(self, specs: Sequence[JobSpec], fresh: float,
                         fut: asyncio.Future[list[EnqueueResult]]) -> None:
        try:
            result = await Store._enqueue_tx(self, specs, fresh)
        except Exception as exc:
            if not fut.done():
                fut.set_exception(exc)
        else:
            if not fut.done():
                fut.set_result(result)


# ---- no thread hop per statement -------------------------------------------------------------


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

    async def _connection(self) -> Any:
        from marketd.store import Q

        conn = InlineConnection(self.path)
        await conn.execute("PRAGMA busy_timeout = 10000")
        await conn.execute(Q["pragma_setup"])
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
        return conn


class InlineGroupCommitStore(GroupCommitStore, InlineStore):
    """Group commit on inline connections."""


# ---- enqueue's Python share ----------------------------------------------------------------


class _FastUUID:
    """uuid4 text from one ``os.urandom`` call per 4,096 ids (``uuid.uuid4()`` makes one
    system call and one UUID object per id)."""

    def __init__(self) -> None:
        self._buf = b""
        self._at = 0

    def uuid4(self) -> str:
        if self._at >= len(self._buf):
            self._buf = os.urandom(16 * 4096)
            self._at = 0
        h = self._buf[self._at:self._at + 16].hex()
        self._at += 16
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _memoized(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A normaliser cached on its input; the error keeps the caller's field."""
    from marketd.errors import ValidationError

    @functools.lru_cache(maxsize=65536)
    def inner(value: Any) -> tuple[bool, Any]:
        try:
            return True, fn(value, "")
        except ValidationError as exc:
            return False, exc.message

    def wrapper(value: Any, field: str = "") -> Any:
        try:
            ok, out = inner(value)
        except TypeError:  # unhashable input: the plain path
            return fn(value, field)
        if ok:
            return out
        raise ValidationError(out, field)

    return wrapper


NORMALIZERS = ("normalize_provider", "normalize_sku", "normalize_size", "normalize_size_system",
               "normalize_priority")


@contextlib.contextmanager
def fast_enqueue_path() -> Iterator[None]:
    """For the duration: ``Store.enqueue``'s ids from :class:`_FastUUID`, and the
    ``parse_job`` normalisers memoised (a portfolio repeats its SKUs, sizes and
    priorities). Restored on exit."""
    import marketd.models as models

    # Store.enqueue now makes its ids from one os.urandom read itself (the first half of this
    # prototype, adopted); what remains to measure is the memoised normalisers
    saved = {n: getattr(models, n) for n in NORMALIZERS}
    for n, fn in saved.items():
        setattr(models, n, _memoized(fn))
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(models, n, fn)


class NoWriteStore(Store):
    """Not a fix: ``enqueue`` answers without touching the database, to measure the ceiling
    any store change can reach (marketd's HTTP handler, validation and answer alone)."""

    async def enqueue(self, specs: Sequence[JobSpec], fresh_for_s: float) -> list[EnqueueResult]:
        return [EnqueueResult(f"id-{i}", s.dedupe_key, "pending", s.priority, False)
                for i, s in enumerate(specs)]
