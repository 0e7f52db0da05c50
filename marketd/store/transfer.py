"""Moving over: a stopped SQLite database copied into an empty PostgreSQL one
(``marketd migrate -c sqlite-config.toml --to postgresql://...``).

The copy follows the two schemas as they are, not a list kept here: every table both databases
have (but schema_migrations and market_instances, which each keeps for itself), every column
both tables have, by name, converted by the PostgreSQL column's type (ISO-8601 text to
timestamptz, uuid text to uuid, JSON text to jsonb, ...). Ids are kept, and identity sequences
are advanced past them (and past SQLite's AUTOINCREMENT high-water mark: call ids are never
reused). A PostgreSQL
``row_id`` column SQLite lacks takes the SQLite rowid (the queue's insertion order). An integer
SQLite id whose PostgreSQL column is a uuid (market_budgets.id) takes the column's default. Of
market_calls only the calls still inside a window are copied (sent within the provider's
longest limit window, and at least the last day); every other row is.

Refusals (:class:`Refused`, nothing changed): the SQLite file is missing, not a marketd
database, or open in a running daemon; the PostgreSQL database holds rows in a table the copy
writes. The PostgreSQL schema is migrated first (its own transaction); the rows are copied in
one transaction (``COPY``, in batches), the counts are checked table by table inside it, and
any failure rolls the whole copy back.

The in-use test looks at the SQLite WAL index the way SQLite itself does (a connection holds a
read lock on its dead-man-switch byte): call :func:`transfer` with no SQLite connection to the
file open in this process (closing a file drops every POSIX lock the process holds on it).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

from marketd import sql
from marketd.config import redact_url
from marketd.errors import MarketdError, StoreError
from marketd.store.postgres.base import Query

BATCH_ROWS = 5000
PROGRESS_EVERY_S = 2.0
MIN_CALL_WINDOW_S = 86_400.0  # calls are kept for at least the last day
CONNECT_TIMEOUT_S = 10.0
# each database keeps its own: its migrations, its daemons (the rows of the stopped SQLite
# daemon are not copied: PostgreSQL's daemons return its running jobs to pending)
OWN_TABLES = frozenset({"schema_migrations", "market_instances"})
ROW_ID = "row_id"  # PostgreSQL's stand-in for SQLite's implicit rowid
_SHM_DMS = 128  # SQLite's WAL-index "dead man switch" byte: every open connection read-locks it

Convert = Callable[[Any], Any]
Progress = Callable[[str], None]


class Refused(MarketdError):
    """The copy was refused before anything changed (bad usage: exit 2)."""


class TransferError(MarketdError):
    """The copy failed and was rolled back (exit 1)."""


@dataclass(frozen=True)
class Copied:
    """One table's copy: ``rows`` copied of the ``source_rows`` SQLite held; the SQLite columns
    PostgreSQL has not (left out) and the PostgreSQL ones left to their default."""

    table: str
    rows: int
    source_rows: int
    left_out: tuple[str, ...] = ()
    defaulted: tuple[str, ...] = ()


@dataclass
class Report:
    source: str
    target: str  # the URL without its password
    migrations: list[int] = field(default_factory=list)
    tables: list[Copied] = field(default_factory=list)
    skipped_tables: list[str] = field(default_factory=list)  # SQLite tables PostgreSQL has not
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


@dataclass(frozen=True)
class _Column:
    name: str
    type: str
    is_enum: bool
    is_identity: bool
    has_default: bool
    not_null: bool


@dataclass
class _Plan:
    """How one table is copied: the columns selected from SQLite (``rowid`` for row_id) and
    the PostgreSQL columns they go to, with the conversion of each."""

    table: str
    select: list[str]
    columns: list[str]
    converts: list[Convert | None]
    left_out: list[str]
    defaulted: list[str]
    sequences: list[str]  # PostgreSQL identity columns among ``columns``


# ---- the SQLite side -----------------------------------------------------------------------


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def in_use(path: Path) -> bool:
    """True when some process has the WAL database open (a running daemon): it holds a read
    lock on the WAL index's dead-man-switch byte, which an exclusive lock test then meets."""
    try:
        fd = os.open(f"{path}-shm", os.O_RDWR)
    except OSError:  # no WAL index: no connection has the database open in WAL mode
        return False
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS)
        return False
    finally:
        os.close(fd)


def open_source(path: str) -> sqlite3.Connection:
    """The SQLite database, checked and held: it exists (it is never created), no daemon has
    it open, it is marketd's; a write transaction (BEGIN IMMEDIATE) is held until it is closed,
    so the copy reads one state and no daemon starts writing meanwhile."""
    file = Path(path)
    if not file.is_file():
        raise Refused(f"no SQLite database at {path} (database.path of the config): "
                      "nothing to copy")
    if in_use(file):
        raise Refused(f"{path} is open in another process (a running marketd?): stop the "
                      "daemon first, then copy")
    try:
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=rw", uri=True, timeout=0,
                               isolation_level=None)
    except sqlite3.Error as exc:
        raise Refused(f"cannot open {path}: {exc}") from None
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise Refused(f"{path} is being written by another process (a running marketd?): "
                          "stop the daemon first, then copy") from None
        raise Refused(f"cannot read {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise Refused(f"{path} is not an SQLite database: {exc}") from None
    try:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                             "AND name = 'schema_migrations'").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise Refused(f"{path} is not an SQLite database: {exc}") from None
    if not found:
        conn.close()
        raise Refused(f"{path} is not a marketd database (no schema_migrations table)")
    return conn


def close_source(conn: sqlite3.Connection) -> None:
    with suppress(sqlite3.Error):
        conn.execute("ROLLBACK")
    conn.close()


def source_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
    return [r[0] for r in rows if r[0] not in OWN_TABLES]


def _source_columns(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    """Column name -> declared type (upper case)."""
    return {r[1]: str(r[2] or "").upper()
            for r in conn.execute(f"PRAGMA table_info({quote(table)})").fetchall()}


def _has_rowid(conn: sqlite3.Connection, table: str) -> bool:
    try:
        conn.execute(f"SELECT rowid FROM {quote(table)} LIMIT 0")
    except sqlite3.OperationalError:  # a WITHOUT ROWID table
        return False
    return True


def _high_water(conn: sqlite3.Connection, table: str) -> int:
    """SQLite's AUTOINCREMENT high-water mark of the table (0 without one)."""
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    except sqlite3.OperationalError:  # no AUTOINCREMENT table at all
        return 0
    return int(row[0]) if row and row[0] is not None else 0


# ---- conversions by the PostgreSQL column's type ----------------------------------------------


def to_timestamptz(value: Any) -> datetime:
    if isinstance(value, str):
        out = datetime.fromisoformat(value)
        return out if out.tzinfo is not None else out.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)


def to_timestamp(value: Any) -> datetime:
    return to_timestamptz(value).astimezone(UTC).replace(tzinfo=None)


def to_uuid(value: Any) -> uuid.UUID:
    """uuid text as it is; any other text (an id SQLite's daemon made otherwise) to the same
    name-based uuid each time it occurs."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"marketd:{value}")


def to_json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# the conversions of values whose PostgreSQL type differs from SQLite's; integers, floats and
# text go as they are (asyncpg refuses a value of the wrong type, and the copy rolls back)
_CONVERTS: dict[str, Convert] = {
    "timestamp with time zone": to_timestamptz, "timestamp without time zone": to_timestamp,
    "uuid": to_uuid, "numeric": lambda v: Decimal(str(v)), "json": to_json, "jsonb": to_json,
    "boolean": bool, "bytea": lambda v: v if isinstance(v, bytes) else str(v).encode(),
}


def converter(column: _Column) -> Convert | None:
    return None if column.is_enum else _CONVERTS.get(column.type.split("(", 1)[0].strip())


def _integer_affinity(declared: str) -> bool:
    return "INT" in declared


# ---- the PostgreSQL side ---------------------------------------------------------------------


def queries() -> dict[str, Query]:
    text = resources.files(sql.__name__).joinpath("postgres", "transfer.sql").read_text("utf-8")
    return {name: Query(body) for name, body in sql.parse_queries(text).items()}


Q = queries()


async def target_columns(conn: asyncpg.Connection) -> dict[str, dict[str, _Column]]:
    out: dict[str, dict[str, _Column]] = {}
    for r in await conn.fetch(Q["transfer_columns"].sql):
        out.setdefault(r["table_name"], {})[r["column_name"]] = _Column(
            r["column_name"], r["column_type"], r["is_enum"], r["is_identity"],
            r["has_default"], r["not_null"])
    return out


async def nonempty(conn: asyncpg.Connection, tables: Iterable[str]) -> list[str]:
    """The tables of ``tables`` that exist in the target and hold rows."""
    found = []
    for table in tables:
        q = Q["transfer_table_exists"]
        if await conn.fetchval(q.sql, *q.args({"name": table})) and await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {quote(table)})"):
            found.append(table)
    return found


def copy_order(tables: Sequence[str], references: Iterable[tuple[str, str]]) -> list[str]:
    """``tables`` with every table after those it references (then by name)."""
    needs: dict[str, set[str]] = {t: set() for t in tables}
    for table, referenced in references:
        if table in needs and referenced in needs and referenced != table:
            needs[table].add(referenced)
    out: list[str] = []
    while needs:
        ready = sorted(t for t, deps in needs.items() if not deps - set(out))
        if not ready:  # a cycle: the rest in name order (the COPY says which key refuses)
            ready = sorted(needs)
        for t in ready:
            out.append(t)
            del needs[t]
    return out


def plan_table(conn: sqlite3.Connection, table: str, target: Mapping[str, _Column]) -> _Plan:
    source = _source_columns(conn, table)
    plan = _Plan(table, [], [], [], [c for c in source if c not in target], [], [])
    for name, column in target.items():
        if name in source:
            if column.type == "uuid" and _integer_affinity(source[name]):
                plan.defaulted.append(name)  # an integer id where PostgreSQL makes uuids
                continue
            plan.select.append(quote(name))
        elif name == ROW_ID and _has_rowid(conn, table):
            plan.select.append("rowid")
        else:
            plan.defaulted.append(name)
            continue
        plan.columns.append(name)
        plan.converts.append(converter(column))
        if column.is_identity:
            plan.sequences.append(name)
    missing = [c for c in plan.defaulted if target[c].not_null and not target[c].has_default]
    if missing:
        raise TransferError(f"{table}: PostgreSQL column(s) {', '.join(missing)} need a value "
                            "SQLite has not; migrate the SQLite database with this version of "
                            "marketd first (marketd migrate -c ...)")
    return plan


# ---- the copy --------------------------------------------------------------------------------


class _Ticker:
    """A progress line at most every PROGRESS_EVERY_S (none on short copies)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.last = time.monotonic()

    def tick(self, table: str, done: int, total: int) -> None:
        now = time.monotonic()
        if self.progress is not None and now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self.progress(f"copying {table}: {done} of {total} rows")


class _Rows:
    """A table's rows as PostgreSQL's COPY takes them, for one COPY per table (reading and
    converting here overlap with the server's writing): only the columns whose values change
    type are converted; it counts the rows it gave and ticks the progress."""

    def __init__(self, conn: sqlite3.Connection, plan: _Plan,
                 keep: Callable[[Sequence[Any]], bool] | None, ticker: _Ticker,
                 total: int) -> None:
        self.cur = conn.execute(f"SELECT {', '.join(plan.select)} FROM {quote(plan.table)}")
        self.plan, self.keep, self.ticker, self.total = plan, keep, ticker, total
        self.count = 0

    async def __aiter__(self) -> AsyncIterator[Sequence[Any]]:
        converts = [(i, f) for i, f in enumerate(self.plan.converts) if f is not None]
        while rows := self.cur.fetchmany(BATCH_ROWS):
            if self.keep is not None:
                rows = [r for r in rows if self.keep(r)]
            for row in rows:
                if converts:
                    out = list(row)
                    for i, f in converts:
                        if out[i] is not None:
                            out[i] = f(out[i])
                    yield out
                else:
                    yield row
            self.count += len(rows)
            self.ticker.tick(self.plan.table, self.count, self.total)


def call_filter(plan: _Plan, windows: Mapping[str, float],
                now: float) -> Callable[[Sequence[Any]], bool] | None:
    """market_calls: keep the calls sent within the provider's longest window (and at least
    the last day)."""
    if plan.table != "market_calls" or not {"provider", "sent_at"} <= set(plan.columns):
        return None
    p, s = plan.columns.index("provider"), plan.columns.index("sent_at")

    def keep(row: Sequence[Any]) -> bool:
        window = max(windows.get(row[p], 0.0), MIN_CALL_WINDOW_S)
        return row[s] is not None and float(row[s]) >= now - window

    return keep


async def _copy_table(src: sqlite3.Connection, pg: asyncpg.Connection, plan: _Plan,
                      keep: Callable[[Sequence[Any]], bool] | None, ticker: _Ticker) -> Copied:
    total = int(src.execute(f"SELECT count(*) FROM {quote(plan.table)}").fetchone()[0])
    rows = _Rows(src, plan, keep, ticker, total)
    try:
        await pg.copy_records_to_table(plan.table, records=rows, columns=plan.columns)
    except (ValueError, TypeError, OverflowError) as exc:
        raise TransferError(f"{plan.table}: a value does not convert: {exc}") from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise TransferError(f"{plan.table}: PostgreSQL refused the rows: "
                            f"{type(exc).__name__}: {exc}") from None
    copied = rows.count
    found = int(await pg.fetchval(f"SELECT count(*) FROM {quote(plan.table)}"))
    if found != copied or (keep is None and copied != total):
        raise TransferError(f"{plan.table}: count check failed: SQLite {total}, copied {copied}, "
                            f"PostgreSQL {found}")
    for column in plan.sequences:
        high = await pg.fetchval(f"SELECT max({quote(column)}) FROM {quote(plan.table)}")
        value = max(int(high or 0), _high_water(src, plan.table) if column != ROW_ID else 0)
        if value > 0:
            q = Q["transfer_advance_sequence"]
            await pg.fetchval(q.sql, *q.args({"table_name": plan.table, "column_name": column,
                                               "value": value}))
    return Copied(plan.table, copied, total, tuple(plan.left_out), tuple(plan.defaulted))


async def _migrate(url: str) -> list[int]:
    from marketd.store.postgres import PostgresStore

    store = await PostgresStore.open(url, migrate=False, pool_max=2)
    try:
        return await store.migrate()
    finally:
        await store.close()


async def transfer(path: str, url: str, *, windows: Mapping[str, float] | None = None,
                   now: float | None = None, progress: Progress | None = None) -> Report:
    """Copy the stopped SQLite database at ``path`` into the empty PostgreSQL database at
    ``url`` (see the module's docstring). ``windows``: each provider's longest limit window
    in seconds; ``now``: the time the call windows end (default: the wall clock)."""
    started = time.monotonic()
    report = Report(path, redact_url(url))
    src = open_source(path)
    try:
        try:
            pg = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError, asyncpg.PostgresError,
                asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot open database {report.target}: "
                             f"{type(exc).__name__}: {exc}") from None
        try:
            await _refuse_nonempty(pg, source_tables(src), report.target)
            report.migrations = await _migrate(url)
            await _copy_all(src, pg, report, windows or {},
                            time.time() if now is None else now, _Ticker(progress))
        finally:
            await pg.close()
    finally:
        close_source(src)
    report.seconds = time.monotonic() - started
    return report


async def _refuse_nonempty(pg: asyncpg.Connection, tables: Iterable[str], target: str) -> None:
    full = await nonempty(pg, tables)
    if full:
        raise Refused(f"{target} is not empty ({', '.join(full)} hold"
                      f"{'s' if len(full) == 1 else ''} rows): nothing was changed; copy into "
                      "a new database (createdb ...)")


async def _copy_all(src: sqlite3.Connection, pg: asyncpg.Connection, report: Report,
                    windows: Mapping[str, float], now: float, ticker: _Ticker) -> None:
    target = await target_columns(pg)
    tables = source_tables(src)
    report.skipped_tables = [t for t in tables if t not in target]
    tables = [t for t in tables if t in target]
    references = [(r["table_name"], r["references_table"])
                  for r in await pg.fetch(Q["transfer_foreign_keys"].sql)]
    plans = [plan_table(src, t, target[t]) for t in copy_order(tables, references)]
    async with pg.transaction():
        # no daemon writes these tables until the copy commits (reads go on)
        if tables:
            await pg.execute(f"LOCK TABLE {', '.join(map(quote, tables))} IN EXCLUSIVE MODE")
        await _refuse_nonempty(pg, tables, report.target)
        for plan in plans:
            report.tables.append(
                await _copy_table(src, pg, plan, call_filter(plan, windows, now), ticker))
