"""systemd's notify protocol (Type=notify, WatchdogSec) over a socket opened once at start-up.

The socket is connected when the daemon starts and kept, so READY, WATCHDOG and STOPPING
never need a new file descriptor: with every descriptor taken by clients the watchdog still
pings, because what it reports is the event loop being alive (and the scheduler with it),
not whether a file can be opened. Failures are logged once per interval with a count.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

LOG_EVERY_S = 60.0


class Notifier:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        self._sock: socket.socket | None = None
        self._failed = 0
        self._last_log = 0.0
        path = env.get("NOTIFY_SOCKET")
        if path:
            if path.startswith("@"):
                path = "\0" + path[1:]
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.connect(path)
                self._sock = sock
            except OSError as exc:
                log.warning("sd_notify_unavailable", error=str(exc))
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID")
        ok = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_s = int(usec) / 1_000_000 if ok else None

    def notify(self, message: str) -> bool:
        """Send one message; a no-op outside systemd."""
        if self._sock is None:
            return False
        try:
            self._sock.send(message.encode())
        except OSError as exc:
            self._failed += 1
            now = time.monotonic()
            if now - self._last_log >= LOG_EVERY_S:
                log.warning("sd_notify_failed", error=str(exc), failures=self._failed)
                self._failed, self._last_log = 0, now
            return False
        return True

    def start_watchdog(self, alive: Callable[[], bool]) -> asyncio.Task[None] | None:
        """Ping WATCHDOG=1 at half of WatchdogSec while ``alive()`` (the loop runs this)."""
        if self.watchdog_s is None:
            return None
        interval = self.watchdog_s / 2

        async def ping() -> None:
            while True:
                if alive():
                    self.notify("WATCHDOG=1")
                else:
                    log.error("watchdog_withheld", reason="the scheduler is not running")
                await asyncio.sleep(interval)

        return asyncio.get_running_loop().create_task(ping())

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
