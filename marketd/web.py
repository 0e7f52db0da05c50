"""The HTTP API and the status page: a factory plus thin handlers.

Handlers reach the daemon's state through :data:`marketd.daemon.DAEMON`; they read and write
through the store and ask the scheduler for runs; they never call a provider. Every failure
becomes a JSON answer (``{"error", "field"}``), never a traceback. The status page's handlers
live in :mod:`marketd.page`; the whole route table is :func:`create_app`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from marketd import page, web_prices
from marketd.conns import track
from marketd.daemon import DAEMON, Daemon
from marketd.errors import MarketdError, QueueFull, StoreError, ValidationError
from marketd.guard import (
    browser_guard,
    check_json_type,
    check_secret,
    read_body,
    slow_down,
    too_many,
)
from marketd.guard import install as install_guard
from marketd.models import (
    JOB_STATUSES,
    normalize_provider,
    normalize_user_id,
    parse_enqueue_body,
)
from marketd.page_forms import PAGE, PageState
from marketd.proxy import forwarded, public_path, with_base
from marketd.views import enqueue_json, status_view
from marketd.web_prices import int_param, opt

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(daemon: Daemon) -> web.Application:
    """Every route marketd serves, over a daemon built (and hooked up) by :mod:`marketd.app`."""
    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          middlewares=[track, forwarded, browser_guard, _errors])
    app[DAEMON] = daemon
    install_guard(app, daemon.config.server)
    app[PAGE] = PageState()
    app.add_routes(with_base([  # marketd.openapi describes every one of them
        # the JSON API
        web.post("/enqueue", enqueue),
        web.post("/trigger", trigger),
        web.post("/api/market/scheduler/run", trigger),
        web.post("/reset-failed", reset_failed),
        web.get("/status", status),
        web.get("/jobs", jobs),
        web.get("/prices", web_prices.prices),
        web.get("/prices.csv", web_prices.prices_csv),
        web.get("/prices/history", web_prices.price_history),
        web.get("/healthz", healthz),
        web.get("/openapi.json", openapi),
        # the status page, its sign-in and actions (HTML forms), and Prometheus
        web.get("/", page.index),
        web.post("/signin", page.sign_in),
        web.post("/signout", page.sign_out),
        web.post("/actions/trigger", page.act_trigger),
        web.post("/actions/reset-failed", page.act_reset_failed),
        web.post("/actions/refresh", page.act_refresh),
        web.get("/metrics", page.metrics),
    ], daemon.config.server.base_path))
    return app


def error(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (request.content_length or 0) > MAX_BODY_BYTES:  # refuse before reading a byte of it
        return error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return await handler(request)
    except ValidationError as exc:
        return error(400, exc.message, exc.field)
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            resp = error(exc.status, exc.reason)
            if "Allow" in exc.headers:  # 405 must say which methods are allowed
                resp.headers["Allow"] = exc.headers["Allow"]
            return resp
        raise
    except QueueFull as exc:
        log.warning("queue_full", path=request.path, error=str(exc))
        resp = error(503, str(exc))
        resp.headers["Retry-After"] = str(exc.retry_after_s)
        return resp
    except StoreError as exc:
        log.error("store_error", path=request.path, error=str(exc))
        return error(503, "the database is unavailable; try again shortly")
    except MarketdError as exc:
        log.error("request_failed", path=request.path, error=str(exc))
        return error(500, "internal error; see the daemon's log")
    except Exception:
        log.exception("request_crashed", path=request.path)
        return error(500, "internal error; see the daemon's log")


def _secret_ok(request: web.Request, given: str | None, expected: str, what: str) -> bool:
    """Whether ``given`` is the secret; a client that guessed wrong too often waits (429)."""
    if expected and (wait := too_many(request)):
        raise slow_down(wait)
    return check_secret(request, given, expected, what)


def require_cron_secret(request: web.Request) -> None:
    expected = request.app[DAEMON].config.security.cron_secret
    if not _secret_ok(request, request.headers.get("x-cron-secret"), expected, "cron_secret"):
        raise _unauthorized("missing or wrong x-cron-secret header")


def _unauthorized(message: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(text=json.dumps({"error": message, "field": None}),
                                content_type="application/json")


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    raw = await read_body(request)
    check_json_type(request, raw)
    if not raw.strip():
        if optional:
            return {}
        raise ValidationError("the body is empty: send a JSON object", None)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("the body is not valid JSON", None) from None


async def enqueue(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    token = daemon.config.security.api_token
    if token:
        scheme, _, given_token = request.headers.get("Authorization", "").partition(" ")
        given = given_token.strip() if scheme.lower() == "bearer" else None
        if not _secret_ok(request, given, token, "api_token"):
            raise _unauthorized("missing or wrong Authorization: Bearer token")
    specs = parse_enqueue_body(await read_json(request))
    results = await daemon.enqueue(specs)
    return web.json_response(text=enqueue_json(results), status=202)


async def trigger(request: web.Request) -> web.Response:
    require_cron_secret(request)
    check_json_type(request, await read_body(request))  # no body, or JSON: never a form
    summary = await request.app[DAEMON].scheduler.run_once("http")
    return web.json_response(summary.as_dict())


async def reset_failed(request: web.Request) -> web.Response:
    require_cron_secret(request)
    body = await read_json(request, optional=True)
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", None)
    provider = body.get("provider")
    if provider is not None:
        provider = normalize_provider(provider)
    n = await request.app[DAEMON].reset_failed(provider)
    return web.json_response({"reset": n, "provider": provider})


async def status(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    this = daemon.instance.id if daemon.instance is not None else None
    return web.json_response(await status_view(daemon.store, daemon.lanes, daemon.clock.now(),
                                               this, await daemon.job_counts()))


async def jobs(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    status_ = opt(request, "status")
    if status_ is not None and status_ not in JOB_STATUSES:
        raise ValidationError(f"status must be one of {', '.join(JOB_STATUSES)}", "status")
    provider = opt(request, "provider")
    if provider is not None:
        provider = normalize_provider(provider)
    limit = int_param(request, "limit", 100, 1, 1000)
    offset = int_param(request, "offset", 0, 0, 10_000_000)
    user_id = opt(request, "user_id")
    rows = await daemon.store.list_jobs(
        status=status_, provider=provider, limit=limit + 1, offset=offset,
        user_id=normalize_user_id(user_id) if user_id is not None else None)
    # one row past the page says whether another follows: nothing is cut silently
    next_offset = offset + limit if len(rows) > limit else None
    nxt = None
    if next_offset is not None:
        query = [(k, v) for k, v in request.query.items() if k != "offset"]
        nxt = public_path(request, str(request.rel_url.with_query(
            [*query, ("offset", str(next_offset))])))
    return web.json_response({"jobs": [j.as_dict() for j in rows[:limit]],
                              "next_offset": next_offset, "next": nxt})


async def openapi(request: web.Request) -> web.Response:
    from marketd.openapi import openapi_spec

    return web.json_response(openapi_spec())


async def healthz(request: web.Request) -> web.Response:
    """200 while the database answers (on a reader of its own, never behind the page's) and
    takes writes, and the scheduler runs; otherwise 503 with ``reason``."""
    daemon = request.app[DAEMON]
    try:
        db_ok = await asyncio.wait_for(daemon.store.ping(), HEALTH_TIMEOUT_S)
    except TimeoutError:
        db_ok = False
    refused = daemon.store.write_problem()
    sched_ok = daemon.scheduler.alive()
    reasons = [r for ok, r in ((db_ok, "the database does not answer"),
                               (refused is None, f"the database refuses writes: {refused}"),
                               (sched_ok, "the scheduler is not running")) if not ok]
    body: dict[str, Any] = {"ok": not reasons, "database": db_ok, "writable": refused is None,
                            "scheduler": sched_ok}
    if reasons:
        body["reason"] = "; ".join(reasons)
    return web.json_response(body, status=200 if body["ok"] else 503)


HEALTH_TIMEOUT_S = 2.0


__all__ = ["DAEMON", "create_app"]
