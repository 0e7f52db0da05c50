"""Who works, on SQLite: one daemon per file. Its instance row and heartbeat are kept as on
PostgreSQL (the status page shows them), every other instance is dead by definition (its
running jobs go back to pending at start-up), and every lane lock is granted within the
process: the SQLite meaning of :class:`marketd.store.interface.LaneLocks`.

Also the queries of due work (aging, the next retry), and how the daemon notices a write by
another process (``marketd reset-failed`` writes the file directly): ``PRAGMA data_version``
on the write connection, which changes only when another connection commits, read with every
heartbeat."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from marketd.clock import iso, parse_iso
from marketd.store.shared import AGE_BATCH_ROWS, in_batches
from marketd.store.sqlite.base import Q, Tables


class InstanceTables(Tables):
    _instance_row: dict[str, Any] | None = None
    _data_version: int | None = None
    _written_outside = False

    async def register_instance(self, instance_id: str, host: str, pid: int) -> None:
        self.instance_id = instance_id
        self._instance_row = {"id": instance_id, "host": host, "pid": pid,
                              "started_at": self.now_iso()}
        await self.heartbeat(())

    async def heartbeat(self, lanes: Sequence[str]) -> None:
        if self._instance_row is None:
            raise RuntimeError("heartbeat before register_instance")
        params = {**self._instance_row, "now": self.now_iso(), "lanes": json.dumps(list(lanes))}

        def work(conn: sqlite3.Connection) -> int:
            conn.execute(Q["upsert_instance"], params).close()
            return int(conn.execute(Q["data_version"]).fetchone()[0])

        version = await self.db.write(work)
        if self._data_version is not None and version != self._data_version:
            self._written_outside = True
        self._data_version = version

    async def outside_writes(self) -> bool:
        seen, self._written_outside = self._written_outside, False
        return seen

    async def age_jobs(self, provider: str, *, above: int, to: int,
                       enqueued_before: float) -> int:
        params = {"provider": provider, "floor": above, "to": to,
                  "before": iso(enqueued_before), "now": self.now_iso()}

        async def age(batch: int) -> int:
            return await self.db.write(
                lambda conn: conn.execute(Q["age_jobs"], {**params, "batch": batch}).rowcount)

        return await in_batches(age, AGE_BATCH_ROWS)

    async def next_attempt_at(self, provider: str) -> float | None:
        rows = await self.db.read(Q["next_attempt_at"], {"provider": provider,
                                                         "now": self.now_iso()})
        return parse_iso(rows[0]["at"]) if rows else None

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

    async def notify_wake(self, provider: str, reason: str = "manual") -> None:
        if self._on_wake is not None:
            self._on_wake(provider if reason == "manual" else f"{provider} {reason}")

    async def close(self) -> None:
        self._held.clear()


__all__ = ["InstanceTables", "LocalLaneLocks"]
