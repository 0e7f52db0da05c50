"""The page's forms: sessions, sign-in state, CSRF tokens, security headers, and the
post/redirect/get plumbing every action shares.

Sign-in swaps the visitor's random session token for a new one that the server remembers as
signed in (cookie HttpOnly, SameSite=Strict). Every form carries a CSRF token, an HMAC of the
session token under a per-app key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jinja2
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from marketd.daemon import DAEMON
from marketd.guard import read_form
from marketd.proxy import base_path, public_path

log = structlog.get_logger(__name__)

COOKIE = "marketd_session"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 200
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")

templates = jinja2.Environment(
    loader=jinja2.PackageLoader("marketd", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
)


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                     ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {s % size // subsize}{sub}"
    return f"{s}s"


templates.filters["ago"] = ago


@dataclass
class PageState:
    """One app's sign-in sessions, CSRF key and one-time messages (memory only)."""

    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    signed_in: dict[str, float] = field(default_factory=dict)  # session token -> expiry
    flash: dict[str, str] = field(default_factory=dict)

    def csrf(self, token: str) -> str:
        return hmac.new(self.key, b"csrf:" + token.encode(), hashlib.sha256).hexdigest()


PAGE: web.AppKey[PageState] = web.AppKey("page", PageState)


# ---- sessions ----------------------------------------------------------------------------------


def session_token(request: web.Request) -> str | None:
    value = request.cookies.get(COOKIE)
    return value if value and _TOKEN_RE.match(value) else None


def is_signed_in(request: web.Request, token: str | None) -> bool:
    expiry = request.app[PAGE].signed_in.get(token or "")
    return expiry is not None and expiry > request.app[DAEMON].clock.now()


def can_act(request: web.Request, token: str | None) -> bool:
    return not request.app[DAEMON].config.security.cron_secret or is_signed_in(request, token)


def security_headers(nonce: str = "") -> dict[str, str]:
    src = f"'nonce-{nonce}'" if nonce else "'none'"
    return {"Content-Security-Policy": (
                f"default-src 'none'; style-src {src}; script-src {src}; img-src data:; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
            "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def message_page(request: web.Request, status: int, title: str, text: str) -> web.Response:
    html = templates.get_template("message.html").render(title=title, text=text,
                                                         base=base_path(request))
    return web.Response(status=status, text=html, content_type="text/html",
                        headers=security_headers())


def redirect_back(request: web.Request, token: str, flash: str, max_age: int | None = None
          ) -> web.Response:
    """303 to the page (post/redirect/get) with a one-time message for this session."""
    state = request.app[PAGE]
    if len(state.flash) >= MAX_SESSIONS:
        state.flash.clear()
    state.flash[token] = flash
    resp = web.Response(status=303, headers={"Location": public_path(request, "/"),
                                             **security_headers()})
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict",
                    path=public_path(request, "/"), secure=request.secure, max_age=max_age)
    return resp


Form = MultiDictProxy[Any]
FormHandler = Callable[[web.Request, str, Form], Awaitable[web.Response | str]]
Handler = Callable[[web.Request], Awaitable[web.Response]]


def posted(*, action: bool) -> Callable[[FormHandler], Handler]:
    """A form handler behind the CSRF check (and, for actions, the sign-in check); a string
    it returns is shown once on the page it redirects to."""

    def wrap(fn: FormHandler) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            token = session_token(request)
            form = await read_form(request)
            if form is None:
                return message_page(request, 400, "Form refused", "The form's bytes or "
                                    "charset could not be read: send it as UTF-8.")
            given, expected = form.get("csrf"), request.app[PAGE].csrf(token or "")
            if not token or not isinstance(given, str) or \
                    not hmac.compare_digest(given.encode(), expected.encode()):
                log.warning("page_csrf_refused", path=request.path)
                return message_page(request, 403, "Form refused", "The form's CSRF token is "
                                    "missing or does not match your session. Reload the page "
                                    "and try again.")
            if action and not can_act(request, token):
                return message_page(request, 403, "Sign in first", "Actions need the cron "
                                    "secret: sign in on the status page first.")
            out = await fn(request, token, form)
            return out if isinstance(out, web.Response) else redirect_back(request, token, out)

        return handler

    return wrap
