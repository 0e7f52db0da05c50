from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse
from aioresponses import aioresponses
from yarl import URL

from marketd.clock import FakeClock
from marketd.store import SQLiteStore, Store


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


OpenStore = Callable[[], Awaitable[Store]]


async def _sqlite(tmp_path: Path, clock: FakeClock) -> AsyncIterator[OpenStore]:
    path = str(tmp_path / "marketd.db")

    async def open_one() -> Store:
        return await SQLiteStore.open(path, clock)

    yield open_one


# the PostgreSQL server of the "postgres" backend: each test gets a database of its own on it
POSTGRES_ADMIN_URL = os.environ.get("MARKETD_TEST_POSTGRES_URL",
                                    "postgresql://postgres@127.0.0.1:5432/postgres")


def _service_missing(reason: str) -> None:
    """Skip a test whose service is missing, or fail it where services are required
    (MARKETD_REQUIRE_SERVICES=1, as .ci/run sets)."""
    if os.environ.get("MARKETD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (MARKETD_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


async def postgres_database() -> AsyncIterator[str]:
    """A fresh database (marketd_test_<uuid>) on the test server, dropped afterwards: yields
    its URL. Skips (or fails, see _service_missing) when no server answers."""
    try:
        import asyncpg
    except ImportError:
        _service_missing("asyncpg is not installed (pip install '.[postgres]')")
        raise
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        _service_missing(f"no PostgreSQL answers at {POSTGRES_ADMIN_URL}: {exc}")
        raise
    name = f"marketd_test_{uuid.uuid4().hex}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _postgres(tmp_path: Path, clock: FakeClock) -> AsyncIterator[OpenStore]:
    from marketd.store.postgres import PostgresStore

    databases = postgres_database()
    url = await anext(databases)

    async def open_one() -> Store:
        return await PostgresStore.open(url, clock)

    try:
        yield open_one
    finally:
        await databases.aclose()


# every store backend the store suite (tests/integration/test_store.py) runs against: an async
# generator of a function that opens one more store on the test's own database
STORE_BACKENDS: dict[str, Callable[[Path, FakeClock], AsyncIterator[OpenStore]]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture
def backend() -> str:
    """The store backend of tests that take ``store`` (the store suite runs them all)."""
    return "sqlite"


@pytest.fixture
async def open_store(backend: str, tmp_path: Path,
                     clock: FakeClock) -> AsyncIterator[OpenStore]:
    """Opens a store on this test's database (another process's view, or a restart); every
    store opened is closed at the end."""
    opened: list[Store] = []
    factory = STORE_BACKENDS[backend](tmp_path, clock)
    open_one = await anext(factory)

    async def tracked() -> Store:
        s = await open_one()
        opened.append(s)
        return s

    yield tracked
    for s in opened:
        await s.close()
    await factory.aclose()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def http() -> Iterator[aioresponses]:
    """Provider APIs faked at the HTTP boundary."""
    with aioresponses() as m:
        yield m


class _CompatResponse(ClientResponse):
    """aioresponses 0.7.9 builds responses without the ``stream_writer`` that aiohttp 3.14
    requires (pnuckowski/aioresponses#289); hand it a finished one. A no-op on older aiohttp."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture(autouse=True)
def _aioresponses_compat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aioresponses.core.ClientResponse", _CompatResponse)
