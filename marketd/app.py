"""Wires everything together: start-up, the running daemon, and graceful shutdown.

Start-up: open and migrate the database, return jobs a crash left running to pending, rebuild
every provider's sliding log from the durable call log, restore pauses, build the failure-rate
alerts and the /metrics collector and hook them to the scheduler's runs, start the HTTP server,
then the interval job. Shutdown (SIGTERM/SIGINT): stop taking work, give in-flight calls
``shutdown_grace_seconds``, return the rest to pending, close everything, exit 0.

The daemon's state lives in :mod:`marketd.daemon` (what the handlers see); this module builds
it and imports the others; only the command-line side (cli, demo, client) imports this one.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import signal
from collections.abc import Callable, Mapping

import aiohttp
import structlog
from aiohttp import web

from marketd import __version__
from marketd.alerts import FailureAlerts
from marketd.budget import ProviderBudget
from marketd.clock import Clock
from marketd.config import SECRET_KEYS, Config, ProviderConfig
from marketd.conns import GUARD, AcceptErrors, ConnectionGuard, raise_fd_limit
from marketd.daemon import Daemon, Service
from marketd.enrich import Enricher
from marketd.errors import MarketdError
from marketd.instance import Instance
from marketd.metrics import PageMetrics
from marketd.providers import client_class
from marketd.providers.base import Provider, ProviderContext, new_session
from marketd.retention import Retention
from marketd.scheduler import Scheduler
from marketd.sdnotify import Notifier
from marketd.store import Store, open_store
from marketd.web import create_app
from marketd.webhooks import WebhookSender
from marketd.worker import Lane, restore_pause

log = structlog.get_logger(__name__)

ClientFactory = Callable[[ProviderContext], Provider]
# providers with no product-level price call cost one call per job
NON_COALESCING = frozenset({"ebay"})


async def create_daemon(config: Config, *, clock: Clock | None = None,
                        clients: Mapping[str, ClientFactory] | None = None,
                        store: Store | None = None) -> Daemon:
    """Open the store (or take ``store``, opened, which the daemon then owns and closes),
    build the lanes, and hook the queue sampling and the failure-rate alerts to the
    scheduler's runs; nothing runs until the scheduler starts."""
    clock = clock or (store.clock if store is not None else Clock())
    store = store or await open_store(config.database, clock)
    session = new_session(f"marketd/{__version__}")
    instance: Instance | None = None
    try:
        lanes = await build_lanes(config, store, clock, session, clients, daemon=True)
        await store.ensure_budgets({n: ln.budget.rate_limit for n, ln in lanes.items()})
        scheduler = Scheduler(config, store, lanes, clock)
        # register, take the free lanes, and return the dead's running jobs to pending (on
        # SQLite, one daemon per file: every job a crash left running)
        instance = Instance(store, clock, lanes, scheduler)
        rescued = await instance.start()
        if rescued:
            log.warning("crash_leftovers_rescued", jobs=rescued)
    except BaseException:
        await session.close()
        if instance is not None:
            await instance.locks.close()
        await store.close()
        raise
    alerts = FailureAlerts(config.alerts, clock, lambda: session, lanes)
    metrics = PageMetrics(store, clock, lanes, alerts)
    retention = Retention(store, config.retention, clock)
    enricher = Enricher(store, clock)  # untitled SKUs: catalog look-ups on spare budget
    scheduler.after_run.extend([metrics.sample, alerts.on_run, retention.after_run,
                                enricher.after_run])
    services: dict[str, Service] = {"retention": retention}
    if config.webhooks.price_changed_url:  # changed prices queue deliveries; a sender sends
        store.price_webhooks = config.webhooks.min_change_percent
        services["webhooks"] = WebhookSender(store, config.webhooks, clock, session)
    return Daemon(config, store, clock, lanes, scheduler, session, alerts, metrics, instance,
                  services=services)


async def build_lanes(config: Config, store: Store, clock: Clock,
                      session: aiohttp.ClientSession | None,
                      clients: Mapping[str, ClientFactory] | None = None, *,
                      daemon: bool = False) -> dict[str, Lane]:
    """One lane per enabled provider: its budget rebuilt from the call log, its pause restored.
    Without a session the lanes have no client (read-only views such as ``marketd status``).
    Only the daemon (``daemon``) ends a pause for refused credentials that it no longer has;
    a tool, with an environment of its own, only shows it."""
    states = await store.provider_states()
    lanes: dict[str, Lane] = {}
    margin = config.scheduler.limit_margin_ms / 1000
    for pc in config.enabled_providers():
        budget = ProviderBudget(pc, store, clock, margin_s=margin,
                                manual_reserve=config.scheduler.manual_reserve)
        await budget.load()
        client: Provider | None = None
        if session is not None:
            ctx = ProviderContext(config=pc, session=session, budget=budget, store=store,
                                  clock=clock)
            factory = (clients or {}).get(pc.name) or client_class(pc.name)
            client = factory(ctx)
        stored = {kind: token[0] for kind in STORED_CREDENTIALS.get(pc.name, ())
                  if (token := await store.get_token(pc.name, kind)) is not None}
        lane = Lane(pc.name, client, budget, coalesces=pc.name not in NON_COALESCING,
                    fingerprint=credential_fingerprint(pc, stored))
        await restore_pause(lane, states.get(pc.name), store, clock.now(), check=daemon)
        lanes[pc.name] = lane
    return lanes


# credentials a provider keeps in the database (market_tokens kinds): `marketd auth stockx`
# stores the refresh token its sign-in gave, and StockX may rotate it
STORED_CREDENTIALS: dict[str, tuple[str, ...]] = {"stockx": ("refresh_token",)}


def credential_fingerprint(pc: ProviderConfig, stored: Mapping[str, str] | None = None) -> str:
    """A hash of the provider's configured secrets and of those it keeps in the database
    (``stored``; never the secrets themselves): what a pause for refused credentials
    remembers, so new credentials, in the config or from `marketd auth`, end it at start-up."""
    secrets = {k: str(v) for k, v in pc.options.items() if k in SECRET_KEYS}
    secrets |= {f"stored:{k}": v for k, v in (stored or {}).items()}
    return hashlib.sha256(json.dumps(secrets, sort_keys=True).encode()).hexdigest()[:16]


async def serve(config: Config, *, clock: Clock | None = None,
                clients: Mapping[str, ClientFactory] | None = None,
                install_signals: bool = True,
                stop_event: asyncio.Event | None = None,
                on_ready: Callable[[Daemon, str], None] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT (or ``stop_event``); returns the exit status."""
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    notifier = Notifier()  # its socket is opened now, while descriptors are free
    raise_fd_limit()
    accept_errors = AcceptErrors(loop)
    accept_errors.install()
    try:
        daemon = await create_daemon(config, clock=clock, clients=clients)
    except BaseException:
        notifier.close()
        accept_errors.uninstall()
        raise
    app = create_app(daemon)
    guard = app[GUARD] = ConnectionGuard(config.server)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           keepalive_timeout=config.server.keepalive_seconds)
    try:
        await runner.setup()
        assert runner.server is not None
        guard.attach(runner.server)
        guard.start()
        site = web.TCPSite(runner, config.server.host, config.server.port)
        try:
            await site.start()
        except OSError as exc:
            hint = ("another marketd may be running; change server.port"
                    if exc.errno == errno.EADDRINUSE else "check server.host and server.port")
            raise MarketdError(f"cannot listen on {config.server.host}:{config.server.port}: "
                               f"{exc.strerror or exc} ({hint})") from None
        if config.server.socket:
            await _listen_unix(runner, config.server.socket)
        url = _url(runner, config.server.host)
        daemon.scheduler.start()
        if daemon.instance is not None:
            daemon.instance.run()
        sender = daemon.services.get("webhooks")
        if isinstance(sender, WebhookSender):
            sender.start()  # deliveries queued before a restart go out now
        log.info("marketd_ready", url=url, database=config.database.where,
                 providers=sorted(daemon.lanes), version=__version__)
        notifier.notify("READY=1")
        watchdog = notifier.start_watchdog(daemon.scheduler.alive)
        if on_ready is not None:
            on_ready(daemon, url)
        await stop.wait()
        if watchdog is not None:
            watchdog.cancel()
        log.info("marketd_stopping")
        notifier.notify("STOPPING=1")
    finally:
        await daemon.scheduler.stop(config.scheduler.shutdown_grace_seconds)
        await guard.stop()
        await runner.cleanup()
        await daemon.close()
        notifier.close()
        accept_errors.uninstall()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    c = {n: ln.counters for n, ln in daemon.lanes.items()}
    log.info("marketd_stopped", **{f"{n}_calls": v.calls for n, v in c.items()},
             succeeded=sum(v.succeeded for v in c.values()),
             failed=sum(v.failed for v in c.values()),
             rate_limited=sum(v.rate_limited for v in c.values()))
    return 0


def _url(runner: web.AppRunner, host: str) -> str:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            shown = f"[{addr[0]}]" if ":" in str(addr[0]) else addr[0]
            return f"http://{shown}:{addr[1]}/"
    return f"http://{host}/"


async def _listen_unix(runner: web.AppRunner, path: str) -> None:
    """Also listen on ``server.socket``, a Unix socket only its owner may use (0600): the
    CLI's way in, behind file permissions rather than a port anyone local can reach."""
    old = os.umask(0o177)
    try:
        await web.UnixSite(runner, path).start()
    except OSError as exc:
        raise MarketdError(f"cannot listen on server.socket {path}: {exc.strerror or exc} "
                           "(check the folder exists and is writable)") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
