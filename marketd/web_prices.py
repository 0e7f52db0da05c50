"""The prices going out over HTTP: ``GET /prices`` and ``GET /prices/history``.

Thin handlers over the store, like :mod:`marketd.web`'s (whose route table names them); bad
input is a :class:`ValidationError` (400 ``{"error", "field"}``)."""

from __future__ import annotations

import re
from datetime import datetime

from aiohttp import web

from marketd.clock import parse_iso
from marketd.daemon import DAEMON
from marketd.errors import ValidationError
from marketd.models import (
    normalize_provider,
    normalize_size,
    normalize_size_system,
    normalize_sku,
    size_key,
)
from marketd.views import history_view


def opt(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    return value if value not in (None, "") else None


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,12}", raw) or not lo <= int(raw) <= hi:
        raise ValidationError(f"{name} must be an integer from {lo} to {hi}", name)
    return int(raw)


def size_param(request: web.Request) -> str | None:
    """The ``size`` (with ``size_system``) as the stored size key, or None."""
    size = opt(request, "size")
    if size is None:
        return None
    system = normalize_size_system(opt(request, "size_system"))
    return size_key(normalize_size(size), system)


def time_param(request: web.Request, name: str) -> float | None:
    raw = opt(request, name)
    if raw is None:
        return None
    try:
        value = parse_iso(raw)
        if value is None or datetime.fromisoformat(raw.replace("Z", "+00:00")).tzinfo is None:
            raise ValueError(raw)
    except (ValueError, OverflowError, OSError):
        raise ValidationError(f"{name} must be an ISO-8601 time with a zone, e.g. "
                              "2026-12-01T00:00:00Z", name) from None
    return value


async def price_history(request: web.Request) -> web.Response:
    """One key's history, oldest first: a point per change of its price."""
    raw_provider, raw_sku = opt(request, "provider"), opt(request, "sku")
    if raw_provider is None:
        raise ValidationError("provider is required", "provider")
    if raw_sku is None:
        raise ValidationError("sku is required", "sku")
    provider, sku = normalize_provider(raw_provider), normalize_sku(raw_sku)
    size = size_param(request)
    since = time_param(request, "since")
    rows = await request.app[DAEMON].store.price_history(provider, sku, size, since=since)
    return web.json_response({"provider": provider, "sku": sku, "size": size,
                              "history": [history_view(r) for r in rows]})
