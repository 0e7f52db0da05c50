"""The OpenAPI description (marketd/openapi.py) is kept true: it names exactly the routes the
app serves, and schemathesis, driving a real server on loopback from that description (valid
and invalid requests alike), never gets a 5xx, nor an answer its schemas do not describe.

The server runs in a thread with its own event loop (real aiohttp server, real SQLite file,
scripted providers at the provider seam), so schemathesis's blocking HTTP calls cannot stall it.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from marketd.app import create_daemon
from marketd.openapi import openapi_spec
from marketd.page import COOKIE
from marketd.web import create_app
from tests.support import ScriptedProvider, make_config, scripted_factory

SPEC_PATH = "/openapi.json"
EXAMPLES = int(os.environ.get("MARKETD_SCHEMATHESIS_EXAMPLES", "40"))
METHODS = ("get", "post", "put", "patch", "delete")


def router_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path) of every route; aiohttp adds HEAD to every GET by itself."""
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path:
            out.add((route.method, str(path)))
    return out


def spec_routes(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec["paths"].items()
            for method in item if method in METHODS}


async def test_spec_names_every_route_and_only_those(tmp_path: Path) -> None:
    """Every route of create_app(...) is in the spec, and every path of the spec is served.
    (``/openapi.json`` itself is served by the app once web.py mounts it.)"""
    daemon = await create_daemon(make_config(tmp_path), clients=_clients({}))
    try:
        served = router_routes(create_app(daemon)) | {("GET", SPEC_PATH)}
    finally:
        await daemon.close()
    described = spec_routes(openapi_spec())
    assert served - described == set(), "routes missing from marketd/openapi.py"
    assert described - served == set(), "routes in marketd/openapi.py that the app lacks"


def test_spec_is_valid_openapi_and_loads() -> None:
    """schemathesis accepts the document and finds one operation per route; every operation
    documents its answers, every $ref resolves, every operationId is unique."""
    spec = openapi_spec()
    schema = schemathesis.openapi.from_dict(spec)
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) == len(spec_routes(spec))
    ids = [op["operationId"] for item in spec["paths"].values() for m, op in item.items()
           if m in METHODS]
    assert len(ids) == len(set(ids))
    refs = _refs(spec)
    assert refs <= set(spec["components"]["schemas"]), refs - set(spec["components"]["schemas"])
    enqueue = spec["paths"]["/enqueue"]["post"]
    assert {"202", "400", "401", "413"} <= set(enqueue["responses"])
    shapes = enqueue["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert len(shapes) == 4
    assert openapi_spec() is not openapi_spec()  # a fresh copy each time


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[1]} if "$ref" in node else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


# ---- a live server for schemathesis -------------------------------------------------------------


def _clients(registry: dict[str, ScriptedProvider]) -> dict[str, Any]:
    factory = scripted_factory(registry)
    return {"stockx": factory, "alias": factory, "ebay": factory}


@dataclass
class LiveServer:
    """The daemon's app on 127.0.0.1 in a thread of its own, plus the spec at /openapi.json."""

    tmp: Path
    url: str = ""
    error: BaseException | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="marketd-live", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self.error is not None:
            raise RuntimeError(f"the live server did not start: {self.error!r}")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # no secrets: every request reaches the handlers' own validation; limits with no
        # pacing (StockX's default 1/second would make a /trigger of the jobs schemathesis
        # enqueues take a second per SKU, past the client's timeout)
        fast = {"limits": ["100000/hour"]}
        config = make_config(self.tmp, scheduler={"interval_seconds": 3600,
                                                  "manual_wake_ms": 60000},
                             providers={"stockx": fast, "alias": fast, "ebay": fast})
        daemon = await create_daemon(config, clients=_clients({}))
        app = create_app(daemon)
        if ("GET", SPEC_PATH) not in router_routes(app):
            async def spec(request: web.Request) -> web.Response:
                return web.json_response(openapi_spec())

            app.router.add_get(SPEC_PATH, spec)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
            daemon.scheduler.start()
            self._ready.set()
            await self._stop.wait()
        finally:
            await daemon.scheduler.stop(1)
            await runner.cleanup()
            await daemon.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("live"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(live: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{live.url}{SPEC_PATH}")


def test_served_spec_is_openapi_spec(live: LiveServer) -> None:
    resp = requests.get(f"{live.url}{SPEC_PATH}", timeout=10)
    assert resp.status_code == 200
    assert resp.json() == openapi_spec()


def page_session(url: str) -> tuple[str, str]:
    """A visitor's session cookie and the CSRF token the page gives it."""
    resp = requests.get(f"{url}/", timeout=10)
    match = re.search(r'name="csrf" value="([^"]+)"', resp.text)
    assert resp.status_code == 200 and match and COOKIE in resp.cookies
    return resp.cookies[COOKIE], match.group(1)


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
OPERATIONS = sorted(spec_routes(openapi_spec()), key=lambda r: (r[1], r[0]))


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_5xx_and_answers_match_the_spec(live: LiveServer, api_schema: Any, method: str,
                                           path: str) -> None:
    """Positive and negative examples for one operation: never a 5xx, and every answer has a
    documented status, content type and body schema."""
    op = api_schema[path][method]
    strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE),
                         op.as_strategy(GenerationMode.NEGATIVE))
    deadline = time.monotonic() + 20  # the whole file stays well under a minute
    session = requests.Session()
    seen: list[int] = []
    cookie, csrf = page_session(live.url) if op.tags and "page" in op.tags else ("", "")

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        if time.monotonic() > deadline:
            return
        if cookie:  # a page form: a real session and its CSRF token reach the handler
            case.cookies = {**(case.cookies or {}), COOKIE: cookie}
            if isinstance(case.body, dict):
                case.body = {**case.body, "csrf": csrf}
        response = case.call(base_url=live.url, session=session, timeout=10,
                             allow_redirects=False)
        seen.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    finally:
        session.close()
    print(method, path, sorted(__import__("collections").Counter(seen).items()))
    assert seen, "no request was sent"
    assert all(code < 500 for code in seen)
