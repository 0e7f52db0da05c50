"""Pauses people hear about (issue 14): refused credentials and a spent daily quota POST one
JSON alert per incident to the alert webhook (a real receiver on loopback), show a banner,
and a "resolved" alert follows once calls go through again; a pause for refused credentials
ends at start-up when the credentials changed (a fingerprint is kept, never the secret). On
PostgreSQL, a reset by another process (the CLI) reaches the lane's holder by NOTIFY.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from bs4 import BeautifulSoup
from structlog.testing import capture_logs

from marketd.app import create_daemon
from marketd.clock import FakeClock
from marketd.daemon import Daemon
from marketd.errors import AuthError, QuotaExhausted, TransientError
from marketd.models import JobSpec
from marketd.web import create_app
from marketd.worker import FINGERPRINT_KIND
from tests.integration.test_metrics_alerts import webhook  # noqa: F401 (a fixture)
from tests.support import ScriptedProvider, make_config, ok_answer, raising, scripted_factory

Made = tuple[Daemon, dict[str, ScriptedProvider]]
REFUSED = AuthError("alias", "credentials refused (HTTP 401)", credential="ALIAS_API_TOKEN",
                    status=401)


@pytest.fixture
async def make(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Any]:
    made: list[Daemon] = []

    async def build(token: str = "goatapi_one", url: str = "") -> Made:  # noqa: S107
        config = make_config(
            tmp_path, alerts={"webhook_url": url},
            providers={"stockx": {"enabled": False}, "ebay": {"limits": ["100/hour"]},
                       "alias": {"limits": ["100/hour"], "api_token": token}},
            scheduler={"auth_pause_seconds": 300, "pacing": False})
        registry: dict[str, ScriptedProvider] = {}
        factory = scripted_factory(registry)
        daemon = await create_daemon(config, clock=clock,
                                     clients={"alias": factory, "ebay": factory})
        made.append(daemon)
        return daemon, registry

    yield build
    for daemon in made:
        if daemon.store is not None:
            await daemon.close()


async def banners(daemon: Daemon) -> list[str]:
    async with TestClient(TestServer(create_app(daemon))) as client:
        resp = await client.get("/")
        assert resp.status == 200, await resp.text()
        doc = BeautifulSoup(await resp.text(), "html.parser")
    return [str(b.get("data-pause")) for b in doc.select(".banner[data-pause]")]


async def test_refused_credentials_alert_once_then_resolve(
        make: Any, clock: FakeClock, webhook: tuple[str, list[dict[str, Any]]]) -> None:  # noqa: F811
    url, received = webhook
    daemon, registry = await make(url=url)
    registry["alias"].default = raising(REFUSED)
    await daemon.enqueue([JobSpec("alias", "B75806", "9")])
    with capture_logs() as logs:
        await daemon.scheduler.run_once("interval")
    lane = daemon.lanes["alias"]
    assert [e["event"] for e in logs].count("provider_paused") == 1
    [alert] = received
    assert alert["alert"] == "provider_paused" and alert["status"] == "firing"
    assert (alert["provider"], alert["reason"], alert["check"]) == (
        "alias", "credentials_refused", "ALIAS_API_TOKEN")
    assert alert["paused_until"] is not None and "401" in alert["message"]
    assert "goatapi" not in str(alert)
    assert await banners(daemon) == ["credentials_refused"]
    # the pause ends: a woken run asks again, refused again: the same incident, no new POST
    clock.advance(300)
    await daemon.scheduler.idle()
    assert lane.paused(clock.now()) and len(received) == 1
    # the credentials are fixed: at the next pause end the call goes through: resolved
    registry["alias"].default = ok_answer
    clock.advance(300)
    await daemon.scheduler.idle()
    assert (await daemon.store.job_counts())["alias"] == {"completed": 1}
    assert [a["status"] for a in received] == ["firing", "resolved"]
    assert received[1]["resolved_at"] is not None
    assert await banners(daemon) == []


async def test_a_spent_daily_quota_alerts(make: Any, clock: FakeClock,
                                          webhook: tuple[str, list[dict[str, Any]]],  # noqa: F811
                                          ) -> None:
    url, received = webhook
    daemon, registry = await make(url=url)
    registry["ebay"].default = raising(QuotaExhausted("ebay", "daily quota spent",
                                                      retry_after_s=5000))
    await daemon.enqueue([JobSpec("ebay", "DD1391-100", "10")])
    await daemon.scheduler.run_once("interval")
    [alert] = received
    assert (alert["provider"], alert["reason"], alert["check"]) == ("ebay", "daily_quota", None)
    assert await banners(daemon) == ["daily_quota"]


async def test_a_transient_error_is_no_pause_alert(make: Any,
                                                   webhook: tuple[str, list[dict[str, Any]]],  # noqa: F811
                                                   ) -> None:
    url, received = webhook
    daemon, registry = await make(url=url)
    registry["alias"].default = raising(TransientError("alias", "HTTP 503", status=503))
    await daemon.enqueue([JobSpec("alias", "B75806", "9")])
    await daemon.scheduler.run_once("interval")
    assert received == []


async def test_a_refused_credentials_pause_ends_at_start_up_with_new_credentials(
        make: Any, clock: FakeClock) -> None:
    daemon, registry = await make(token="goatapi_one")
    registry["alias"].default = raising(REFUSED)
    await daemon.enqueue([JobSpec("alias", "B75806", "9")])
    await daemon.scheduler.run_once("interval")
    until = daemon.lanes["alias"].paused_until
    assert until is not None
    stored = await daemon.store.get_token("alias", FINGERPRINT_KIND)
    assert stored is not None and "goatapi_one" not in stored[0]
    await daemon.close()
    # restarted with the same credentials: still paused
    same, _ = await make(token="goatapi_one")
    assert same.lanes["alias"].paused_until == until
    assert same.alerts.pauses["alias"].reason == "credentials_refused"  # (announced before)
    await same.close()
    # restarted with new ones: not paused, and the pause is gone from the database too
    fixed, registry = await make(token="goatapi_two")
    assert fixed.lanes["alias"].paused_until is None
    state = (await fixed.store.provider_states()).get("alias")
    assert state is None or state.paused_until is None
    await fixed.enqueue([JobSpec("alias", "B75806", "9", priority=200)])
    clock.advance(1)
    await fixed.scheduler.idle()
    assert (await fixed.store.job_counts())["alias"] == {"completed": 1}


async def test_a_new_stockx_sign_in_ends_a_refused_credentials_pause_at_start_up(
        tmp_path: Path, clock: FakeClock) -> None:
    """The refresh token `marketd auth stockx` keeps in the database counts as a credential:
    a restart after a new sign-in takes the lane up at once; a restart without one keeps
    the pause."""
    refused = AuthError("stockx", "refresh token refused (HTTP 401)",
                        credential="STOCKX_REFRESH_TOKEN", status=401)

    async def start() -> tuple[Daemon, dict[str, ScriptedProvider]]:
        config = make_config(
            tmp_path, providers={"alias": {"enabled": False}, "ebay": {"enabled": False},
                                 "stockx": {"limits": ["100/hour"]}},
            scheduler={"auth_pause_seconds": 300, "pacing": False})
        registry: dict[str, ScriptedProvider] = {}
        daemon = await create_daemon(config, clock=clock,
                                     clients={"stockx": scripted_factory(registry)})
        return daemon, registry

    daemon, registry = await start()
    await daemon.store.put_token("stockx", "refresh_token", "signed-in-once", None)
    await daemon.close()
    daemon, registry = await start()
    registry["stockx"].default = raising(refused)
    await daemon.enqueue([JobSpec("stockx", "DD1391-100", "10")])
    await daemon.scheduler.run_once("interval")
    until = daemon.lanes["stockx"].paused_until
    assert until is not None
    await daemon.close()
    same, _ = await start()  # nothing changed: still paused
    assert same.lanes["stockx"].paused_until == until
    await same.store.put_token("stockx", "refresh_token", "signed-in-again", None)
    await same.close()
    fixed, _ = await start()  # `marketd auth stockx` stored a new token: not paused
    assert fixed.lanes["stockx"].paused_until is None
    await fixed.close()


# ---- PostgreSQL: wakes between processes ---------------------------------------------------------


async def test_a_cli_reset_on_postgres_wakes_the_lane_holder(tmp_path: Path,
                                                             clock: FakeClock) -> None:
    pytest.importorskip("asyncpg")
    from marketd.config import parse_config
    from marketd.store.postgres import PostgresStore
    from tests.conftest import postgres_database

    databases = postgres_database()
    url = await anext(databases)
    try:
        config = parse_config({"database": {"url": url}, "server": {"port": 0},
                               "providers": {"stockx": {"limits": ["100/hour"]},
                                             "alias": {"enabled": False},
                                             "ebay": {"enabled": False}},
                               "scheduler": {"max_retries": 0}}, env={})
        registry: dict[str, ScriptedProvider] = {}
        daemon = await create_daemon(config, clock=clock,
                                     clients={"stockx": scripted_factory(registry)})
        try:
            registry["stockx"].default = raising(TransientError("stockx", "HTTP 503",
                                                                status=503))
            await daemon.enqueue([JobSpec("stockx", "DD1391-100", "10")])
            await daemon.scheduler.run_once("interval")
            assert daemon.scheduler.wake_at("stockx") is None
            cli = await PostgresStore.open(url, clock)
            try:
                assert await cli.reset_failed() == 1
            finally:
                await cli.close()
            for _ in range(500):  # the NOTIFY arrives over the lanes' connection (I/O)
                if daemon.scheduler.wake_at("stockx") is not None:
                    break
                await asyncio.sleep(0.01)
            assert daemon.scheduler.wake_at("stockx") is not None
            registry["stockx"].default = ok_answer
            clock.advance(1)
            await daemon.scheduler.idle()
            assert (await daemon.store.job_counts())["stockx"] == {"completed": 1}
            assert (await daemon.store.recent_runs())[0]["trigger"] == "reset"
        finally:
            await daemon.close()
    finally:
        await databases.aclose()


async def test_a_hot_enqueue_on_another_daemon_wakes_the_lane_holder(tmp_path: Path,
                                                                     clock: FakeClock) -> None:
    """Two daemons on one PostgreSQL database, one provider: a hot add on the daemon that
    does not run it reaches the holder by NOTIFY, which wakes it hot_wake_seconds later."""
    pytest.importorskip("asyncpg")
    from marketd.config import parse_config
    from tests.conftest import postgres_database

    databases = postgres_database()
    url = await anext(databases)
    made: list[Daemon] = []
    try:
        config = parse_config({"database": {"url": url}, "server": {"port": 0},
                               "providers": {"stockx": {"limits": ["100/hour"]},
                                             "alias": {"enabled": False},
                                             "ebay": {"enabled": False}}}, env={})
        for _ in range(2):
            registry: dict[str, ScriptedProvider] = {}
            made.append(await create_daemon(config, clock=clock,
                                            clients={"stockx": scripted_factory(registry)}))
        holder, other = made if made[0].lanes["stockx"].held else made[::-1]
        assert holder.lanes["stockx"].held and not other.lanes["stockx"].held
        await other.enqueue([JobSpec("stockx", "DD1391-100", "10", priority=150)])
        want = clock.now() + config.scheduler.hot_wake_seconds
        for _ in range(500):  # the NOTIFY arrives over the lanes' connection (I/O)
            if holder.scheduler.wake_at("stockx") is not None:
                break
            await asyncio.sleep(0.01)
        assert holder.scheduler.wake_at("stockx") == want
        assert other.scheduler.wake_at("stockx") is None
    finally:
        for daemon in made:
            await daemon.close()
        await databases.aclose()
