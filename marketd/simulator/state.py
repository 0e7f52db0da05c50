"""The simulator's mutable state: counters, issued tokens, forced answers, the random draws.

Tests reach it as ``app[SIM_STATE]``: ``state.meters["stockx"].requests``,
``state.stats()`` (the body of ``GET /_sim/stats``) and ``state.force("alias", 503, count=2)``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from marketd.clock import Clock, iso
from marketd.simulator.catalog import Catalog, catalog
from marketd.simulator.limits import ProviderMeter
from marketd.simulator.options import PROVIDERS, SimulatorOptions


class ApiError(Exception):
    """An answer other than success; each provider renders it in its own error shape.

    ``code`` is the provider's own error number where it has one (Alias gRPC code, eBay
    errorId); ``key`` picks StockX's message key (``errorMessage`` or ``message``).
    """

    def __init__(self, status: int, message: str, *, code: int | None = None,
                 headers: Mapping[str, str] | None = None, key: str = "errorMessage") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.key = key


def _pacific() -> tzinfo:
    try:
        return ZoneInfo("America/Los_Angeles")
    except ZoneInfoNotFoundError:  # no tz database: Pacific standard time all year
        return timezone(timedelta(hours=-8))


DAILY_RESET_TZ: dict[str, tzinfo] = {"stockx": UTC, "alias": UTC, "ebay": _pacific()}
TOKEN_TTL_S = {"stockx": 43_200, "ebay": 7_200}


@dataclass
class SimState:
    options: SimulatorOptions
    clock: Clock
    catalog: Catalog = field(default_factory=catalog)
    meters: dict[str, ProviderMeter] = field(default_factory=dict)
    tokens: dict[str, dict[str, float]] = field(default_factory=dict)  # provider -> token -> exp
    forced: dict[str, list[int]] = field(default_factory=dict)  # provider -> statuses to answer
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.options.seed)
        for name in PROVIDERS:
            opts = self.options.provider(name)
            self.meters[name] = ProviderMeter(opts.parsed_limits(), opts.daily_limit,
                                              DAILY_RESET_TZ[name])
            self.tokens[name] = {}
            self.forced[name] = []

    def force(self, provider: str, status: int, count: int = 1) -> None:
        """Answer the next ``count`` API requests of ``provider`` with ``status``."""
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}")
        if not 400 <= status <= 599 or count < 0:
            raise ValueError("status must be an HTTP error status (400-599), count not negative")
        self.forced[provider].extend([status] * count)

    def take_forced(self, provider: str) -> int | None:
        queue = self.forced[provider]
        return queue.pop(0) if queue else None

    def issue_token(self, provider: str, prefix: str) -> tuple[str, int]:
        ttl = TOKEN_TTL_S[provider]
        token = f"{prefix}{uuid.uuid4().hex}"
        self.tokens[provider][token] = self.clock.now() + ttl
        return token, ttl

    def token_valid(self, provider: str, token: str) -> bool:
        """A bearer token is good when non-empty and, with strict tokens, issued and unexpired."""
        if not token:
            return False
        if not self.options.strict_tokens:
            return True
        expires_at = self.tokens[provider].get(token)
        return expires_at is not None and self.clock.now() < expires_at

    def stats(self) -> dict[str, Any]:
        """``{"now": ISO, "providers": {name: ProviderMeter.stats()}}``."""
        now = self.clock.now()
        return {"now": iso(now),
                "providers": {name: meter.stats(now) for name, meter in self.meters.items()}}


def bearer(request: web.Request) -> str:
    """The token of an ``Authorization: Bearer …`` header, or ``""``."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def oauth_error(status: int, error: str, description: str) -> web.Response:
    """An OAuth 2 token endpoint's refusal: ``{"error", "error_description"}``."""
    return web.json_response({"error": error, "error_description": description}, status=status)


async def form_of(request: web.Request) -> dict[str, str]:
    """A token request's fields, form-encoded or JSON."""
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except ValueError:
            data = None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}


@dataclass(frozen=True)
class ProviderSpec:
    """One simulated API: its routes and how it words refusals."""

    name: str
    prefixes: tuple[str, ...]  # API paths; requests under them count against the limits
    oauth_path: str | None  # its OAuth endpoint, counted apart
    routes: web.RouteTableDef
    render_error: Callable[[ApiError], web.Response]
    authenticate: Callable[[web.Request, SimState], None]  # raises ApiError
    rate_limited: Callable[[], ApiError]  # its 429
    fault: Callable[[], ApiError]  # its usual 5xx


SIM_STATE = web.AppKey("marketd_simulator_state", SimState)
