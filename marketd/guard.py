"""What keeps a browser (or a web page it shows) from driving the API, and guessing from paying.

- ``Host`` must be one of ``server.allowed_hosts`` (by default the loopback names and the bound
  host): anything else is a DNS-rebinding page and gets 421.
- A state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` is not this server, or
  whose ``Sec-Fetch-Site`` is ``cross-site``, gets 403: a page elsewhere cannot post here.
- JSON endpoints want ``Content-Type: application/json`` for any body they read, and never
  take a form or ``text/plain`` type even empty (415): the kinds of request a page may send
  cross-origin without asking change nothing (:func:`check_json_type`, before any change).
- :class:`Throttle`: after a few wrong secrets (cron secret, API token, page sign-in) a client
  waits, doubling each time, before its next guess is even looked at (429 + Retry-After).
- Bodies are read within ``server.body_timeout_seconds`` (408) and forms whose bytes or charset
  do not decode are a 400, never a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp.web_response
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from marketd.config import LOOPBACK_NAMES, ServerConfig
from marketd.daemon import DAEMON

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SERVER_NAME = "marketd"  # the Server header: no versions
FREE_FAILURES = 5  # wrong secrets a client may send before it must wait
MAX_WAIT_S = 60.0
MAX_CLIENTS = 10_000


def allowed_hosts(server: ServerConfig) -> frozenset[str]:
    """The Host names the daemon answers to ("*" in the set: any)."""
    if server.allowed_hosts:
        return frozenset(h.strip("[]").lower() for h in server.allowed_hosts)
    names = {n.strip("[]") for n in LOOPBACK_NAMES}
    host = server.host.strip("[]").lower()
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - every address: this machine's name too
        names.add(socket.gethostname().lower())
    elif host:
        names.add(host)
    return frozenset(names)


def _host_name(value: str) -> str:
    """``example.com:8787`` -> ``example.com``; ``[::1]:80`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value


def _refuse(request: web.Request, status: int, message: str) -> web.Response:
    log.warning("request_refused", status=status, path=request.path, remote=request.remote,
                reason=message)
    return web.json_response({"error": message, "field": None}, status=status)


def _origin_ok(request: web.Request, hosts: frozenset[str]) -> bool:
    site = request.headers.get("Sec-Fetch-Site", "").lower()
    if site == "cross-site":
        return False
    if site == "same-origin":
        # set by the browser itself (no page can forge it); the page's own forms send
        # "Origin: null" under its Referrer-Policy: no-referrer
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
        name = (parts.hostname or "").lower()
        netloc = parts.netloc.lower()
    except ValueError:
        return False
    if not name or parts.scheme not in ("http", "https"):
        return False  # "null" (a sandboxed or file: page) and the like
    if netloc == request.headers.get("Host", "").strip().lower():
        return True
    return "*" in hosts or name in hosts


# what a page may send cross-origin without a preflight (the CORS-safelisted types)
SIMPLE_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data",
                          "text/plain"})


def check_json_type(request: web.Request, body: bytes) -> None:
    """415 unless the body (if any) is declared JSON; a browser's simple type never passes."""
    ctype = request.content_type if "Content-Type" in request.headers else ""
    is_json = ctype == "application/json" or ctype.endswith("+json")
    if ctype in SIMPLE_TYPES or (body.strip() and not is_json):
        log.warning("request_refused", status=415, path=request.path, remote=request.remote,
                    content_type=ctype)
        raise web.HTTPUnsupportedMediaType(
            text=json.dumps({"error": "send the body as Content-Type: application/json",
                             "field": None}), content_type="application/json")


@web.middleware
async def browser_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host (421), foreign Origin on state changes (403)."""
    hosts = request.app[HOSTS]
    given = request.headers.get("Host")
    if given is not None and "*" not in hosts and _host_name(given) not in hosts:
        return _refuse(request, 421, "this Host is not one marketd answers to: add it to "
                       "server.allowed_hosts")
    if request.method in UNSAFE and not _origin_ok(request, hosts):
        return _refuse(request, 403, "cross-origin requests may not change anything")
    return await handler(request)


async def hide_server_version(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the Server header names no version."""
    response.headers["Server"] = SERVER_NAME


# ---- bodies ------------------------------------------------------------------------------------


def _body_timeout(request: web.Request) -> float:
    return request.app[DAEMON].config.server.body_timeout_seconds


async def read_body(request: web.Request) -> bytes:
    """The request's body, within the body timeout (408 otherwise)."""
    if request.content.is_eof():  # all of it arrived with the headers: nothing to wait for
        return await request.read()
    try:
        async with asyncio.timeout(_body_timeout(request)):
            return await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=json.dumps({"error": "the body did not arrive in time", "field": None}),
            content_type="application/json") from None


async def read_form(request: web.Request) -> MultiDictProxy[Any] | None:
    """The posted form, or None when its bytes or charset do not decode (the caller answers
    400); within the body timeout."""
    try:
        async with asyncio.timeout(_body_timeout(request)):
            return await request.post()
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the form did not arrive in time") from None
    except (UnicodeError, LookupError, ValueError):
        return None


def secret_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison that survives any bytes a header or form carried."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


# ---- guessing ----------------------------------------------------------------------------------


@dataclass
class Throttle:
    """Per client: wrong secrets in a row, and when the next guess is looked at."""

    failures: dict[str, tuple[int, float]] = field(default_factory=dict)

    def wait_s(self, client: str, now: float) -> float:
        n, until = self.failures.get(client, (0, 0.0))
        return max(0.0, until - now) if n > FREE_FAILURES else 0.0

    def failed(self, client: str, now: float, what: str) -> None:
        n = self.failures.get(client, (0, 0.0))[0] + 1
        wait = min(MAX_WAIT_S, 0.5 * 2 ** (n - FREE_FAILURES - 1)) if n > FREE_FAILURES else 0
        if len(self.failures) >= MAX_CLIENTS and client not in self.failures:
            oldest = min(self.failures, key=lambda c: self.failures[c][1])
            self.failures.pop(oldest)
        self.failures[client] = (n, now + wait)
        log.warning("secret_refused", what=what, remote=client, failures=n,
                    next_try_in_s=round(wait, 2))

    def succeeded(self, client: str) -> None:
        self.failures.pop(client, None)


HOSTS: web.AppKey[frozenset[str]] = web.AppKey("hosts", frozenset)
THROTTLE: web.AppKey[Throttle] = web.AppKey("throttle", Throttle)


def client_of(request: web.Request) -> str:
    return request.remote or "unknown"


def too_many(request: web.Request) -> float:
    """Seconds this client must still wait before a secret it sends is checked (0: none)."""
    return request.app[THROTTLE].wait_s(client_of(request), request.app[DAEMON].clock.now())


def check_secret(request: web.Request, given: str | None, expected: str, what: str) -> bool:
    """Whether ``given`` is the secret; counts a wrong one against the client (a missing one
    is not a guess). The caller answers 429 first when :func:`too_many` says so."""
    if not expected:
        return True  # no secret configured: the daemon only listens on loopback
    throttle, client = request.app[THROTTLE], client_of(request)
    if secret_matches(given, expected):
        throttle.succeeded(client)
        return True
    if given:
        throttle.failed(client, request.app[DAEMON].clock.now(), what)
    return False


def slow_down(wait_s: float) -> web.HTTPTooManyRequests:
    return web.HTTPTooManyRequests(
        text=json.dumps({"error": f"too many wrong secrets from this client: try again in "
                                  f"{math.ceil(wait_s)} s", "field": None}),
        content_type="application/json", headers={"Retry-After": str(math.ceil(wait_s))})


def install(app: web.Application, server: ServerConfig) -> None:
    app[HOSTS] = allowed_hosts(server)
    app[THROTTLE] = Throttle()
    app.on_response_prepare.append(hide_server_version)
    # answers aiohttp writes itself (a request line it cannot parse) name no version either
    setattr(aiohttp.web_response, "SERVER_SOFTWARE", SERVER_NAME)  # noqa: B010
