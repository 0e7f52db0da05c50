"""The embedded store: one SQLite file in WAL mode (see :mod:`marketd.store.database`)."""

from __future__ import annotations

import sqlite3
import time

import structlog

from marketd import sql
from marketd.clock import Clock, iso
from marketd.errors import StoreError
from marketd.store.database import Database
from marketd.store.group_commit import GroupCommit
from marketd.store.sqlite.base import Q
from marketd.store.sqlite.calls import CallTables
from marketd.store.sqlite.instances import InstanceTables
from marketd.store.sqlite.prices import PriceTables
from marketd.store.sqlite.queue import QueueTables
from marketd.store.sqlite.retention import RetentionTables
from marketd.store.sqlite.state import StateTables
from marketd.store.sqlite.webhooks import WebhookTables
from marketd.store.versions import refuse_newer

log = structlog.get_logger(__name__)


class SQLiteStore(QueueTables, CallTables, StateTables, InstanceTables, PriceTables,
                  RetentionTables, WebhookTables):
    """:class:`marketd.store.Store` on SQLite."""

    def __init__(self, path: str, clock: Clock, *, inline: bool = False) -> None:
        self.path = path
        self.clock = clock
        self.db = Database(path, inline=inline)
        self.migration_backup: str | None = None  # the copy the last migrate() wrote
        self._group = GroupCommit(self._enqueue_tx)

    @classmethod
    async def open(cls, path: str, clock: Clock | None = None, *, migrate: bool = True,
                   inline: bool = False) -> SQLiteStore:
        """Open (creating the file, owner-only) and, unless told not to, migrate."""
        store = cls(path, clock or Clock(), inline=inline)
        await store.db.open()
        if migrate:
            try:
                await store.migrate()
            except BaseException:
                await store.db.close()
                raise
        return store

    async def close(self) -> None:
        await self._group.drained()  # enqueues already accepted are written first
        await self.db.close()

    @property
    def checkpoints(self) -> int:
        """Background WAL checkpoints completed."""
        return self.db.checkpoints

    async def wait_checkpoint(self) -> None:
        await self.db.wait_checkpoint()

    async def migrate(self, *, dry_run: bool = False) -> list[int]:
        """Apply the migrations not yet recorded (``dry_run``: only say which). A database
        from a newer marketd is refused; before changing an existing schema, a consistent
        copy is written beside the file (:attr:`migration_backup` names it)."""
        migrations = sql.migrations()
        known = [v for v, _, _ in migrations]
        now = iso(self.clock.now())
        exists = bool(await self.db.read(Q["schema_exists"]))
        done = {r[0] for r in await self.db.read(Q["applied_migrations"])} if exists else set()
        refuse_newer(done, known, self.path)
        pending = [v for v in known if v not in done]
        if dry_run or not pending:
            return pending
        if exists:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock.now()))
            target = f"{self.path}.before-migration-{max(done, default=0)}-{stamp}"
            await self.db.backup(target)
            self.migration_backup = target
            log.info("migration_backup_written", path=target, schema=max(done, default=0),
                     pending=pending)

        def work(conn: sqlite3.Connection) -> list[int]:
            exists = conn.execute(Q["schema_exists"]).fetchone()
            if not exists:
                _executescript(conn, sql.schema())
                for version, name, _ in migrations:
                    conn.execute(Q["record_migration"], (version, name, now))
                return [v for v, _, _ in migrations]
            done = {r[0] for r in conn.execute(Q["applied_migrations"]).fetchall()}
            refuse_newer(done, known, self.path)
            applied = []
            for version, name, text in migrations:
                if version not in done:
                    _executescript(conn, text)
                    conn.execute(Q["record_migration"], (version, name, now))
                    applied.append(version)
            return applied

        return await self.db.write(work)

    async def ping(self) -> bool:
        try:
            await self.db.read(Q["ping"], purpose="health")
        except StoreError:
            return False
        return True

    async def backup(self, target: str) -> None:
        await self.db.backup(target)

    async def journal_mode(self) -> str:
        """The database's journal mode (``wal``)."""
        return str((await self.db.read(Q["journal_mode"]))[0][0])


def _executescript(conn: sqlite3.Connection, script: str) -> None:
    # executescript would COMMIT the transaction; run statement by statement instead
    for statement in sql.statements(script):
        conn.execute(statement)
