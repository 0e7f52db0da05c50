"""Behind a reverse proxy (nginx terminating TLS): a request from one of
``server.trusted_proxies`` is taken at its ``X-Forwarded-Proto`` (so ``request.secure`` holds
and the page's session cookie is ``Secure``) and ``X-Forwarded-For`` (the client's address
in logs). From anyone else those headers are ignored: a client cannot claim to be HTTPS.

Under a sub-path (``server.base_path = "/marketd"``) every route answers both with the prefix
(a proxy that passes the path on) and without it (one that strips it, and local tools), and
what marketd sends a client (links, redirects, the cookie's path) carries the prefix:
:func:`public_path`."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from typing import Any

from aiohttp import web

from marketd.daemon import DAEMON

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def base_path(request: web.Request) -> str:
    return request.app[DAEMON].config.server.base_path


def public_path(request: web.Request, path: str) -> str:
    """``path`` (one of marketd's routes, with its query) as a client behind the proxy
    reaches it: under ``server.base_path`` unless it already is."""
    base = base_path(request)
    if not base or path == base or path.startswith(base + "/"):
        return path
    return base + path


def with_base(routes: Sequence[web.RouteDef], base: str) -> list[web.RouteDef]:
    """``routes``, and when ``base`` is set the same routes again under it (``base`` alone
    redirects to ``base/``)."""
    if not base:
        return list(routes)
    under = [web.RouteDef(r.method, base + r.path, r.handler, r.kwargs) for r in routes]

    async def to_page(request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(base + "/")

    return [*routes, *under, web.get(base, to_page)]


@cache
def _networks(trusted: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(t, strict=False) for t in trusted)


def is_trusted(remote: str | None, trusted: Sequence[str]) -> bool:
    if not remote or not trusted:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    return any(address in net for net in _networks(tuple(trusted)))


@web.middleware
async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    trusted = request.app[DAEMON].config.server.trusted_proxies
    if trusted and is_trusted(request.remote, trusted):
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        # one clone: a clone of a clone forgets the first one's scheme
        scheme = proto if proto in ("http", "https") else request.scheme
        remote = hops[-1] or request.remote or ""  # the last hop: what the proxy itself saw
        request = request.clone(scheme=scheme, remote=remote)
    return await handler(request)
