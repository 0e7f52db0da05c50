from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from marketd.clock import FakeClock
from marketd.store import Store


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    s = await Store.open(str(tmp_path / "marketd.db"), clock)
    yield s
    await s.close()
