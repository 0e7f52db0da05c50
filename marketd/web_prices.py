"""The prices going out over HTTP: ``GET /prices`` (JSON, paged with a cursor),
``GET /prices.csv`` (the same rows as CSV, every one of them unless a ``limit`` asks for a
page) and ``GET /prices/history``.

Thin handlers over the store, like :mod:`marketd.web`'s (whose route table names them); bad
input is a :class:`ValidationError` (400 ``{"error", "field"}``)."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from marketd.clock import parse_iso
from marketd.daemon import DAEMON
from marketd.errors import ValidationError
from marketd.models import (
    normalize_provider,
    normalize_size,
    normalize_size_system,
    normalize_sku,
    normalize_user_id,
    size_key,
)
from marketd.portfolio import FIELDS, Fx, fx_of, fx_view
from marketd.proxy import public_path
from marketd.store import Store
from marketd.views import history_view, price_view

MAX_SKUS = 1000
PAGE = 1000
MAX_LIMIT = 10_000
CSV_COLUMNS = ("provider", "sku", "size", "currency", "lowest_ask", "highest_bid",
               "last_sale", "fetched_at", "title", "brand", "colourway", "image_url")
# the providers' other amounts, columns after the catalog's (empty where a provider has none)
CSV_EXTRA = ("flex_lowest_ask", "earn_more", "sell_faster")
# with [fx] rates: the amounts in the home currency, and whether a rate converted them
CSV_FX = ("fx_currency", "fx_lowest_ask", "fx_highest_bid", "fx_last_sale", "fx_converted")


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


# ---- GET /prices and /prices.csv -------------------------------------------------------------


@dataclass(frozen=True)
class PriceQuery:
    """The filters /prices and /prices.csv share, and where a page starts."""

    provider: str | None
    skus: list[str] | None
    size: str | None
    user_id: str | None
    after: tuple[str, str, str] | None

    async def page(self, store: Store, limit: int,
                   after: tuple[str, str, str] | None) -> list[dict[str, Any]]:
        return await store.list_prices(provider=self.provider, skus=self.skus, size=self.size,
                                       user_id=self.user_id, after=after, limit=limit)


def encode_key(values: Sequence[str]) -> str:
    """A key (strings) as an opaque URL-safe cursor: /prices' next_cursor, the page's."""
    raw = json.dumps(list(values)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_key(text: str, n: int) -> tuple[str, ...] | None:
    """The ``n`` strings :func:`encode_key` wrote, or None for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        return None
    if (not isinstance(value, list) or len(value) != n
            or not all(isinstance(v, str) and len(v) <= 128 for v in value)):
        return None
    return tuple(value)


def encode_cursor(row: dict[str, Any]) -> str:
    return encode_key([row["sku"], row["provider"], row["size"] or ""])


def decode_cursor(text: str) -> tuple[str, str, str]:
    value = decode_key(text, 3)
    if value is None:
        raise ValidationError("cursor is not one marketd gave (next_cursor of a /prices page)",
                              "cursor")
    return value[0], value[1], value[2]


def price_query(request: web.Request) -> PriceQuery:
    provider = opt(request, "provider")
    raw_skus = [s for s in request.query.getall("sku", []) if s != ""]
    if len(raw_skus) > MAX_SKUS:
        raise ValidationError(f"at most {MAX_SKUS} sku parameters", "sku")
    skus = sorted({normalize_sku(s) for s in raw_skus}) if raw_skus else None
    user_id = opt(request, "user_id")
    cursor = opt(request, "cursor")
    return PriceQuery(
        provider=normalize_provider(provider) if provider is not None else None,
        skus=skus, size=size_param(request),
        user_id=normalize_user_id(user_id) if user_id is not None else None,
        after=decode_cursor(cursor) if cursor is not None else None)


def _next_link(request: web.Request, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    query = [(k, v) for k, v in request.query.items() if k != "cursor"] + [("cursor", cursor)]
    return public_path(request, str(request.rel_url.with_query(query)))


def export_view(row: dict[str, Any], fx: Fx | None) -> dict[str, Any]:
    """/prices' row: with ``[fx]`` rates, ``fx`` holds the amounts converted to the home
    currency (labelled ``converted``); the price itself stays in its own currency."""
    view = price_view(row)
    if fx is not None:
        view["fx"] = fx_view(row, fx)
    return view


async def prices(request: web.Request) -> web.Response:
    """A page of the latest prices: ``next_cursor`` (and ``next``, the same request for the
    next page) are null when this page holds the last row; nothing is cut silently."""
    q = price_query(request)
    limit = int_param(request, "limit", PAGE, 1, MAX_LIMIT)
    daemon = request.app[DAEMON]
    rows = await q.page(daemon.store, limit + 1, q.after)
    cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    fx = fx_of(daemon.config)
    return web.json_response({"prices": [export_view(r, fx) for r in rows[:limit]],
                              "next_cursor": cursor, "next": _next_link(request, cursor)})


# text a provider's catalog (or a user) chose: a spreadsheet must not run it as a formula
CSV_TEXT = frozenset({"sku", "size", "title", "brand", "colourway", "image_url"})
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """A text cell that a spreadsheet would read as a formula, with a leading apostrophe
    (OWASP's advice against CSV injection); any other text as it is."""
    return "'" + value if value.startswith(FORMULA_START) else value


def csv_lines(rows: Sequence[dict[str, Any]], *, header: bool, fx: Fx | None = None) -> str:
    """CSV lines of ``rows``; with ``[fx]`` rates, converted columns last (``fx_*``). Text
    columns never start a formula (:func:`csv_text`)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    if header:
        out.writerow(CSV_COLUMNS + CSV_EXTRA + (CSV_FX if fx is not None else ()))
    for r in rows:
        view = price_view(r)
        line = ["" if view[c] is None else csv_text(view[c]) if c in CSV_TEXT else view[c]
                for c in CSV_COLUMNS]
        line += [view["extra"].get(c) or "" for c in CSV_EXTRA]
        if fx is not None:
            conv = fx_view(r, fx)
            line += [conv["currency"], *(conv[f] or "" for f in FIELDS),
                     "true" if conv["converted"] else "false"]
        out.writerow(line)
    return buf.getvalue()


async def all_pages(q: PriceQuery, store: Store) -> AsyncIterator[list[dict[str, Any]]]:
    """Every row the filters match, a page at a time (each page its own short read)."""
    after = q.after
    while True:
        rows = await q.page(store, PAGE, after)
        if rows:
            yield rows
        if len(rows) < PAGE:
            return
        last = rows[-1]
        after = (last["sku"], last["provider"], last["size"] or "")


async def prices_csv(request: web.Request) -> web.StreamResponse:
    """The rows /prices gives, as CSV: all of them, streamed, unless ``limit`` asks for one
    page (its next page is then in the ``Link: <...>; rel="next"`` header and
    ``X-Next-Cursor``)."""
    q = price_query(request)
    store = request.app[DAEMON].store
    fx = fx_of(request.app[DAEMON].config)
    headers = {"Content-Disposition": 'attachment; filename="prices.csv"'}
    if opt(request, "limit") is not None:
        limit = int_param(request, "limit", PAGE, 1, MAX_LIMIT)
        rows = await q.page(store, limit + 1, q.after)
        cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        if cursor is not None:
            headers["Link"] = f'<{_next_link(request, cursor)}>; rel="next"'
            headers["X-Next-Cursor"] = cursor
        return web.Response(text=csv_lines(rows[:limit], header=True, fx=fx),
                            content_type="text/csv",
                            charset="utf-8", headers=headers)
    resp = web.StreamResponse(headers=headers)
    resp.content_type = "text/csv"
    resp.charset = "utf-8"
    pages = all_pages(q, store)
    # a database error before the first byte is still a 503
    first: list[dict[str, Any]] = await anext(pages, [])
    await resp.prepare(request)
    await resp.write(csv_lines(first, header=True, fx=fx).encode())
    async for rows in pages:
        await resp.write(csv_lines(rows, header=False, fx=fx).encode())
    await resp.write_eof()
    return resp
