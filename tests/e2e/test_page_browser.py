"""The status page in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium,
never a downloaded one) against a daemon this test starts with ``marketd.app.serve``.

Skips when Playwright or Chromium is missing, unless MARKETD_REQUIRE_SERVICES=1 (CI), where
that is a failure. Install: ``apt-get install -y chromium`` and ``pip install playwright``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from marketd.app import serve
from marketd.daemon import Daemon
from marketd.errors import NotFound
from marketd.models import JobSpec
from tests.support import ScriptedProvider, make_config, raising, scripted_factory

CHROMIUM = "/usr/bin/chromium"
SECRET = "browser-cron-secret"
XSS = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\">"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


def _need_browser() -> Any:
    """The playwright async API, or skip (fail under MARKETD_REQUIRE_SERVICES=1)."""
    missing = []
    try:
        from playwright import async_api
    except ImportError:
        async_api = None
        missing.append("the playwright package (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("MARKETD_REQUIRE_SERVICES") == "1":
            pytest.fail(reason + " (MARKETD_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    return async_api


@pytest.fixture
def browser_api() -> Any:
    return _need_browser()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Daemon, str, dict[str, Any]]]:
    """A daemon serving on a loopback port, scripted providers behind it, real clock."""
    config = make_config(tmp_path, security={"cron_secret": SECRET},
                         scheduler={"interval_seconds": 3600, "manual_wake_ms": 60000})
    registry: dict[str, ScriptedProvider] = {}
    factory = scripted_factory(registry)
    stop = asyncio.Event()
    ready: asyncio.Future[tuple[Daemon, str]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(
        config, clients=dict.fromkeys(("stockx", "alias", "ebay"), factory),
        install_signals=False, stop_event=stop,
        on_ready=lambda d, url: ready.set_result((d, url))))
    daemon, url = await asyncio.wait_for(asyncio.shield(ready), 30)
    # the interval job's first run happens at start; let it finish before adding jobs
    for _ in range(200):
        if daemon.scheduler.last_run_at is not None:
            break
        await asyncio.sleep(0.02)
    try:
        yield daemon, url, registry
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


async def test_page_in_chromium(browser_api: Any, running: tuple[Daemon, str, dict[str, Any]],
                                tmp_path: Path) -> None:
    """Budgets and jobs render; sign-in works; Trigger and Reset Failed change the page; markup
    in an error message is shown as text; the page reloads itself; a screenshot is saved."""
    api, (daemon, url, registry) = browser_api, running
    await daemon.enqueue([JobSpec("stockx", "DD1391-100", "9"),
                          JobSpec("stockx", "DD1391-100", "10"),
                          JobSpec("alias", "FZ5000-100", "8")])
    registry["stockx"].script.append(raising(NotFound("stockx", XSS)))
    async with api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            requested: list[str] = []
            page.on("request", lambda req: requested.append(req.url))
            expect = api.expect
            await page.goto(url)
            for name in ("stockx", "alias", "ebay"):
                chart = page.locator(f'#budgets [data-provider="{name}"] svg')
                await expect(chart).to_have_count(1)
            pending = page.locator('#job-counts tr[data-provider="stockx"] '
                                   '[data-status="pending"]')
            await expect(pending).to_have_text("2")
            await expect(page.locator("#readonly")).to_contain_text("cron secret")
            await expect(page.locator("#trigger")).to_have_count(0)

            await page.fill("#secret", "wrong")
            await page.click("#signin")
            await expect(page.locator("#message")).to_contain_text("not the cron secret")
            await page.goto(url)
            await page.fill("#secret", SECRET)
            await page.click("#signin")
            await expect(page.locator("#flash")).to_have_text("Signed in.")

            await page.click("#trigger")
            await expect(page.locator("#flash")).to_contain_text("Scheduler run")
            failed = page.locator('#job-counts tr[data-provider="stockx"] [data-status="failed"]')
            await expect(failed).to_have_text("2")
            completed = page.locator('#job-counts tr[data-provider="alias"] '
                                     '[data-status="completed"]')
            await expect(completed).to_have_text("1")
            error = page.locator('#jobs tr[data-status="failed"] td.error').first
            await expect(error).to_have_text(f"stockx: {XSS}")
            assert await page.evaluate("window.__xss") is None
            assert await page.locator("script").count() == 1
            assert await page.locator("#jobs img").count() == 0
            await page.screenshot(path=str(tmp_path / "status.png"), full_page=True)

            await page.select_option('select[name="provider"][aria-label]', "stockx")
            await page.click("#reset-failed")
            await expect(page.locator("#flash")).to_contain_text("2 job(s) of stockx")
            await expect(failed).to_have_text("0")
            await expect(pending).to_have_text("2")
            # with JavaScript on, the page reloads itself every few seconds
            async with page.expect_event("load", timeout=15000):
                pass
            await expect(page.locator("#flash")).to_have_count(0)
            # no external assets: every request went to the daemon itself
            assert requested and all(u.startswith(url) for u in requested), requested
        finally:
            await browser.close()
    shot = tmp_path / "status.png"
    assert shot.stat().st_size > 10_000
