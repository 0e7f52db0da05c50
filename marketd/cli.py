"""The ``marketd`` command line.

Exit status: 0 success, 2 bad usage or bad configuration, 1 any other failure. Errors go to
stderr as one line that says what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from marketd import __version__, cli_ops
from marketd.cli_base import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_json,
    apply_env_file,
    config_of,
    print_json,
)
from marketd.cli_base import add_config as _add_config
from marketd.cli_base import run as _run
from marketd.clock import Clock
from marketd.config import Config
from marketd.errors import ConfigError, MarketdError, StoreError, ValidationError
from marketd.logs import configure_logging
from marketd.models import PROVIDERS


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (subcommand parsers inherit this class)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


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
    p.add_argument("--dry-run", action="store_true",
                   help="list the migrations that would run; change (and create) nothing")
    add_json(p)

    cli_ops.add_parsers(sub)

    p = sub.add_parser("check-config", help="validate a config file")
    _add_config(p)
    add_json(p)
    p.add_argument("--strict", action="store_true",
                   help="treat warnings (e.g. an enabled provider without credentials) as "
                        "errors: exit 2")

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
        apply_env_file(getattr(args, "env_file", None))
        # a one-shot command's output is its result: the library's events go to stderr, and
        # only warnings (serve, demo and doctor set their own)
        configure_logging("warning", "console")
        return handler(args)
    except BrokenPipeError:
        # the reader went away (`marketd prices | head -n 1`): stop quietly; stdout is pointed
        # at /dev/null so the interpreter's last flush cannot complain either
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except ConfigError as exc:
        for key, message in exc.problems:
            print(f"marketd: config: {key}: {message}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, ValidationError) as exc:
        print(f"marketd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        hint = "" if "marketd migrate" in str(exc) or "marketd database" in str(exc) else \
            " (check database.path and its permissions, or database.url)"
        print(f"marketd: {exc}{hint}", file=sys.stderr)
        return EXIT_FAIL
    except MarketdError as exc:
        print(f"marketd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return EXIT_OK


def _config(args: argparse.Namespace) -> Config:
    return config_of(args)


# ---- commands ------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from marketd.app import serve

    config = _config(args)
    configure_logging(config.logging.level, config.logging.format, cache=True)
    return _run(serve(config))


def cmd_demo(args: argparse.Namespace) -> int:
    from marketd.demo import run_demo

    return _run(run_demo(port=args.port, db=args.db, sim_port=args.sim_port))


def cmd_migrate(args: argparse.Namespace) -> int:
    from marketd.store import open_store

    config = _config(args)
    if args.to is not None:
        return _migrate_to(config, args.to)

    if args.dry_run:
        return _migrate_dry_run(config, args.json)

    async def go() -> int:
        store = await open_store(config.database, migrate=False)
        try:
            applied = await store.migrate()
        finally:
            await store.close()
        backup = getattr(store, "migration_backup", None)
        if args.json:
            print_json({"database": config.database.where, "applied": applied,
                        "backup": backup})
            return EXIT_OK
        print(f"{config.database.where}: " + (
            f"applied migrations {', '.join(map(str, applied))}" if applied else "up to date")
            + (f" (the schema before is backed up in {backup})" if backup else ""))
        return EXIT_OK

    return _run(go())


def _migrate_dry_run(config: Config, as_json: bool) -> int:
    """``migrate --dry-run``: what would run, from the database as it is (none is created)."""
    from pathlib import Path

    from marketd import sql
    from marketd.store import open_store

    if not config.database.url and not Path(config.database.path).exists():
        pending = [v for v, _, _ in sql.migrations()]
        note = "would create it"
    else:
        async def go() -> list[int]:
            store = await open_store(config.database, migrate=False)
            try:
                return await store.migrate(dry_run=True)
            finally:
                await store.close()

        pending = _run(go())
        note = "would apply" if pending else "up to date"
    if as_json:
        print_json({"database": config.database.where, "pending": pending, "dry_run": True})
    else:
        print(f"{config.database.where}: {note}" + (
            f" (migrations {', '.join(map(str, pending))})" if pending else "")
            + "; nothing changed (--dry-run)")
    return EXIT_OK


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


def cmd_check_config(args: argparse.Namespace) -> int:
    from marketd.config_providers import LIMITS_SOURCE, PROVIDER_COMMON, missing_documented_limits
    from marketd.doctor import credential_warnings

    config = _config(args)
    warnings: list[tuple[str, str]] = []
    limits: dict[str, dict[str, Any]] = {}
    for pc in config.enabled_providers():
        texts = [lim.text for lim in pc.limits]
        origin = "default" if texts == PROVIDER_COMMON[pc.name]["limits"] else "configured"
        limits[pc.name] = {"limits": texts, "origin": origin, "source": LIMITS_SOURCE[pc.name]}
        missing = missing_documented_limits(pc.name, pc.limits)
        if missing:
            warnings.append((f"providers.{pc.name}.limits",
                             f"lacks {pc.name}'s documented {' and '.join(missing)}: calls sent "
                             f"back to back will meet 429s; add "
                             f"{', '.join(repr(m) for m in missing)} to the list"))
        warnings += credential_warnings(pc)
    if args.strict and warnings:
        for key, message in warnings:
            print(f"marketd: config: {key}: {message}", file=sys.stderr)
        print(f"marketd: check-config --strict: {len(warnings)} warning(s) above",
              file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print_json({"ok": True, "source": config.source, "database": config.database.where,
                    "providers": limits,
                    "warnings": [{"key": k, "message": m} for k, m in warnings]})
        return EXIT_OK
    enabled = ", ".join(f"{name} ({', '.join(v['limits'])})" for name, v in limits.items())
    print(f"ok: {config.source or 'built-in defaults'}; providers: {enabled or 'none'}; "
          f"database: {config.database.where}")
    for name, v in limits.items():
        print(f"{name}: limits in force: {', '.join(v['limits'])} ({v['origin']}; "
              f"{v['source']})")
    for key, message in warnings:
        print(f"warning: {key}: {message}")
    return EXIT_OK


def cmd_auth(args: argparse.Namespace) -> int:
    from marketd.providers.stockx_auth import run_auth_flow
    from marketd.store import open_store

    config = _config(args)
    pc = config.providers["stockx"]
    if not pc.option("client_id") or not pc.option("client_secret"):
        raise UsageError("set STOCKX_CLIENT_ID and STOCKX_CLIENT_SECRET (or providers.stockx."
                         "client_id/client_secret) first")
    from marketd.cli_client import require_database

    require_database(config)  # the token goes into the service's database: never a new one

    async def go() -> int:
        store = await open_store(config.database, Clock(), migrate=False)
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


def _run_forever(factory: Callable[[], Coroutine[Any, Any, None]]) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(factory())
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "demo": cmd_demo,
    "migrate": cmd_migrate,
    "check-config": cmd_check_config,
    "auth": cmd_auth,
    "simulator": cmd_simulator,
    **cli_ops.COMMANDS,
}


