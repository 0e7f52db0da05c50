"""The ``marketd`` command line.

Exit status: 0 success, 2 bad usage or bad configuration, 1 any other failure. Errors go to
stderr as one line that says what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn, TypeVar

from marketd import __version__
from marketd.clock import Clock
from marketd.config import Config, load_config
from marketd.errors import ConfigError, MarketdError, StoreError, ValidationError
from marketd.logs import configure_logging
from marketd.models import PROVIDERS, parse_job

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")


class UsageError(Exception):
    """Bad flags or arguments (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (subcommand parsers inherit this class)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE",
                   help="config file (default: $MARKETD_CONFIG, else built-in defaults)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="marketd",
        description="Rate-limit-aware market-data fetcher for StockX, Alias and eBay.",
        epilog="Run 'marketd demo' to try it with the built-in provider simulator.",
    )
    parser.add_argument("--version", action="version", version=f"marketd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run the daemon in the foreground until SIGTERM/SIGINT")
    _add_config(p)

    p = sub.add_parser("demo", help="run everything on embedded defaults and the simulator")
    p.add_argument("--port", type=int, default=8787, help="status page port (default 8787)")
    p.add_argument("--db", metavar="PATH", help="database file (default: a temporary folder)")
    p.add_argument("--sim-port", type=int, default=0,
                   help="simulator port (default: any free port)")

    p = sub.add_parser(
        "migrate", help="create or upgrade the database schema (--to: copy SQLite to PostgreSQL)",
        description="Create or upgrade the schema of the configured database. With --to, copy "
                    "the configured SQLite database (stopped: no daemon may have it open) into "
                    "an empty PostgreSQL database: its schema is migrated first, then jobs, "
                    "prices and history, catalog, tokens, wanted keys, budgets, runs, metrics, "
                    "queue samples, provider state and the calls still inside their windows "
                    "are copied in one transaction, and the counts are checked table by table.",
        epilog="Then point the config at PostgreSQL ([database] url = \"postgresql://...\", "
               "without path) and start the daemons. Exit status: 0 copied, 2 refused (no "
               "SQLite file, daemon running, target not empty, bad URL), 1 failed (rolled "
               "back).")
    _add_config(p)
    p.add_argument("--to", metavar="URL",
                   help="copy into this empty PostgreSQL database "
                        "(postgresql://user@host:port/dbname) instead")

    p = sub.add_parser("enqueue", help="enqueue one job")
    _add_config(p)
    p.add_argument("--provider", required=True, help=f"one of {', '.join(PROVIDERS)}")
    p.add_argument("--sku", required=True)
    p.add_argument("--size", help="UK size unless --size-system says otherwise")
    p.add_argument("--size-system", default="UK", help="UK (default), US or EU")
    p.add_argument("--priority", default="background",
                   help="manual, hot, background (default) or an integer 0-1000")
    p.add_argument("--user-id")

    p = sub.add_parser("trigger", help="ask the running daemon for one scheduler run now")
    _add_config(p)

    p = sub.add_parser("status", help="budgets, job counts and recent runs")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("reset-failed", help="move failed jobs back to pending")
    _add_config(p)
    p.add_argument("--provider")

    p = sub.add_parser("prices", help="latest stored prices")
    _add_config(p)
    p.add_argument("--sku")
    p.add_argument("--provider")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("check-config", help="validate a config file")
    _add_config(p)

    p = sub.add_parser("auth", help="one-time browser sign-in for a provider (stockx)")
    p.add_argument("provider", choices=["stockx"])
    _add_config(p)
    p.add_argument("--port", type=int, default=8788, help="loopback port for the redirect")

    p = sub.add_parser("simulator", help="run the provider simulator alone")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8789)
    p.add_argument("--limit", action="append", default=[], metavar="PROVIDER=LIMIT",
                   help="enforce a rolling limit, e.g. stockx=20/10s (repeatable; replaces "
                        "that provider's default limits)")
    p.add_argument("--latency-ms", action="append", default=[], metavar="PROVIDER=MS",
                   help="answer each call of that provider after MS milliseconds")
    p.add_argument("--fault-rate", action="append", default=[], metavar="PROVIDER=P",
                   help="probability (0-1) that a call gets the provider's usual 5xx")
    p.add_argument("--seed", type=int, default=0, help="price drift and fault seed")

    p = sub.add_parser("backup", help="consistent copy of the live database")
    _add_config(p)
    p.add_argument("path", help="new file to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    except UsageError as exc:
        print(f"{exc}", file=sys.stderr)
        return EXIT_USAGE
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        for key, message in exc.problems:
            print(f"marketd: config: {key}: {message}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, ValidationError) as exc:
        print(f"marketd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"marketd: {exc} (check database.path and its permissions, or database.url)",
              file=sys.stderr)
        return EXIT_FAIL
    except MarketdError as exc:
        print(f"marketd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return EXIT_OK


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


# ---- commands ------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from marketd.app import serve

    config = _config(args)
    configure_logging(config.logging.level, config.logging.format)
    return _run(serve(config))


def cmd_demo(args: argparse.Namespace) -> int:
    from marketd.demo import run_demo

    return _run(run_demo(port=args.port, db=args.db, sim_port=args.sim_port))


def cmd_migrate(args: argparse.Namespace) -> int:
    from marketd.store import open_store

    config = _config(args)
    if args.to is not None:
        return _migrate_to(config, args.to)

    async def go() -> int:
        store = await open_store(config.database, migrate=False)
        try:
            applied = await store.migrate()
        finally:
            await store.close()
        print(f"{config.database.where}: " + (
            f"applied migrations {', '.join(map(str, applied))}" if applied else "up to date"))
        return EXIT_OK

    return _run(go())


def _migrate_to(config: Config, url: str) -> int:
    """``migrate --to``: the configured SQLite database copied into PostgreSQL."""
    from urllib.parse import urlsplit

    from marketd.config import redact_url

    if config.database.url:
        raise UsageError("migrate --to copies the SQLite database of the config, but it names "
                         f"database.url ({config.database.where}); give the SQLite config "
                         "(database.path), and unset MARKETD_DATABASE_URL")
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise UsageError(f"--to {redact_url(url)!r}: write postgresql://user@host:port/dbname")
    try:
        from marketd.store.transfer import Refused, TransferError, transfer
    except ImportError as exc:
        raise UsageError(f"migrate --to needs asyncpg ({exc}): pip install 'marketd[postgres]'"
                         ) from None
    windows = {p.name: max((lim.window_s for lim in p.limits), default=0.0)
               for p in config.providers.values()}

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        report = _run(transfer(config.database.path, url, windows=windows, progress=progress))
    except Refused as exc:
        raise UsageError(str(exc)) from None
    except TransferError as exc:
        print(f"marketd: copy failed, rolled back (the PostgreSQL database holds no rows): {exc}",
              file=sys.stderr)
        return EXIT_FAIL
    except StoreError as exc:  # the target cannot be reached or migrated: nothing copied
        print(f"marketd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    schema = (f"migrations {', '.join(map(str, report.migrations))} applied"
              if report.migrations else "up to date")
    print(f"copied {report.source} -> {report.target} (schema: {schema})")
    for t in report.tables:
        note = f" (of {t.source_rows}: older calls are outside every window)" \
            if t.rows != t.source_rows else ""
        if t.left_out:
            note += f"; columns not in PostgreSQL, left out: {', '.join(t.left_out)}"
        print(f"  {t.table:26} {t.rows:>10} rows{note}")
    for name in report.skipped_tables:
        print(f"  {name:26} {'-':>10} not in the PostgreSQL schema: not copied")
    rate = report.rows / report.seconds if report.seconds > 0 else 0.0
    print(f"  {'total':26} {report.rows:>10} rows in {len(report.tables)} tables, "
          f"{report.seconds:.1f} s ({rate:,.0f} rows/s); counts checked table by table")
    return EXIT_OK


def cmd_enqueue(args: argparse.Namespace) -> int:
    from marketd import client

    config = _config(args)
    spec = parse_job({"provider": args.provider, "sku": args.sku, "size": args.size,
                      "size_system": args.size_system, "priority": args.priority,
                      "user_id": args.user_id})
    result = _run(client.enqueue(config, spec))
    print(json.dumps(result))
    return EXIT_OK


def cmd_trigger(args: argparse.Namespace) -> int:
    from marketd import client

    config = _config(args)
    summary = _run(client.trigger(config))
    print(json.dumps(summary, indent=2))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from marketd import client

    config = _config(args)
    data = _run(client.status(config))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(client.format_status(data))
    return EXIT_OK


def cmd_reset_failed(args: argparse.Namespace) -> int:
    from marketd import client
    from marketd.models import normalize_provider

    config = _config(args)
    provider = normalize_provider(args.provider, "--provider") if args.provider else None
    n = _run(client.reset_failed(config, provider))
    print(f"{n} failed job(s) moved back to pending")
    return EXIT_OK


def cmd_prices(args: argparse.Namespace) -> int:
    from marketd import client
    from marketd.models import normalize_provider, normalize_sku

    config = _config(args)
    provider = normalize_provider(args.provider, "--provider") if args.provider else None
    sku = normalize_sku(args.sku, "--sku") if args.sku else None
    rows = _run(client.prices(config, provider, sku))
    if args.json:
        print(json.dumps({"prices": rows}, indent=2))
        return EXIT_OK
    if not rows:
        print("no prices stored yet")
        return EXIT_OK
    print(f"{'provider':8} {'sku':16} {'size':8} {'ask':>10} {'bid':>10} {'last':>10}  fetched")
    for r in rows:
        print(f"{r['provider']:8} {r['sku']:16} {r['size'] or '-':8} "
              f"{_money(r['lowest_ask']):>10} {_money(r['highest_bid']):>10} "
              f"{_money(r['last_sale']):>10}  {r['fetched_at']} {r['currency']}")
    return EXIT_OK


def _money(value: str | None) -> str:
    return value if value is not None else "-"


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    enabled = ", ".join(
        f"{p.name} ({', '.join(lim.text for lim in p.limits)})"
        for p in config.enabled_providers()) or "none"
    print(f"ok: {config.source or 'built-in defaults'}; providers: {enabled}; "
          f"database: {config.database.where}")
    from marketd.config import LIMITS_SOURCE, PROVIDER_COMMON, missing_documented_limits

    for pc in config.enabled_providers():
        texts = [lim.text for lim in pc.limits]
        origin = "default" if texts == PROVIDER_COMMON[pc.name]["limits"] else "configured"
        print(f"{pc.name}: limits in force: {', '.join(texts)} ({origin}; "
              f"{LIMITS_SOURCE[pc.name]})")
        missing = missing_documented_limits(pc)
        if missing:
            print(f"warning: providers.{pc.name}.limits lacks {pc.name}'s documented "
                  f"{' and '.join(missing)}: calls sent back to back will meet 429s; add "
                  f"{', '.join(repr(m) for m in missing)} to the list")
    return EXIT_OK


def cmd_auth(args: argparse.Namespace) -> int:
    from marketd.providers.stockx_auth import run_auth_flow
    from marketd.store import open_store

    config = _config(args)
    pc = config.providers["stockx"]
    if not pc.option("client_id") or not pc.option("client_secret"):
        raise UsageError("set STOCKX_CLIENT_ID and STOCKX_CLIENT_SECRET (or providers.stockx."
                         "client_id/client_secret) first")

    async def go() -> int:
        store = await open_store(config.database, Clock())
        try:
            await run_auth_flow(pc, store, port=args.port)
        finally:
            await store.close()
        print("stored the StockX refresh token in the database; `marketd serve` will use it")
        return EXIT_OK

    return _run(go())


def cmd_simulator(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from marketd.simulator import SimulatorOptions, run_simulator

    options = SimulatorOptions(seed=args.seed)
    changes: dict[str, dict[str, Any]] = {}
    for flag, key, convert in (("limit", "limits", str), ("latency_ms", "latency_ms", float),
                               ("fault_rate", "fault_rate", float)):
        for item in getattr(args, flag):
            name, sep, text = item.partition("=")
            if not sep or name not in PROVIDERS:
                raise UsageError(f"--{flag.replace('_', '-')} {item!r}: write PROVIDER=VALUE, "
                                 "e.g. stockx=20/10s")
            try:
                value = convert(text)
            except ValueError:
                raise UsageError(f"--{flag.replace('_', '-')} {item!r}: not a number") from None
            if key == "limits":
                changes.setdefault(name, {}).setdefault("limits", []).append(value)
            else:
                changes.setdefault(name, {})[key] = value
    try:
        for name, fields_ in changes.items():
            overrides: dict[str, Any] = {name: replace(options.provider(name), **fields_)}
            options = replace(options, **overrides)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def started(url: str) -> None:
        print(f"simulator listening on {url}/ (stats: {url}/_sim/stats)", flush=True)

    return _run_forever(lambda: run_simulator(args.host, args.port, options,
                                              on_started=started))


def cmd_backup(args: argparse.Namespace) -> int:
    from marketd.store import open_store

    config = _config(args)

    async def go() -> int:
        store = await open_store(config.database, Clock(), migrate=False)
        try:
            await store.backup(args.path)
        finally:
            await store.close()
        print(f"backed up {config.database.where} to {args.path}")
        return EXIT_OK

    return _run(go())


def _run_forever(factory: Callable[[], Coroutine[Any, Any, None]]) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(factory())
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "demo": cmd_demo,
    "migrate": cmd_migrate,
    "enqueue": cmd_enqueue,
    "trigger": cmd_trigger,
    "status": cmd_status,
    "reset-failed": cmd_reset_failed,
    "prices": cmd_prices,
    "check-config": cmd_check_config,
    "auth": cmd_auth,
    "simulator": cmd_simulator,
    "backup": cmd_backup,
}


