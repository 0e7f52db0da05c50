"""This daemon among the daemons on one database: who works, and what happens when one dies.

Every daemon serves HTTP; one daemon at a time runs each provider's batches, the one holding
that provider's lane lock (:class:`marketd.store.LaneLocks`: on PostgreSQL a session advisory
lock that the server drops when the daemon's connection ends). Each daemon has an instance id
(a uuid) and a heartbeat row; the jobs it claims and the runs it records carry the id.

Every :data:`TICK_S` on the injected clock a daemon beats its heartbeat, tries to take the
lanes nobody holds (a dead daemon's within a tick of its death) up to its fair share (the
lanes spread over the live daemons; past it only a lane nobody took for a whole tick), gives
back an idle lane it holds beyond that share, and returns to pending the
running jobs of daemons whose heartbeat is older than :data:`DEAD_AFTER_S`, never a live
daemon's (:meth:`marketd.store.Store.rescue_dead`). Start-up returns the dead's jobs (on
SQLite, one daemon per file, that is every job a crash left running); a graceful stop returns
its own running jobs, then hands its lanes over (unlock, and a wake-up so another daemon takes
them at once). A manual enqueue on any daemon wakes the lane's holder through
:meth:`Instance.wake` (PostgreSQL NOTIFY, LISTENed on the lanes' connection), and so do a hot
enqueue and reset-failed (the CLI's too: the store NOTIFYs with the reset). On SQLite the CLI
writes the file while the daemon runs: each tick asks the store whether another process wrote
(:meth:`marketd.store.Store.outside_writes`) and wakes the lanes with due work.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

import structlog

from marketd.clock import Clock, Timer, parse_iso
from marketd.errors import MarketdError
from marketd.scheduler import Scheduler
from marketd.store import Store
from marketd.worker import Lane, restore_pause

log = structlog.get_logger(__name__)

TICK_S = 1.0  # heartbeat, lane retry and the dead's rescue, this often
DEAD_AFTER_S = 5.0  # a daemon whose heartbeat is older than this is dead


class Instance:
    def __init__(self, store: Store, clock: Clock, lanes: Mapping[str, Lane],
                 scheduler: Scheduler, *, tick_s: float = TICK_S,
                 dead_after_s: float = DEAD_AFTER_S) -> None:
        self.id = str(uuid.uuid4())
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.store = store
        self.clock = clock
        self.lanes = dict(lanes)
        self.scheduler = scheduler
        self.tick_s = tick_s
        self.dead_after_s = dead_after_s
        self.locks = store.lane_locks()
        self.stopping = False
        self._stopped = False
        self._timer: Timer | None = None
        self.fair_share = len(self.lanes)  # lanes this daemon may hold (see _fair_share)
        self._skipped: set[str] = set()  # lanes left for the others, past this one's share
        self._taking = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- start and the ticks -----------------------------------------------------------------

    async def start(self) -> int:
        """Register, listen for wake-ups, return the dead's running jobs to pending, and take
        every lane nobody holds. Returns how many jobs went back to pending."""
        for lane in self.lanes.values():
            lane.held = False
        await self.store.register_instance(self.id, self.host, self.pid)
        await self.locks.open(self._on_wake)
        rescued = await self.store.rescue_dead(self.dead_after_s)
        for name in self.lanes:
            await self._take(name, wake=False)
        await self.store.heartbeat(self.held())
        log.info("instance_started", instance=self.id, lanes=self.held())
        return rescued

    def run(self) -> None:
        """Tick every ``tick_s`` on the clock until :meth:`stop`."""
        if self._timer is None and not self.stopping:
            self._timer = self.clock.call_at(self.clock.now() + self.tick_s, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self.stopping:
            self._spawn(self._tick_and_rearm())

    async def _tick_and_rearm(self) -> None:
        try:
            await self.tick()
        except MarketdError as exc:  # the database is away: try again at the next tick
            log.warning("instance_tick_failed", error=str(exc))
        except Exception:
            log.exception("instance_tick_crashed")
        finally:
            self.run()

    async def tick(self) -> None:
        """One heartbeat: notice lanes lost with the lanes' connection, take free lanes,
        record the heartbeat, return the dead's running jobs to pending."""
        if self.locks.shared:
            await self.locks.check()
            for name, lane in self.lanes.items():
                if lane.held and not self.locks.holds(name):
                    lane.held = False
                    log.warning("lane_lost", provider=name, instance=self.id)
            self.fair_share = await self._fair_share()
            skipped, self._skipped = self._skipped, set()
            for name, lane in self.lanes.items():
                if not lane.held:
                    # past this daemon's share only a lane it left for the others at the last
                    # tick and that nobody took since
                    await self._take(name, anyway=name in skipped)
            await self._give_back_extra()
        if self.stopping:
            return
        await self.store.heartbeat(self.held())
        if not self.locks.shared:
            if await self.store.outside_writes():  # the CLI (reset-failed, enqueue) wrote
                for name, lane in self.lanes.items():
                    if lane.held and await self.store.any_due(name):
                        self.scheduler.wake(name, "written")
            return
        rescued = await self.store.rescue_dead(self.dead_after_s)
        if rescued:
            log.warning("dead_instance_jobs_rescued", jobs=rescued, instance=self.id)
            for name in self.lanes:  # their lanes' holders run them now
                await self.wake(name)

    async def _fair_share(self) -> int:
        """How many lanes one daemon should hold: the lanes spread over the live daemons. A
        daemon whose row still names a lane this one holds has lost its locks (its session
        ended): it is not running, whatever its last heartbeat says."""
        cutoff = self.clock.now() - self.dead_after_s
        mine = set(self.held())
        live = sum(1 for r in await self.store.instances()
                   if (parse_iso(r["heartbeat_at"]) or 0) >= cutoff
                   and (r["id"] == self.id or not mine & set(r.get("lanes") or ())))
        return max(1, math.ceil(len(self.lanes) / max(1, live)))

    async def _give_back_extra(self) -> None:
        """Hold no more than the fair share: an idle lane beyond it is released and the
        others woken, so three daemons run three providers, not one daemon all of them."""
        held = [n for n in sorted(self.lanes) if self.lanes[n].held]
        for name in held[self.fair_share:]:
            lane = self.lanes[name]
            if lane.lock.locked():  # a batch in flight: give it back at a later tick
                continue
            lane.held = False
            await self.locks.release(name)
            await self.locks.notify_wake(name)
            log.info("lane_given_back", provider=name, instance=self.id,
                     fair_share=self.fair_share)

    async def _take(self, name: str, *, wake: bool = True, anyway: bool = True) -> bool:
        """Take the lane if nobody holds it (and, unless ``anyway``, only within this
        daemon's fair share): catch its budget up with every daemon's calls and its pause
        with the database's, then run it (``wake``). One take at a time: a tick's and a
        wake-up's would both see room in the share."""
        async with self._taking:
            return await self._take_now(name, wake=wake, anyway=anyway)

    async def _take_now(self, name: str, *, wake: bool, anyway: bool) -> bool:
        lane = self.lanes[name]
        if not anyway and not lane.held and len(self.held()) >= self.fair_share:
            self._skipped.add(name)  # left for the others: taken at the next tick if still free
            return False
        if self.stopping or not await self.locks.try_acquire(name):
            return False
        if lane.held:
            return True
        if self.locks.shared:
            await lane.budget.load()
            state = (await self.store.provider_states()).get(name)
            await restore_pause(lane, state, self.store, self.clock.now())
            log.info("lane_taken", provider=name, instance=self.id)
        lane.held = True
        if wake:
            self.scheduler.wake(name)
        return True

    def held(self) -> list[str]:
        return sorted(n for n, lane in self.lanes.items() if lane.held)

    # ---- wake-ups ----------------------------------------------------------------------------

    async def wake(self, provider: str, reason: str = "manual") -> None:
        """A run for ``provider`` (as :meth:`Scheduler.wake` times it for ``reason``), on
        whichever daemon runs it."""
        lane = self.lanes.get(provider)
        if lane is not None and lane.held:
            self.scheduler.wake(provider, reason)
        else:
            await self.locks.notify_wake(provider, reason)

    def _on_wake(self, payload: str) -> None:
        """Another daemon (or a tool) asked for a run: run it if this one holds the lane;
        else the lane may be free (its holder stopped), so try to take it."""
        provider, _, reason = payload.partition(" ")
        lane = self.lanes.get(provider)
        if lane is None or self.stopping:
            return
        if lane.held:
            self.scheduler.wake(provider, reason or "manual")
        else:
            self._spawn(self._take(provider, anyway=False))

    # ---- stop --------------------------------------------------------------------------------

    async def stop(self) -> int:
        """A graceful stop, once the scheduler has stopped: this daemon's running jobs back
        to pending and its row gone, then its lanes released and the others woken to take
        them. Returns how many jobs went back; safe to repeat."""
        if self._stopped:
            return 0
        self._stopped = self.stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        handed = self.held()
        for lane in self.lanes.values():
            lane.held = False
        try:
            return await self.store.retire_instance()
        finally:
            try:
                for name in handed:
                    await self.locks.release(name)
                for name in handed:
                    await self.locks.notify_wake(name)
            finally:
                await self.locks.close()
            if handed and self.locks.shared:
                log.info("lanes_handed_over", lanes=handed, instance=self.id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.warning("instance_task_failed", error=f"{type(exc).__name__}: {exc}")
