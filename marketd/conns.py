"""The daemon's connections: how many, how long, and what happens when there are too many.

aiohttp alone keeps an idle socket for an hour and has no cap and no header timeout, so a
thousand idle or slow clients took every file descriptor and the API with them.
:class:`ConnectionGuard` watches every connection the HTTP server accepts (TCP and the Unix
socket alike):

- a connection that has not finished a request's headers within ``header_timeout_seconds`` of
  opening, or is idle ``keepalive_seconds`` after its last answer, is closed (a sweep a second);
- at most :func:`connection_cap` connections are open, well below the open-file limit: a new
  one beyond it sheds the oldest idle ones, so new clients (``/healthz`` above all) still get
  in; if every connection is busy, the new one is closed at once;
- shed and refused connections are logged once per interval with a count.

:class:`AcceptErrors` does the same for asyncio's "socket.accept() out of system resource",
which otherwise logs once per attempt (thousands a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from marketd.config import ServerConfig

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FD_RESERVE = 128  # descriptors kept for the database, provider calls, logs, the notify socket
DEFAULT_MAX_CONNECTIONS = 1024
LOG_EVERY_S = 10.0
SWEEP_EVERY_S = 1.0
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def raise_fd_limit() -> tuple[int, int]:
    """Lift the soft open-file limit to the hard one (as systemd's LimitNOFILE allows);
    returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft, hard


def connection_cap(configured: int) -> int:
    """``configured`` (0: a default), never closer than FD_RESERVE to the open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = DEFAULT_MAX_CONNECTIONS * 64 if soft == resource.RLIM_INFINITY else \
        max(8, soft - FD_RESERVE)
    return min(configured or DEFAULT_MAX_CONNECTIONS, room)


@dataclass
class _Conn:
    transport: Any
    idle_since: float
    served: int = 0
    busy: bool = False


class ConnectionGuard:
    """Tracks the HTTP server's connections; sheds, times out and counts them."""

    def __init__(self, cfg: ServerConfig, *, every_s: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = connection_cap(cfg.max_connections)
        self.every_s = every_s
        self.clock = clock  # when to log again (and how long a connection was idle)
        self.header_timeout = cfg.header_timeout_seconds
        self.keepalive = cfg.keepalive_seconds
        self.conns: dict[RequestHandler, _Conn] = {}  # oldest first
        self.shed = self.refused = self.timed_out = 0
        self._logged = [0, 0, 0]
        self._last_log = -math.inf  # the first shed is logged at once, whatever the uptime
        self._task: asyncio.Task[None] | None = None

    def attach(self, server: web.Server) -> None:
        """Hook the server's connection callbacks (every site of one runner shares them)."""
        made, lost = server.connection_made, server.connection_lost

        def on_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._made(handler, transport)

        def on_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self.conns.pop(handler, None)
            lost(handler, exc)

        server.connection_made = on_made  # type: ignore[method-assign]
        server.connection_lost = on_lost  # type: ignore[method-assign]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        now = self.clock()
        if len(self.conns) >= self.cap:
            excess = len(self.conns) - self.cap + 1
            for old, c in list(self.conns.items()):
                if excess <= 0:
                    break
                if not c.busy:
                    self._close(old, c)
                    self.shed += 1
                    excess -= 1
            if excess > 0:  # every connection is busy: this one waits for none
                transport.close()
                self.refused += 1
                self._log_counts(now)
                return
            self._log_counts(now)
        self.conns[handler] = _Conn(transport, now)

    def _close(self, handler: RequestHandler, c: _Conn) -> None:
        self.conns.pop(handler, None)
        try:
            handler.force_close()
        finally:
            c.transport.abort()  # the descriptor is free now, not after a FIN exchange

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            now = self.clock()
            for handler, c in list(self.conns.items()):
                limit = self.keepalive if c.served else self.header_timeout
                if not c.busy and now - c.idle_since > limit:
                    self._close(handler, c)
                    self.timed_out += 1
            self._log_counts(now)

    def _log_counts(self, now: float) -> None:
        counts = [self.shed, self.refused, self.timed_out]
        if counts == self._logged or now - self._last_log < self.every_s:
            return
        shed, refused, timed_out = (a - b for a, b in zip(counts, self._logged, strict=True))
        self._logged, self._last_log = counts, now
        if shed or refused:
            log.warning("connections_shed", shed=shed, refused=refused, open=len(self.conns),
                        cap=self.cap, hint="many idle clients; raise server.max_connections "
                        "and LimitNOFILE if they are yours")
        if timed_out:
            log.info("connections_timed_out", closed=timed_out, open=len(self.conns))

    # ---- the request side ----------------------------------------------------------------------

    async def around(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A connection is busy while a handler runs on it (never shed then)."""
        c = self.conns.get(request.protocol)
        if c is None:
            return await handler(request)
        c.busy = True
        try:
            return await handler(request)
        finally:
            c.busy = False
            c.served += 1
            c.idle_since = self.clock()


GUARD: web.AppKey[ConnectionGuard] = web.AppKey("connections", ConnectionGuard)


@web.middleware
async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Middleware: tell the app's connection guard (when it has one) a request is running."""
    guard = request.app.get(GUARD)
    if guard is None:
        return await handler(request)
    return await guard.around(request, handler)


class AcceptErrors:
    """A loop exception handler that turns accept() failures into one line per interval."""

    def __init__(self, loop: asyncio.AbstractEventLoop, every_s: float = LOG_EVERY_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.loop = loop
        self.every_s = every_s
        self.clock = clock
        self.count = 0
        self.total = 0
        self._last = -math.inf  # the first failure is logged at once, whatever the uptime
        self._previous = loop.get_exception_handler()

    def install(self) -> None:
        self.loop.set_exception_handler(self)

    def uninstall(self) -> None:
        self.loop.set_exception_handler(self._previous)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", ""))
        if "accept" in message and ((isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS)
                                    or "out of system resource" in message):
            self.count += 1
            self.total += 1
            now = self.clock()
            if now - self._last >= self.every_s:
                log.error("accept_failing", errors=self.count, error=str(exc or message),
                          hint="out of file descriptors: raise LimitNOFILE or lower "
                               "server.max_connections")
                self.count, self._last = 0, now
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)
