"""The status page (``GET /``), its sign-in and actions, and ``GET /metrics``.

Server-rendered with Jinja2 (autoescape on for every template), usable without JavaScript; a
tiny inline script (allowed by a per-response CSP nonce) reloads it every few seconds. Actions
need the cron secret once: sign-in swaps the visitor's random session token for a new one that
the server remembers as signed in (cookie HttpOnly, SameSite=Strict). Every form carries a CSRF
token, an HMAC of the session token under a per-app key. With no cron secret configured the
actions are open, but the CSRF token is still required.

The routes are in :func:`marketd.web.create_app`'s table; the failure-rate alerts and the
/metrics collector belong to the daemon (:mod:`marketd.daemon`), built by :mod:`marketd.app`.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import web

from marketd.charts import budget_chart, history_chart, queue_chart
from marketd.clock import iso, parse_iso
from marketd.daemon import DAEMON
from marketd.errors import ValidationError
from marketd.guard import check_secret, too_many
from marketd.metrics import CONTENT_TYPE_LATEST
from marketd.models import JOB_STATUSES, PROVIDERS, Priority, normalize_provider, parse_job
from marketd.page_forms import (
    COOKIE,
    MAX_SESSIONS,
    PAGE,
    SESSION_TTL_S,
    Form,
    can_act,
    is_signed_in,
    message_page,
    posted,
    redirect_back,
    security_headers,
    session_token,
    templates,
)
from marketd.portfolio import portfolio_rows
from marketd.proxy import base_path, public_path
from marketd.store.records import PAGE_COUNT_CAP, PageCursor
from marketd.views import price_view, status_view
from marketd.web_prices import decode_key, encode_cursor, encode_key
from marketd.worker import Lane

log = structlog.get_logger(__name__)

PAGE_SIZE = 50
PORTFOLIO_KEYS = 100  # (sku, size) rows of a page of the portfolio (then a next link)
PRICES_SHOWN = 100  # prices of a page of "Latest prices" (then a next link)
REFRESH_S = 5
MAX_REFRESH = 500
VIEWS = ("active", "all", *JOB_STATUSES)
_PAGE_RE = re.compile(r"^[0-9]{1,6}$")  # ASCII digits only: '²'.isdigit() is true
MAX_OFFSET_PAGE = 20  # pages reached by OFFSET; beyond, by the next link's keyset cursor
_CURSOR_RE = re.compile(r"^([0-3])~(-?[0-9]{1,6})~([0-9]{1,19})~([0-9T:.+Z-]{10,40})$")


def parse_cursor(raw: str) -> PageCursor | None:
    """``rank~priority~row_id~created_at`` (the next link's ``after``), or None."""
    m = _CURSOR_RE.match(raw)
    if m is None:
        return None
    return PageCursor(int(m[1]), int(m[2]), m[4], int(m[3]))


def cursor_of(row: Mapping[str, Any]) -> str:
    return f"{row['status_rank']}~{row['priority']}~{row['row_id']}~{row['created_at']}"


@posted(action=False)
async def sign_in(request: web.Request, token: str, form: Form) -> web.Response | str:
    daemon, state = request.app[DAEMON], request.app[PAGE]
    secret = daemon.config.security.cron_secret
    if not secret:
        return "No cron secret is configured: the actions are open."
    if wait := too_many(request):
        resp = message_page(request, 429, "Slow down", "Too many wrong secrets from your "
                            f"address: try again in {math.ceil(wait)} s.")
        resp.headers["Retry-After"] = str(math.ceil(wait))
        return resp
    given = form.get("secret")
    if not check_secret(request, given if isinstance(given, str) else "", secret, "sign-in"):
        log.warning("page_sign_in_refused", remote=request.remote)
        return message_page(request, 403, "Sign-in refused", "That is not the cron secret.")
    now = daemon.clock.now()
    state.signed_in = {t: e for t, e in state.signed_in.items() if e > now and t != token}
    while len(state.signed_in) >= MAX_SESSIONS:
        state.signed_in.pop(min(state.signed_in, key=state.signed_in.__getitem__))
    fresh = secrets.token_urlsafe(32)  # a new token on sign-in: no session fixation
    state.signed_in[fresh] = now + SESSION_TTL_S
    log.info("page_signed_in", remote=request.remote)
    return redirect_back(request, fresh, "Signed in.", max_age=SESSION_TTL_S)


@posted(action=False)
async def sign_out(request: web.Request, token: str, form: Form) -> web.Response | str:
    request.app[PAGE].signed_in.pop(token, None)
    return redirect_back(request, secrets.token_urlsafe(32), "Signed out.")


@posted(action=True)
async def act_trigger(request: web.Request, token: str, form: Form) -> str:
    s = (await request.app[DAEMON].scheduler.run_once("page")).as_dict()
    return (f"Scheduler run {s['run_id']}: {s['selected']} selected, {s['succeeded']} "
            f"succeeded, {s['failed']} failed, {s['deferred']} deferred.")


@posted(action=True)
async def act_reset_failed(request: web.Request, token: str, form: Form) -> str:
    raw = form.get("provider")
    try:
        provider = normalize_provider(raw) if raw not in (None, "", "all") else None
    except ValidationError as exc:
        return f"Reset Failed: {exc.message}."
    n = await request.app[DAEMON].reset_failed(provider)
    return f"Reset Failed: {n} job(s) of {provider or 'every provider'} back to pending."


@posted(action=True)
async def act_refresh(request: web.Request, token: str, form: Form) -> str:
    """Re-enqueue the ticked prices (``provider|sku|size key``) at manual priority."""
    specs, bad = [], 0
    for raw in form.getall("price", [])[:MAX_REFRESH]:
        provider, _, rest = str(raw).partition("|")
        sku, _, size = rest.partition("|")
        system = size[:2] if size[:3] in ("US ", "EU ") else "UK"
        try:
            specs.append(parse_job({"provider": provider, "sku": sku,
                                    "size": (size[3:] if system != "UK" else size) or None,
                                    "size_system": system, "priority": int(Priority.MANUAL)}))
        except ValidationError:
            bad += 1
    queued = await request.app[DAEMON].enqueue(specs) if specs else []
    text = f"Refresh: {len(queued)} price(s) queued at manual priority"
    return text + (f"; {bad} ignored as invalid." if bad else ".")


# ---- reading -----------------------------------------------------------------------------------


def why_waiting(job: Mapping[str, Any], lane: Lane | None, now: float) -> str | None:
    """Why a pending job is not running yet, in the order the scheduler checks."""
    if job["status"] != "pending":
        return None
    if lane is None:
        return "its provider is disabled in the configuration"
    if lane.paused(now):
        check = f"; check {lane.credential}" if lane.credential else ""
        return f"provider paused until {iso(lane.paused_until)} ({lane.pause_reason}{check})"
    backoff = parse_iso(job["next_attempt_at"])
    if backoff is not None and backoff > now:
        return f"waiting for its backoff until {iso(backoff)}"
    free = lane.budget.next_free(now)
    if free > now:
        return f"budget spent until {iso(free)}"
    if job["ahead"]:
        more = " or more" if job["ahead"] >= PAGE_COUNT_CAP else ""
        return f"behind {job['ahead']}{more} job(s) of higher priority or older"
    return "first in line: it goes at the next scheduler run"


async def _count_ahead(request: web.Request, rows: list[dict[str, Any]], now: float) -> None:
    """Set ``ahead`` on each pending row. A page is a slice of the queue order, so one count
    per provider suffices: each later row of that provider has the earlier ones' due rows on
    top (per-row counts made deep pages of a large queue cost minutes)."""
    last: dict[str, dict[str, Any]] = {}
    for r in (r for r in rows if r["status"] == "pending"):
        prev = last.get(r["provider"])
        if prev is None:
            r["ahead"] = await request.app[DAEMON].store.pending_ahead(
                provider=r["provider"], priority=r["priority"], created_at=r["created_at"],
                row_id=r["row_id"], now=now)
        else:
            due = (parse_iso(prev["next_attempt_at"]) or now) <= now
            r["ahead"] = prev["ahead"] + int(due)
        last[r["provider"]] = r


async def page_data(request: web.Request, now: float) -> dict[str, Any]:
    daemon, q = request.app[DAEMON], request.query
    store = daemon.store
    data = await status_view(store, daemon.lanes, now,
                             daemon.instance.id if daemon.instance is not None else None,
                             await daemon.job_counts())
    provider = q.get("provider") if q.get("provider") in PROVIDERS else None
    view = q.get("status", "") if q.get("status") in VIEWS else "active"
    page = max(1, int(q["page"])) if _PAGE_RE.match(q.get("page", "")) else 1
    after = parse_cursor(q.get("after", ""))
    if after is None and page > MAX_OFFSET_PAGE:
        page = 1  # deep pages come by keyset (the next link's cursor), never by OFFSET
    total, rows = await store.page_jobs(
        view=view, provider=provider, now=now, limit=PAGE_SIZE + 1, after=after,
        offset=0 if after is not None else (page - 1) * PAGE_SIZE)
    more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
    history = await store.budgets(since=now - 23 * 3600)
    for name, b in data["budgets"].items():
        b["chart"] = budget_chart(name, [r for r in history if r["provider"] == name],
                                  int(b["rate_limit"]), now)
    samples = await store.queue_samples_since(now - 24 * 3600)
    price_rows = await store.list_prices(
        limit=PRICES_SHOWN + 1, after=decode_key(q.get("prices_after", ""), 3))
    prices_next = encode_cursor(price_rows[PRICES_SHOWN - 1]) \
        if len(price_rows) > PRICES_SHOWN else None
    prices = [price_view(r) | {"age_s": now - (parse_iso(r["fetched_at"]) or now),
                               "key": f"{r['provider']}|{r['sku']}|{r['size'] or ''}"}
              for r in price_rows[:PRICES_SHOWN]]
    filters = {k: v for k, v in (("provider", provider), ("status", view)) if v}
    await _count_ahead(request, rows, now)
    item = await _item_history(request, now)
    portfolio, items_next = await _portfolio_page(request, now)
    return data | {
        "job_rows": [r | {"why": why_waiting(r, daemon.lanes.get(r["provider"]), now)}
                     for r in rows],
        "filters": filters, "view": view, "provider": provider, "views": VIEWS,
        "providers": PROVIDERS, "page": page, "total": total,
        "total_text": f"{total} or more" if total >= PAGE_COUNT_CAP else str(total),
        "pages": max(1, -(-total // PAGE_SIZE)) if total < PAGE_COUNT_CAP else None,
        "next_after": cursor_of(rows[-1]) if more and rows else None,
        "prev_page": page - 1 if 1 < page <= MAX_OFFSET_PAGE + 1 else (1 if page > 1 else None),
        "queue_chart": queue_chart(samples, now),
        "prices": prices, "item": item, "portfolio": portfolio,
        # the next page of each list (None: this was the last), and whether this is the first
        "prices_next": prices_next, "prices_paged": "prices_after" in q,
        "items_next": items_next, "items_paged": "items_after" in q,
        "alerts": [a.as_dict(daemon.config.alerts)
                                    for a in daemon.alerts.active.values()]
        + [p.as_dict() for p in daemon.alerts.pauses.values()],
    }


async def _portfolio_page(request: web.Request, now: float) -> tuple[dict[str, Any], str | None]:
    """A page of the portfolio (PORTFOLIO_KEYS keys after the ``items_after`` cursor) and the
    cursor of the next page, None on the last."""
    daemon = request.app[DAEMON]
    after = decode_key(request.query.get("items_after", ""), 2)
    rows = await daemon.store.portfolio_prices(
        limit=PORTFOLIO_KEYS + 1, after=(after[0], after[1]) if after else ("", ""))
    keys = list(dict.fromkeys((r["sku"], r["size"] or "") for r in rows))
    items_next = None
    if len(keys) > PORTFOLIO_KEYS:
        keep = set(keys[:PORTFOLIO_KEYS])
        rows = [r for r in rows if (r["sku"], r["size"] or "") in keep]
        items_next = encode_key(keys[PORTFOLIO_KEYS - 1])
    return portfolio_rows(rows, daemon.config, now), items_next


async def _item_history(request: web.Request, now: float) -> dict[str, Any] | None:
    """The price ``?item=provider|sku|size`` names, with its history chart (None: no item,
    or not a key)."""
    raw = request.query.get("item", "")
    provider, _, rest = raw.partition("|")
    sku, _, size = rest.partition("|")
    if provider not in PROVIDERS or not sku or len(raw) > 100:
        return None
    points = await request.app[DAEMON].store.price_history(provider, sku, size or None)
    return {"key": raw, "points": len(points), "chart": history_chart(raw, points, now)}


async def index(request: web.Request) -> web.Response:
    daemon, state = request.app[DAEMON], request.app[PAGE]
    token = session_token(request)
    fresh = token is None
    token = token or secrets.token_urlsafe(32)
    now = daemon.clock.now()
    data = await page_data(request, now)
    nonce = secrets.token_urlsafe(16)
    html = templates.get_template("status.html").render(
        **data, csrf=state.csrf(token), nonce=nonce, refresh_ms=REFRESH_S * 1000,
        flash=state.flash.pop(token, None), signed_in=is_signed_in(request, token),
        can_act=can_act(request, token), secret_set=bool(daemon.config.security.cron_secret),
        base=base_path(request))
    resp = web.Response(text=html, content_type="text/html", headers=security_headers(nonce))
    if fresh:
        resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict",
                        path=public_path(request, "/"), secure=request.secure)
    return resp


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[DAEMON].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
