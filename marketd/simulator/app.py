"""One aiohttp app serving the StockX, Alias and eBay simulators side by side, and its runner.

Every API request goes through one middleware, in this order: counted at arrival; delayed
(latency, jitter, the odd slow answer); then answered with a forced status if a test queued one,
429 if it broke a limit, the provider's usual 5xx by chance, 401/403 if its credentials are
wrong, and otherwise by the endpoint. OAuth token requests skip the counting and faults.

Simulator-only endpoints (not part of any provider API):

- ``GET /_sim/stats``: counters per provider (see :meth:`SimState.stats`)
- ``POST /_sim/force`` ``{"provider": "stockx", "status": 503, "count": 2}``: the next answers
- ``GET /_sim/catalog``: the SKUs, ids and sizes the simulator knows
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from http.client import responses
from typing import Any

import structlog
from aiohttp import web

from marketd.clock import Clock
from marketd.simulator import alias, ebay, stockx
from marketd.simulator.options import ProviderOptions, SimulatorOptions
from marketd.simulator.state import SIM_STATE, ApiError, ProviderSpec, SimState

log = structlog.get_logger("marketd.simulator")

SPECS: tuple[ProviderSpec, ...] = (stockx.SPEC, alias.SPEC, ebay.SPEC)
Handler = Callable[[web.Request], Any]


def _spec_for(path: str) -> ProviderSpec | None:
    for spec in SPECS:
        if path == spec.oauth_path or path.startswith(spec.prefixes):
            return spec
    return None


async def _delay(rng: random.Random, opts: ProviderOptions) -> None:
    delay_ms = opts.latency_ms + (rng.uniform(0, opts.jitter_ms) if opts.jitter_ms else 0.0)
    if opts.slow_rate and rng.random() < opts.slow_rate:
        delay_ms += opts.slow_ms
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)


def _forced(spec: ProviderSpec, status: int) -> ApiError:
    if status == 429:
        return spec.rate_limited()
    usual = spec.fault()
    if status == usual.status:
        return usual
    return ApiError(status, responses.get(status, "Error"))


async def _answer_api(request: web.Request, handler: Handler, spec: ProviderSpec,
                      state: SimState) -> web.StreamResponse:
    meter = state.meters[spec.name]
    opts = state.options.provider(spec.name)
    retry_after_s = meter.arrive(state.clock.now())
    await _delay(state.rng, opts)
    forced = state.take_forced(spec.name)
    try:
        if forced is not None:
            meter.forced += 1
            raise _forced(spec, forced)
        if retry_after_s is not None:
            raise spec.rate_limited()
        if opts.fault_rate and state.rng.random() < opts.fault_rate:
            meter.faults += 1
            raise spec.fault()
        spec.authenticate(request, state)
        response: web.StreamResponse = await handler(request)
    except ApiError as err:
        if err.status == 429 and opts.retry_after:
            err.headers.setdefault("Retry-After", str(retry_after_s or 1))
        response = spec.render_error(err)
    except web.HTTPException as exc:  # no such route or method
        response = spec.render_error(ApiError(exc.status, exc.reason))
    except Exception:
        log.exception("simulator_handler_failed", provider=spec.name, path=request.path)
        response = spec.render_error(ApiError(500, "Internal Server Error"))
    meter.answered(response.status)
    return response


@web.middleware
async def _simulate(request: web.Request, handler: Handler) -> web.StreamResponse:
    spec = _spec_for(request.path)
    if spec is None:
        result: web.StreamResponse = await handler(request)
        return result
    state = request.app[SIM_STATE]
    if request.path == spec.oauth_path:
        state.meters[spec.name].token_requests += 1
        await _delay(state.rng, state.options.provider(spec.name))
        try:
            token_response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            return spec.render_error(ApiError(exc.status, exc.reason))
        return token_response
    response = await _answer_api(request, handler, spec, state)
    if spec.name == "alias":
        response.headers["x-request-id"] = str(uuid.uuid4())
    return response


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_STATE].stats())


async def _force(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    try:
        body = await request.json()
        state.force(str(body["provider"]), int(body["status"]), int(body.get("count", 1)))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return web.json_response({"error": f"want {{provider, status, count}}: {exc}"},
                                 status=400)
    return web.json_response({"forced": state.forced})


async def _catalog(request: web.Request) -> web.Response:
    products = request.app[SIM_STATE].catalog.products
    return web.json_response({"products": [
        {"sku": p.sku, "title": p.title, "brand": p.brand, "has_market": p.has_market,
         "stockx_product_id": p.id, "alias_catalog_id": p.catalog_id,
         "sizes": [{"value": v.size.value, "us_m": v.size.us_m, "uk": v.size.uk,
                    "eu": v.size.eu} for v in p.variants]}
        for p in products
    ]})


def create_simulator_app(options: SimulatorOptions | None = None,
                         clock: Clock | None = None) -> web.Application:
    """All three provider APIs on one app; state at ``app[SIM_STATE]``."""
    app = web.Application(middlewares=[_simulate])
    app[SIM_STATE] = SimState(options or SimulatorOptions(), clock or Clock())
    for spec in SPECS:
        app.router.add_routes(spec.routes)
    app.router.add_get("/_sim/stats", _stats)
    app.router.add_post("/_sim/force", _force)
    app.router.add_get("/_sim/catalog", _catalog)
    return app


async def run_simulator(host: str, port: int, options: SimulatorOptions, *,
                        clock: Clock | None = None,
                        on_started: Callable[[str], object] | None = None) -> None:
    """Serve the simulator until cancelled.

    ``on_started`` receives the base URL once the socket listens (useful with ``port=0``).
    """
    runner = web.AppRunner(create_simulator_app(options, clock), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        log.info("simulator_started", host=host, port=bound)
        if on_started is not None:
            on_started(f"http://{host}:{bound}")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
