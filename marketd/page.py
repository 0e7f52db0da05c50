"""The HTML status page (server-rendered, Jinja2 with autoescape)."""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web

from marketd.views import price_view, status_view

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("marketd", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)


async def index(request: web.Request) -> web.Response:
    from marketd.web import DAEMON

    daemon = request.app[DAEMON]
    data: dict[str, Any] = await status_view(daemon.store, daemon.lanes, daemon.clock.now())
    data["prices"] = [price_view(r) for r in await daemon.store.list_prices(limit=50)]
    data["failed_jobs"] = await daemon.store.list_jobs(status="failed", limit=20)
    html = _env.get_template("status.html").render(**data)
    return web.Response(text=html, content_type="text/html")
