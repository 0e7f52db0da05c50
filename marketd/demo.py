"""``marketd demo``: the whole system on embedded defaults, with no keys and no network.

The built-in simulator of the StockX, Alias and eBay APIs listens on loopback; the real
provider clients talk to it; a small sample portfolio is enqueued; the status page URL is
printed. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from marketd.app import serve
from marketd.config import Config, parse_config
from marketd.daemon import Daemon
from marketd.errors import MarketdError
from marketd.logs import configure_logging
from marketd.models import JobSpec, Priority

# (sku, UK sizes): real products the simulator's catalog carries
PORTFOLIO: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("DD1391-100", ("8", "9", "10")),
    ("B75806", ("7.5", "9.5")),
    ("DZ5485-612", ("9",)),
    ("BB550WT1", ("10",)),
)
MANUAL_JOB = '{"provider":"stockx","sku":"DD1391-100","size":"9.5","priority":"manual"}'
DEMO_SECRET = "demo-secret"  # noqa: S105 - the demo's own, printed for the user to try


def demo_config(db: str, port: int, sim_url: str) -> Config:
    creds = {
        "stockx": {"api_key": "demo", "client_id": "demo", "client_secret": "demo",
                   "refresh_token": "demo", "auth_url": sim_url,
                   "limits": ["1/second", "100/hour"]},
        "alias": {"api_token": "goatapi_demo", "limits": ["1/second", "200/hour"]},
        "ebay": {"client_id": "demo", "client_secret": "demo", "limits": ["1/second",
                                                                           "150/hour"]},
    }
    providers = {name: {"base_url": sim_url, **c} for name, c in creds.items()}
    return parse_config({
        "server": {"host": "127.0.0.1", "port": port},
        "database": {"path": db},
        "scheduler": {"interval_seconds": 60, "fresh_for_seconds": 300, "pacing": False,
                      "retry_base_seconds": 5},
        "security": {"cron_secret": DEMO_SECRET},
        "logging": {"level": "info"},
        "providers": providers,
    }, env={})


def portfolio_jobs() -> list[JobSpec]:
    jobs = []
    for provider in ("stockx", "alias", "ebay"):
        for sku, sizes in PORTFOLIO:
            for size in sizes:
                jobs.append(JobSpec(provider, sku, size, priority=int(Priority.HOT)))
    return jobs


async def run_demo(*, port: int = 8787, db: str | None = None, sim_port: int = 0) -> int:
    from marketd.simulator import SimulatorOptions, create_simulator_app

    configure_logging("info", "console")
    sim_runner = web.AppRunner(create_simulator_app(SimulatorOptions(strict_tokens=False)),
                               access_log=None)
    await sim_runner.setup()
    try:
        site = web.TCPSite(sim_runner, "127.0.0.1", sim_port)
        await site.start()
        sim_addr: Any = sim_runner.addresses[0]
        sim_url = f"http://127.0.0.1:{sim_addr[1]}"
        with tempfile.TemporaryDirectory(prefix="marketd-demo-") as tmp:
            path = db or str(Path(tmp) / "marketd.db")
            config = demo_config(path, port, sim_url)

            def ready(daemon: Daemon, url: str) -> None:
                asyncio.get_running_loop().create_task(_enqueue_portfolio(daemon, url, sim_url))

            try:
                return await serve(config, on_ready=ready)
            except MarketdError as exc:
                raise MarketdError(f"{exc}; or try marketd demo --port {port + 1}") from None
    finally:
        await sim_runner.cleanup()


async def _enqueue_portfolio(daemon: Daemon, url: str, sim_url: str) -> None:
    jobs = portfolio_jobs()
    await daemon.enqueue(jobs)
    # one manual refresh, as the app's refresh button would send
    await daemon.enqueue([JobSpec("stockx", "DD1391-100", "11", priority=int(Priority.MANUAL))])
    for provider in sorted({j.provider for j in jobs}):  # a demo shows prices now, not after
        daemon.scheduler.wake(provider)                   # hot_wake_seconds
    print(f"""
marketd demo is running (simulated StockX, Alias and eBay at {sim_url})
  status page:  {url}
  database:     {daemon.config.database.where}
  enqueued:     {len(jobs) + 1} jobs for a sample portfolio; prices appear within seconds
  try:          curl -s -X POST {url}enqueue -H 'Content-Type: application/json' -d '{MANUAL_JOB}'
                curl -s {url}prices?sku=DD1391-100
                curl -s -X POST {url}trigger -H 'x-cron-secret: {DEMO_SECRET}'
  stop:         Ctrl-C
""", flush=True)
