"""``marketd doctor``: one command that checks what a running marketd depends on and says
what to fix.

- the config (already parsed by the time this runs: a bad one is exit 2 before), and each
  enabled provider's credentials being present;
- the database: that it exists and holds a schema this version knows, ``PRAGMA
  integrity_check``, its size with the WAL, and the free disk beside it (SQLite); that it
  answers (PostgreSQL);
- each enabled provider's credentials, with one cheap authenticated call through the real
  client and the provider's :class:`~marketd.budget.ProviderBudget`: the call spends a budget
  token and is recorded like any other (``offline`` skips it);
- the clock: systemd-timesyncd/chrony's verdict (timedatectl), and the providers' own Date
  headers against ours (rolling windows and pause deadlines are epoch times);
- the daemon: ``GET /healthz``.
"""

from __future__ import annotations

import email.utils
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp

from marketd import __version__
from marketd.clock import iso
from marketd.config import SECRET_ENV, Config, ProviderConfig
from marketd.errors import (
    AuthError,
    BudgetExhausted,
    MarketdError,
    NotFound,
    RateLimited,
    StoreError,
)

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
# what each provider cannot work without (StockX's refresh token may live in the database,
# stored by `marketd auth stockx`, so only the call tells)
CREDENTIALS: dict[str, tuple[str, ...]] = {
    "stockx": ("api_key", "client_id", "client_secret"),
    "alias": ("api_token",),
    "ebay": ("client_id", "client_secret"),
}
PROBE_SKU = "DD1391-100"
CLOCK_SKEW_WARN_S = 5.0
FREE_DISK_MIN_BYTES = 200 * 1024 * 1024


@dataclass
class Check:
    name: str
    status: str  # ok, warn, fail, skip
    detail: str
    fix: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: str, detail: str, fix: str = "") -> None:
        self.checks.append(Check(name, status, detail, fix))

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": not self.failed, "checks": [asdict(c) for c in self.checks]}


def _env_name(provider: str, key: str) -> str:
    return SECRET_ENV.get(("providers", provider, key), "")


def missing_credentials(pc: ProviderConfig) -> list[str]:
    return [key for key in CREDENTIALS.get(pc.name, ()) if not pc.options.get(key)]


def credential_warnings(pc: ProviderConfig) -> list[tuple[str, str]]:
    """check-config's warning for an enabled provider without its credentials."""
    missing = missing_credentials(pc)
    if not missing:
        return []
    names = ", ".join(f"{_env_name(pc.name, k)} (providers.{pc.name}.{k})" for k in missing)
    return [(f"providers.{pc.name}",
             f"enabled without {names}: its calls will be refused and it will pause; set "
             f"them in the secrets file (EnvironmentFile), or set enabled = false")]


async def run_doctor(config: Config, *, offline: bool = False) -> Report:
    report = Report()
    report.add("config", OK, f"{config.source or 'built-in defaults'} parsed (marketd "
                             f"{__version__}); providers enabled: "
                             f"{', '.join(p.name for p in config.enabled_providers()) or 'none'}")
    db_ok = await _database(config, report)
    dates: list[tuple[str, float]] = []
    await _providers(config, report, db_ok=db_ok, offline=offline, dates=dates)
    _clock(report, dates)
    await _daemon(config, report)
    return report


# ---- database --------------------------------------------------------------------------------


async def _database(config: Config, report: Report) -> bool:
    from marketd.cli_client import require_database

    try:
        require_database(config)
    except StoreError as exc:
        report.add("database", FAIL, str(exc),
                   "start the service once (serve creates it) or run `marketd migrate`")
        return False
    if config.database.url:
        from marketd.store import open_store

        try:
            store = await open_store(config.database, migrate=False)
            try:
                ok = await store.ping()
            finally:
                await store.close()
        except MarketdError as exc:
            ok, detail = False, str(exc)
        else:
            detail = "answers" if ok else "does not answer"
        report.add("database", OK if ok else FAIL, f"{config.database.where} {detail}",
                   "" if ok else "check database.url, the server and its pg_hba.conf")
        return ok
    return _sqlite(Path(config.database.path), report)


def _sqlite(path: Path, report: Report) -> bool:
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.Error as exc:
        rows = [f"cannot check: {exc}"]
    if rows == ["ok"]:
        report.add("database", OK, f"{path}: integrity_check ok")
    else:
        report.add("database", FAIL, f"{path}: integrity_check: {'; '.join(rows[:3])}",
                   "stop marketd and restore the latest backup (README: Backups)")
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    free = shutil.disk_usage(path.parent).free
    need = 2 * size + FREE_DISK_MIN_BYTES  # a backup or a migration writes a copy
    report.add("disk", OK if free >= need else WARN,
               f"database {_mb(size)} (with its WAL); {_mb(free)} free in {path.parent}",
               "" if free >= need else f"free space: a backup needs {_mb(size)} more, and "
                                       "the database grows (README: Operations)")
    return rows == ["ok"]


def _mb(n: float) -> str:
    return f"{n / 1024 / 1024:,.1f} MiB"


# ---- providers -------------------------------------------------------------------------------


async def _providers(config: Config, report: Report, *, db_ok: bool, offline: bool,
                     dates: list[tuple[str, float]]) -> None:
    enabled = config.enabled_providers()
    if not enabled:
        report.add("providers", WARN, "no provider is enabled", "enable one in the config")
        return
    ready = []
    for pc in enabled:
        missing = missing_credentials(pc)
        if missing:
            report.add(f"provider {pc.name}", FAIL,
                       f"no {', '.join(_env_name(pc.name, k) for k in missing)}",
                       f"set it in /etc/marketd/secrets.env (or providers.{pc.name}."
                       f"{missing[0]}), or set providers.{pc.name}.enabled = false")
        else:
            ready.append(pc.name)
    if not ready:
        return
    if offline:
        for name in ready:
            report.add(f"provider {name}", SKIP, "credentials set; not called (--offline)")
        return
    if not db_ok:
        for name in ready:
            report.add(f"provider {name}", SKIP, "not called: every call is recorded in the "
                                                 "database, which failed its check")
        return
    await _probe_all(config, report, ready, dates)


async def _probe_all(config: Config, report: Report, names: list[str],
                     dates: list[tuple[str, float]]) -> None:
    from marketd.app import build_lanes
    from marketd.clock import Clock
    from marketd.providers.base import new_session
    from marketd.store import open_store

    trace = aiohttp.TraceConfig()

    async def on_end(session: Any, ctx: SimpleNamespace,
                     params: aiohttp.TraceRequestEndParams) -> None:
        when = email.utils.parsedate_to_datetime(params.response.headers.get("Date", "")) \
            if params.response.headers.get("Date") else None
        if when is not None:
            dates.append((params.url.host or "?", when.timestamp() - time.time()))

    trace.on_request_end.append(on_end)
    store = await open_store(config.database, Clock(), migrate=False)
    try:
        async with new_session(f"marketd/{__version__} (doctor)",
                               trace_configs=[trace]) as session:
            lanes = await build_lanes(config, store, store.clock, session)
            for name in names:
                lane = lanes[name]
                if lane.paused(store.clock.now()):
                    report.add(f"provider {name}", WARN,
                               f"paused until {iso(lane.paused_until or 0)}: "
                               f"{lane.pause_reason}", "not called while paused; see "
                               "`marketd status` and the log")
                    continue
                report.checks.append(await _probe(name, lane.client, config))
    finally:
        await store.close()


async def _probe(name: str, client: Any, config: Config) -> Check:
    """One counted, authenticated call: a catalog search for one SKU (eBay: one listing)."""
    pc = config.providers[name]
    base = pc.base_url.rstrip("/")
    requests: Mapping[str, tuple[str, dict[str, str], dict[str, str]]] = {
        "stockx": (f"{base}/v2/catalog/search",
                   {"query": PROBE_SKU, "pageNumber": "1", "pageSize": "1"}, {}),
        "alias": (f"{base}/api/v1/catalog", {"query": PROBE_SKU, "limit": "1"}, {}),
        "ebay": (f"{base}/buy/browse/v1/item_summary/search", {"q": PROBE_SKU, "limit": "1"},
                 {"X-EBAY-C-MARKETPLACE-ID": str(pc.options.get("marketplace") or "EBAY_GB")}),
    }
    url, params, headers = requests[name]
    check = f"provider {name}"
    started = time.monotonic()
    try:
        await client._request("GET", url, what="doctor probe", subject=PROBE_SKU, params=params,
                              headers=headers)
    except NotFound:
        pass  # the credentials were accepted; the SKU is simply not there
    except AuthError as exc:
        return Check(check, FAIL, f"credentials refused: {exc}",
                     f"check {exc.credential}" + (" (or run `marketd auth stockx` again)"
                                                  if name == "stockx" else ""))
    except BudgetExhausted as exc:
        return Check(check, WARN, f"not called: its budget is spent until {iso(exc.retry_at)}",
                     "run doctor again later, or `marketd status` for the budget")
    except RateLimited as exc:
        return Check(check, WARN, f"rate limited (429): {exc}",
                     "the key may be shared, or the limits are above the provider's")
    except MarketdError as exc:
        return Check(check, FAIL, f"call failed: {exc}",
                     f"check providers.{name}.base_url, the network and the provider's status")
    took = time.monotonic() - started
    return Check(check, OK, f"credentials accepted ({url.split('?')[0]} in {took:.1f} s; one "
                            "budget token spent)")


# ---- clock and daemon ----------------------------------------------------------------------


def _clock(report: Report, dates: list[tuple[str, float]]) -> None:
    synced = _timedatectl_synced()
    if dates:
        host, skew = max(dates, key=lambda d: abs(d[1]))
        ok = abs(skew) < CLOCK_SKEW_WARN_S
        report.add("clock", OK if ok and synced is not False else WARN,
                   f"{host}'s Date differs from ours by {skew:+.1f} s; NTP synchronised: "
                   f"{_yes_no(synced)}",
                   "" if ok and synced is not False else
                   "enable time sync (timedatectl set-ntp true): limit windows are clock times")
    elif synced is None:
        report.add("clock", SKIP, "no provider answered and timedatectl is not available")
    else:
        report.add("clock", OK if synced else WARN, f"NTP synchronised: {_yes_no(synced)}",
                   "" if synced else "timedatectl set-ntp true")


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def _timedatectl_synced() -> bool | None:
    tool = shutil.which("timedatectl")
    if tool is None:
        return None
    try:
        out = subprocess.run([tool, "show", "-p", "NTPSynchronized", "--value"],  # noqa: S603
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value) if out.returncode == 0 else None


async def _daemon(config: Config, report: Report) -> None:
    from marketd.cli_client import daemon_session, daemon_url

    # the way the CLI reaches it: over server.socket when one is configured, else TCP
    url = f"{daemon_url(config)}/healthz"
    where = f"{config.server.socket} (server.socket)" if config.server.socket else url
    try:
        async with daemon_session(config) as session, session.get(
                url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            body = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        report.add("daemon", FAIL, f"no answer from {where} ({type(exc).__name__})",
                   "systemctl status marketd; journalctl -u marketd -p warning")
        return
    if status == 200:
        report.add("daemon", OK, f"{where}: healthy")
    else:
        report.add("daemon", FAIL, f"{where} answered {status}: {body[:200]}",
                   "journalctl -u marketd -p warning names the failing part")


def format_report(report: Report) -> str:
    lines = []
    for c in report.checks:
        lines.append(f"{c.status.upper():4}  {c.name:16} {c.detail}")
        if c.fix:
            lines.append(f"      {'':16} fix: {c.fix}")
    lines.append("")
    lines.append("marketd doctor: " + (
        "something needs fixing (see fix: above)" if report.failed else
        "nothing failed" + (" (see the warnings)" if any(c.status == WARN
                                                        for c in report.checks) else "")))
    return "\n".join(lines)
