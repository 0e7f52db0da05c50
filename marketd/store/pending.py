"""The writes that wait for the next write transaction, and the rules that flush them.

A batch records each group's results, gives back calls it reserved and did not send, and adds
its metrics row without a transaction of its own: they wait here and ride, in the order they
were added, at the front of the next write transaction, whatever it is (usually the next
call's reservation: one commit per call instead of two). The rules, all of them:

1. every write transaction (:meth:`Database.write`) takes everything waiting;
2. :meth:`due`: once the oldest has waited ``MAX_WAIT_S``, the store's ``flush_due`` writes them
   (the worker asks between groups, so a slow provider's results are committed within a
   second of each call);
3. a batch's end, a run's finish and closing the store write them at once (``flush``).

Until written, a group's jobs stay 'running' and its unsent calls count against the budget:
a crash in between costs those calls' answers (start-up returns the jobs to pending) and never
overspends. Busy or I/O errors put the writes back at the front, in order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

# a pending write of the SQLite store: a function of the write connection
Write = Callable[[sqlite3.Connection], None]
# any backend's pending write (the PostgreSQL store's are coroutines of its connection)
W = TypeVar("W")

MAX_WAIT_S = 1.0


class PendingWritesOf(Generic[W]):
    """The buffer and its rules, for any backend's kind of write."""

    __slots__ = ("_first_at", "_writes")

    def __init__(self) -> None:
        self._writes: list[W] = []
        self._first_at: float | None = None

    def __bool__(self) -> bool:
        return bool(self._writes)

    def __len__(self) -> int:
        return len(self._writes)

    def add(self, write: W, now: float) -> None:
        if not self._writes:
            self._first_at = now
        self._writes.append(write)

    @property
    def last(self) -> W | None:
        """The newest write (a results buffer may take another group's rows)."""
        return self._writes[-1] if self._writes else None

    def due(self, now: float) -> bool:
        """Rule 2: the oldest has waited long enough."""
        return self._first_at is not None and now - self._first_at >= MAX_WAIT_S

    def take(self) -> list[W]:
        """Everything waiting, for one transaction."""
        taken, self._writes, self._first_at = self._writes, [], None
        return taken

    def put_back(self, writes: Sequence[W]) -> None:
        """Writes a transaction could not write go back to the front, in order, due at once."""
        if writes:
            self._writes[:0] = writes
            self._first_at = float("-inf")


class PendingWrites(PendingWritesOf[Write]):
    """The SQLite store's pending writes."""

    __slots__ = ()
