"""``GET /metrics`` parsed as Prometheus text, and failure-rate alerts: one error event, one
banner and one webhook POST per incident, served to a real receiver on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from bs4 import BeautifulSoup
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from marketd.app import create_daemon
from marketd.clock import FakeClock
from marketd.daemon import Daemon
from marketd.errors import NotFound, RateLimited
from marketd.models import JobSpec
from marketd.web import create_app
from tests.e2e.helpers import free_port
from tests.support import ScriptedProvider, make_config, ok_answer, raising, scripted_factory

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Rig:
    def __init__(self, daemon: Daemon, client: TestClient[Any, Any],
                 registry: dict[str, ScriptedProvider]) -> None:
        self.daemon, self.client, self.registry = daemon, client, registry

    async def metrics(self) -> Samples:
        resp = await self.client.get("/metrics")
        assert resp.status == 200 and resp.content_type == "text/plain"
        out: Samples = {}
        for family in text_string_to_metric_families(await resp.text()):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    async def banners(self) -> list[str]:
        doc = BeautifulSoup(await (await self.client.get("/")).text(), "html.parser")
        return [str(b["data-alert"]) for b in doc.select(".banner")]

    async def fail_jobs(self, provider: str, n: int, tag: str) -> None:
        await self.daemon.enqueue([JobSpec(provider, f"{tag}-{i}", "10") for i in range(n)])
        await self.daemon.scheduler.run_once("test")


def m(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A real tiny receiver on loopback that records every JSON body posted to it."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/hook")), received
    await server.close()


@pytest.fixture
async def rig_factory(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Any]:
    made: list[Rig] = []

    async def make(**sections: Any) -> Rig:
        sections["scheduler"] = {"manual_wake_ms": 60000, "max_retries": 0,
                                 **sections.get("scheduler", {})}
        config = make_config(tmp_path / f"d{len(made)}", **sections)
        registry: dict[str, ScriptedProvider] = {}
        factory = scripted_factory(registry)
        daemon = await create_daemon(config, clock=clock, clients=dict.fromkeys(
            ("stockx", "alias", "ebay"), factory))
        client = TestClient(TestServer(create_app(daemon), host="127.0.0.1"))
        await client.start_server()
        rig = Rig(daemon, client, registry)
        made.append(rig)
        return rig

    yield make
    for r in made:
        await r.client.close()
        await r.daemon.close()


async def test_metrics_parse_and_count(rig_factory: Any, clock: FakeClock) -> None:
    """Jobs by status and provider, calls, 429s, budget per limit, run durations, price age."""
    rig = await rig_factory(providers={"stockx": {"limits": ["5/minute", "100/hour"]}})
    empty = await rig.metrics()  # a fresh database scrapes fine
    assert m(empty, "marketd_scheduler_run_duration_seconds_count") == 0
    await rig.daemon.enqueue([JobSpec("stockx", "DD1391-100", "9"),
                              JobSpec("stockx", "AB1234-001", "8"),
                              JobSpec("alias", "XY1", None)])
    rig.registry["alias"].script.append(raising(RateLimited("alias", retry_after_s=60)))
    await rig.daemon.scheduler.run_once("test")
    clock.advance(30)
    s = await rig.metrics()
    assert m(s, "marketd_jobs", provider="stockx", status="completed") == 2
    assert m(s, "marketd_jobs", provider="alias", status="pending") == 1
    assert m(s, "marketd_provider_calls_total", provider="stockx") == 2
    assert m(s, "marketd_provider_rate_limited_total", provider="alias") == 1
    assert m(s, "marketd_provider_paused", provider="alias") == 1
    assert m(s, "marketd_provider_jobs_total", provider="stockx", outcome="succeeded") == 2
    assert m(s, "marketd_budget_remaining", provider="stockx", limit="5/minute") == 3
    assert m(s, "marketd_budget_remaining", provider="stockx", limit="100/hour") == 98
    assert m(s, "marketd_budget_used_this_hour", provider="stockx") == 2
    assert m(s, "marketd_scheduler_run_duration_seconds_count") == 1
    assert m(s, "marketd_scheduler_run_duration_seconds_bucket", le="+Inf") == 1
    assert m(s, "marketd_prices", provider="stockx") == 2
    # the scripted prices say they were fetched at epoch 1.0
    assert m(s, "marketd_price_age_seconds", provider="stockx", which="newest") == \
        clock.now() - 1.0
    assert m(s, "marketd_alert_firing", provider="stockx") == 0


async def test_build_info_and_process_metrics(rig_factory: Any) -> None:
    """marketd_build_info names the version; the process and platform collectors report
    (CPU, resident memory, open files, start time, python_info) in the daemon's registry."""
    import platform

    from marketd import __version__

    s = await (await rig_factory()).metrics()
    info = [labels for (name, labels) in s if name == "marketd_build_info"]
    assert len(info) == 1
    want = {"version": __version__, "database": "sqlite", "python": platform.python_version()}
    assert want.items() <= dict(info[0]).items()
    names = {name for name, _ in s}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes",
            "process_open_fds", "process_start_time_seconds", "python_info"} <= names


async def test_two_apps_keep_their_own_registries(rig_factory: Any) -> None:
    """Each app has its own CollectorRegistry: two in one process do not collide."""
    a, b = await rig_factory(), await rig_factory()
    await a.daemon.enqueue([JobSpec("ebay", "ONLY-A", "9")])
    assert m(await a.metrics(), "marketd_jobs", provider="ebay", status="pending") == 1
    assert m(await b.metrics(), "marketd_jobs", provider="ebay", status="pending") == 0


async def test_alert_fires_once_per_incident(rig_factory: Any, clock: FakeClock,
                                            webhook: tuple[str, list[dict[str, Any]]]) -> None:
    """High failure rate: one error event, a banner and one POST; recovery clears it; a new
    incident posts again."""
    url, received = webhook
    rig = await rig_factory(alerts={"failure_rate_threshold": 0.5, "window_seconds": 600,
                                    "min_jobs": 4, "webhook_url": url})
    rig.registry["stockx"].default = raising(NotFound("stockx", "no such product"))
    with capture_logs() as logs:
        await rig.fail_jobs("stockx", 3, "A")  # 3 attempts: below min_jobs
        assert received == [] and await rig.banners() == []
        await rig.fail_jobs("stockx", 3, "B")
        await rig.fail_jobs("stockx", 3, "C")  # the same incident: no second POST
    events = [e for e in logs if e["event"] == "provider_failure_rate_high"]
    assert len(events) == 1 and events[0]["log_level"] == "error"
    assert events[0]["provider"] == "stockx" and events[0]["attempts"] == 6
    assert len(received) == 1
    alert = received[0]
    assert alert["alert"] == "provider_failure_rate_high" and alert["provider"] == "stockx"
    assert alert["failure_rate"] == 1.0 and alert["status"] == "firing"
    assert await rig.banners() == ["stockx"]
    assert m(await rig.metrics(), "marketd_alert_firing", provider="stockx") == 1
    # recovery: the failures leave the window and successes come in
    clock.advance(700)
    rig.registry["stockx"].default = ok_answer
    with capture_logs() as logs:
        await rig.fail_jobs("stockx", 2, "D")
    assert [e["event"] for e in logs if "failure_rate" in e["event"]] == [
        "provider_failure_rate_recovered"]
    assert await rig.banners() == []
    # a new incident posts again
    rig.registry["stockx"].default = raising(NotFound("stockx", "gone again"))
    await rig.fail_jobs("stockx", 8, "E")
    assert len(received) == 2 and await rig.banners() == ["stockx"]


async def test_a_dead_webhook_does_not_break_the_run(rig_factory: Any) -> None:
    """The POST fails (nothing listens): the run completes, the banner shows, a warning logs."""
    rig = await rig_factory(alerts={"min_jobs": 2,
                                    "webhook_url": f"http://127.0.0.1:{free_port()}/hook"})
    rig.registry["alias"].default = raising(NotFound("alias", "<b>bold</b>"))
    with capture_logs() as logs:
        await rig.fail_jobs("alias", 2, "X")
    assert "alert_webhook_failed" in [e["event"] for e in logs]
    assert await rig.banners() == ["alias"]
    runs = await rig.daemon.store.recent_runs()
    assert runs[0]["failed"] == 2
