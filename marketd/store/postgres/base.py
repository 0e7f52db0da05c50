"""What every part of the PostgreSQL store shares: the named queries (``:name`` parameters
bound from dicts), the conversions between marketd's epoch seconds and timestamptz, and rows to
the same Python shapes the SQLite store gives."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import asyncpg

from marketd import sql
from marketd.clock import Clock, iso, parse_iso
from marketd.models import Job, JobStatus
from marketd.store.postgres.database import Conn, PgDatabase

_PARAM = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")
_COMMENT = re.compile(r"--[^\n]*")
_FOLDER = "postgres"


class Query:
    """A named query with its ``:name`` parameters numbered ``$1, $2, ...`` in order of first
    use; :meth:`args` turns a dict of parameters into the positional arguments."""

    __slots__ = ("names", "sql")

    def __init__(self, text: str) -> None:
        names: list[str] = []

        def number(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        self.sql = _PARAM.sub(number, _COMMENT.sub("", text)).strip()
        self.names = tuple(names)

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(params[n] for n in self.names)

    def rows(self, params: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        return [self.args(p) for p in params]


@cache
def queries() -> dict[str, Query]:
    """Every named query of every ``sql/postgres/*.sql`` file (queries.sql, instances.sql)."""
    out: dict[str, Query] = {}
    folder = resources.files(sql.__name__).joinpath(_FOLDER)
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, body in sql.parse_queries(entry.read_text("utf-8")).items():
                if name in out:
                    raise ValueError(f"query {name!r} is defined twice")
                out[name] = Query(body)
    return out


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every file in sql/postgres/migrations, in order."""
    folder = resources.files(sql.__name__).joinpath(_FOLDER, "migrations")
    out = []
    for entry in folder.iterdir():
        m = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    return sorted(out)


Q = queries()


def ts(t: float | None) -> datetime | None:
    """Epoch seconds to a timestamptz value at the millisecond, as the SQLite store's ISO text
    keeps them (so a time read back and given again compares equal)."""
    text = iso(t)
    return None if text is None else datetime.fromisoformat(text[:-1] + "+00:00")


def ts_text(text: str | None) -> datetime | None:
    """ISO-8601 text (as :func:`marketd.clock.iso` writes it) to a timestamptz value."""
    return ts(parse_iso(text))


def epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def plain(value: Any) -> Any:
    """A column's value as the SQLite store gives it: times as ISO text, uuids as text."""
    if isinstance(value, datetime):
        return iso(value.timestamp())
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def row_dict(row: asyncpg.Record) -> dict[str, Any]:
    return {k: plain(v) for k, v in row.items()}


def job_from_record(row: asyncpg.Record) -> Job:
    return Job(
        id=str(row["id"]), user_id=row["user_id"], provider=row["provider"], sku=row["sku"],
        size=row["size"], size_system=row["size_system"], priority=row["priority"],
        status=JobStatus(row["status"]), error_message=row["error_message"],
        retry_count=row["retry_count"], started_at=epoch(row["started_at"]),
        completed_at=epoch(row["completed_at"]), dedupe_key=row["dedupe_key"],
        created_at=epoch(row["created_at"]) or 0.0,
        next_attempt_at=epoch(row["next_attempt_at"]),
    )


class Tables:
    """What every part of the PostgreSQL store shares: the database and the clock."""

    path: str
    clock: Clock
    db: PgDatabase
    instance_id: str | None = None  # this daemon's, once registered (store.interface)
    # price-change webhooks: None (off), or their min_change_percent (store.interface)
    price_webhooks: float | None = None

    def now_ts(self) -> datetime | None:
        return ts(self.clock.now())

    async def _fetch(self, name: str, params: Mapping[str, Any] | None = None,
                     ) -> list[asyncpg.Record]:
        q = Q[name]
        return await self.db.read(q.sql, *q.args(params or {}))

    async def _rows(self, name: str, params: Mapping[str, Any] | None = None,
                    ) -> list[dict[str, Any]]:
        return [row_dict(r) for r in await self._fetch(name, params)]

    async def _write_one(self, name: str, params: Mapping[str, Any]) -> str:
        q = Q[name]
        args = q.args(params)

        async def work(conn: Conn) -> str:
            return await conn.execute(q.sql, *args)

        return await self.db.write(work)


def count(status: str) -> int:
    """Rows a statement touched, from its command tag ('UPDATE 3')."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
