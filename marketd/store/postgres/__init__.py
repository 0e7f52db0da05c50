"""The shared store: PostgreSQL through asyncpg, for several daemons on one database.

The same tables and columns as the SQLite schema in PostgreSQL's types (timestamptz, uuid, a
``job_status`` enum), with migrations of its own (``marketd/sql/postgres/migrations``) recorded
in schema_migrations; the same methods with the same meaning (:class:`marketd.store.Store`).
What several daemons need on top: claims skip rows another daemon is claiming (``FOR UPDATE
SKIP LOCKED``), the partial unique index dedupes enqueues from every daemon, reservations
serialise per provider (:mod:`marketd.store.postgres.calls`) and ``migrate`` holds an advisory
transaction lock, so it is safe from several hosts at once.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import suppress
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from marketd.clock import Clock
from marketd.config import redact_url as redact
from marketd.errors import StoreError
from marketd.store.database import create_private
from marketd.store.group_commit import GroupCommit
from marketd.store.postgres.base import Q, migrations, ts
from marketd.store.postgres.calls import CallTables
from marketd.store.postgres.database import Conn, PgDatabase
from marketd.store.postgres.instances import InstanceTables
from marketd.store.postgres.prices import PriceTables
from marketd.store.postgres.queue import QueueTables
from marketd.store.postgres.retention import RetentionTables
from marketd.store.postgres.state import StateTables
from marketd.store.postgres.webhooks import WebhookTables
from marketd.store.versions import refuse_newer

__all__ = ["PostgresStore"]


class PostgresStore(QueueTables, CallTables, StateTables, InstanceTables, PriceTables,
                    RetentionTables, WebhookTables):
    """:class:`marketd.store.Store` on PostgreSQL."""

    def __init__(self, url: str, clock: Clock, *, pool_max: int | None = None) -> None:
        self.url = url
        self.path = redact(url)  # what logs and messages show: never the password
        self.clock = clock
        self.db = PgDatabase(url) if pool_max is None else PgDatabase(url, pool_max=pool_max)
        self._group = GroupCommit(self._enqueue_tx)

    @classmethod
    async def open(cls, url: str, clock: Clock | None = None, *, migrate: bool = True,
                   pool_max: int | None = None) -> PostgresStore:
        """Connect and, unless told not to, migrate."""
        store = cls(url, clock or Clock(), pool_max=pool_max)
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

    async def migrate(self, *, dry_run: bool = False) -> list[int]:
        """Apply the migrations not yet recorded, in one transaction holding an advisory
        lock: daemons migrating at once run one after the other, and the later ones find
        nothing to do. A database from a newer marketd is refused (nothing changes);
        ``dry_run`` only says what would run. (The transaction is the safety net here: take a
        ``marketd backup`` (pg_dump) before upgrading.)"""
        todo = migrations()
        known = [v for v, _, _ in todo]
        now = ts(self.clock.now())
        where = redact(self.url)
        if dry_run:
            exists = (await self.db.read(Q["migrations_table_exists"].sql))[0][0]
            done = {r[0] for r in await self.db.read(Q["applied_migrations"].sql)} \
                if exists else set()
            refuse_newer(done, known, where)
            return [v for v in known if v not in done]

        async def work(conn: Conn) -> list[int]:
            await conn.execute(Q["migrate_lock"].sql)
            await conn.execute(Q["create_migrations_table"].sql)
            done = {r[0] for r in await conn.fetch(Q["applied_migrations"].sql)}
            refuse_newer(done, known, where)
            applied = []
            for version, name, text in todo:
                if version not in done:
                    await conn.execute(text)
                    await conn.execute(Q["record_migration"].sql, version, name, now)
                    applied.append(version)
            return applied

        return await self.db.write(work)

    async def ping(self) -> bool:
        try:
            await self._fetch("ping")
        except StoreError:
            return False
        return True

    async def backup(self, target: str) -> None:
        """A consistent copy (one snapshot) of the database at ``target``: ``pg_dump``'s custom
        format, for ``pg_restore``."""
        try:
            create_private(Path(target), exclusive=True)
        except FileExistsError:
            raise StoreError(f"{target} exists: choose a new file name") from None
        except OSError as exc:
            raise StoreError(f"cannot create {target}: {exc}") from None
        url, password = without_password(self.url)
        env = {**os.environ, "PGPASSWORD": password} if password is not None else None
        try:
            proc = await asyncio.create_subprocess_exec(  # the password never on argv (ps)
                "pg_dump", "--format=custom", "--no-owner", f"--file={target}",
                f"--dbname={url}", stdin=asyncio.subprocess.DEVNULL, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(target)
            raise StoreError(f"cannot run pg_dump for the backup: {exc}") from None
        _, err = await proc.communicate()
        if proc.returncode != 0:
            with suppress(OSError):
                os.unlink(target)
            text = err.decode(errors="replace").strip().replace(url, self.path)
            raise StoreError(f"pg_dump failed ({proc.returncode}): {text}")


def without_password(url: str) -> tuple[str, str | None]:
    """``url`` without its password (in the user part or a ``password=`` parameter), and the
    password, for a child process's environment (PGPASSWORD) rather than its command line,
    which every user of the machine can read."""
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password is not None else None
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = userinfo.split(":", 1)[0] + "@" + host
    query = parse_qsl(parts.query, keep_blank_values=True)
    for key, value in query:
        if key == "password":
            password = value
    if password is None:
        return url, None
    kept = urlencode([(k, v) for k, v in query if k != "password"])
    # (by hand: urlunsplit drops the "//" of an empty host, postgresql:///db?host=/run/pg)
    return f"{parts.scheme}://{netloc}{parts.path}{'?' + kept if kept else ''}", password
