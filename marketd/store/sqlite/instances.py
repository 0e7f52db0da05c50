"""Who works, on SQLite: one daemon per file. Its instance row and heartbeat are kept as on
PostgreSQL (the status page shows them), every other instance is dead by definition (its
running jobs go back to pending at start-up), and every lane lock is granted within the
process: the SQLite meaning of :class:`marketd.store.interface.LaneLocks`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from marketd.store.sqlite.base import Q, Tables


class InstanceTables(Tables):
    _instance_row: dict[str, Any] | None = None

    async def register_instance(self, instance_id: str, host: str, pid: int) -> None:
        self.instance_id = instance_id
        self._instance_row = {"id": instance_id, "host": host, "pid": pid,
                              "started_at": self.now_iso()}
        await self.heartbeat(())

    async def heartbeat(self, lanes: Sequence[str]) -> None:
        if self._instance_row is None:
            raise RuntimeError("heartbeat before register_instance")
        params = {**self._instance_row, "now": self.now_iso(), "lanes": json.dumps(list(lanes))}
        await self.db.write(lambda conn: conn.execute(Q["upsert_instance"], params).close())

    async def rescue_dead(self, stale_after_s: float) -> int:
        """Every other instance's running jobs (one daemon per file: the others are dead)."""
        params = {"now": self.now_iso(), "instance": self.instance_id}

        def work(conn: sqlite3.Connection) -> int:
            n = conn.execute(Q["rescue_dead"], params).rowcount
            conn.execute(Q["forget_other_instances"], params)
            return n

        return await self.db.write(work)

    async def retire_instance(self) -> int:
        params = {"now": self.now_iso(), "instance": self.instance_id}

        def work(conn: sqlite3.Connection) -> int:
            n = conn.execute(Q["return_own_running"], params).rowcount
            conn.execute(Q["delete_instance"], params)
            return n

        return await self.db.write(work)

    async def instances(self) -> list[dict[str, Any]]:
        return [r | {"lanes": json.loads(r["lanes"])}
                for r in await self._rows(Q["list_instances"])]

    def lane_locks(self) -> LocalLaneLocks:
        return LocalLaneLocks()


class LocalLaneLocks:
    """Lane locks of a database only this process uses: always granted; wake-ups stay here."""

    shared = False

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._on_wake: Callable[[str], None] | None = None

    async def open(self, on_wake: Callable[[str], None]) -> None:
        self._on_wake = on_wake

    async def try_acquire(self, provider: str) -> bool:
        self._held.add(provider)
        return True

    async def release(self, provider: str) -> None:
        self._held.discard(provider)

    def holds(self, provider: str) -> bool:
        return provider in self._held

    async def check(self) -> bool:
        return True

    async def notify_wake(self, provider: str) -> None:
        if self._on_wake is not None:
            self._on_wake(provider)

    async def close(self) -> None:
        self._held.clear()


__all__ = ["InstanceTables", "LocalLaneLocks"]
