"""Everything marketd keeps, behind one interface (:class:`Store`).

- :mod:`marketd.store.interface`: the :class:`Store` protocol every backend implements;
- :mod:`marketd.store.records`: what it takes and gives besides the models;
- :mod:`marketd.store.database`: the SQLite file: one writer of marketd's own, reads, checkpoints;
- :mod:`marketd.store.pending`: the writes that ride the next transaction, and their rules;
- :mod:`marketd.store.sqlite`: the SQLite store, the embedded default.
"""

from __future__ import annotations

from marketd.clock import Clock
from marketd.store.interface import Call, Decide, Store
from marketd.store.records import Defer, Outcomes, ProviderState, Retry, Wanted
from marketd.store.sqlite import SQLiteStore

__all__ = ["Call", "Decide", "Defer", "Outcomes", "ProviderState", "Retry", "SQLiteStore",
           "Store", "Wanted", "open_store"]


async def open_store(path: str, clock: Clock | None = None, *, migrate: bool = True) -> Store:
    """The store the configuration names (today: the SQLite file at ``path``)."""
    return await SQLiteStore.open(path, clock, migrate=migrate)
