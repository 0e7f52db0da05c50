from __future__ import annotations

import inspect
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


# every store backend the store suite (tests/integration/test_store.py) runs against: an async
# generator of a function that opens one more store on the test's own database
STORE_BACKENDS: dict[str, Callable[[Path, FakeClock], AsyncIterator[OpenStore]]] = {
    "sqlite": _sqlite,
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
