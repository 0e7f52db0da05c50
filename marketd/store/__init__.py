"""Everything marketd keeps, behind one interface (:class:`Store`).

- :mod:`marketd.store.interface`: the :class:`Store` protocol every backend implements;
- :mod:`marketd.store.records`: what it takes and gives besides the models;
- :mod:`marketd.store.database`: the SQLite file: one writer of marketd's own, reads, checkpoints;
- :mod:`marketd.store.pending`: the writes that ride the next transaction, and their rules;
- :mod:`marketd.store.sqlite`: the SQLite store, the embedded default;
- :mod:`marketd.store.postgres`: the PostgreSQL store, for several daemons on one database
  (imported only when a URL names it: asyncpg is the ``postgres`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from marketd.clock import Clock
from marketd.store.interface import Call, Decide, LaneLocks, Store
from marketd.store.records import Defer, Outcomes, ProviderState, Retry, Wanted
from marketd.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from marketd.config import DatabaseConfig

__all__ = ["Call", "Decide", "Defer", "LaneLocks", "Outcomes", "ProviderState", "Retry",
           "SQLiteStore", "Store", "Wanted", "open_store"]


async def open_store(database: str | DatabaseConfig, clock: Clock | None = None, *,
                     migrate: bool = True, url: str | None = None) -> Store:
    """The store the configuration names: PostgreSQL when there is a URL (``url=``, or the
    ``[database]`` section's ``url``), else the SQLite file at the path (``database`` itself,
    or the section's ``path``)."""
    if not isinstance(database, str):
        url = url or database.url or None
        database = database.path
    if url:
        from marketd.store.postgres import PostgresStore

        return await PostgresStore.open(url, clock, migrate=migrate)
    return await SQLiteStore.open(database, clock, migrate=migrate)
