"""The commands an operator runs against a database or a running daemon: enqueue, trigger,
status, reset-failed, prices, backup, doctor, and print (the files marketd ships)."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from marketd import cli_data
from marketd.cli_base import (
    EXIT_FAIL,
    EXIT_OK,
    UsageError,
    add_config,
    add_json,
    config_of,
    print_json,
    run,
)
from marketd.models import PROVIDERS, parse_job

# `marketd print NAME`: the files the wheel ships (marketd/data), by the name an operator types
SHIPPED = {
    "unit": "marketd.service",
    "config": "config.example.toml",
    "trigger-service": "marketd-trigger.service",
    "trigger-timer": "marketd-trigger.timer",
    "readme": "README.md",
}
INSTALL_PREFIX = "/opt/marketd"


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("enqueue", help="enqueue one job")
    add_config(p)
    p.add_argument("--provider", required=True, help=f"one of {', '.join(PROVIDERS)}")
    p.add_argument("--sku", required=True)
    p.add_argument("--size", help="UK size unless --size-system says otherwise")
    p.add_argument("--size-system", default="UK", help="UK (default), US or EU")
    p.add_argument("--priority", default="background",
                   help="manual, hot, background (default) or an integer 0-1000")
    p.add_argument("--user-id")
    p.add_argument("--json", action="store_true", help="print JSON (the default here)")

    p = sub.add_parser("trigger", help="ask the running daemon for one scheduler run now")
    add_config(p)
    p.add_argument("--json", action="store_true", help="print JSON (the default here)")
    p.add_argument("--progress", type=float, default=5.0, metavar="SECONDS",
                   help="while the run lasts, print the queue to stderr every SECONDS "
                        "(default 5; 0: never)")
    p.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS",
                   help="give up waiting after SECONDS (default 0: as long as the run takes)")

    p = sub.add_parser("status", help="budgets, job counts and recent runs")
    add_config(p)
    add_json(p)

    p = sub.add_parser("reset-failed", help="move failed jobs back to pending")
    add_config(p)
    p.add_argument("--provider")
    add_json(p)

    cli_data.add_parsers(sub)  # prices (--history, --csv), prune, enrich

    p = sub.add_parser("backup", help="consistent copy of the live database")
    add_config(p)
    p.add_argument("path", help="new file to write (its folder must exist)")
    add_json(p)

    p = sub.add_parser(
        "doctor", help="check config, database, credentials, clock and daemon; say what to fix",
        description="Checks the config; the database (integrity, size, free disk, schema); "
                    "each enabled provider's credentials with one cheap authenticated call "
                    "that spends a budget token like any other (--offline: none); the clock; "
                    "and the daemon's /healthz.",
        epilog="Exit status: 0 nothing failed (warnings allowed), 1 something failed, 2 bad "
               "config.")
    add_config(p)
    add_json(p)
    p.add_argument("--offline", action="store_true",
                   help="make no provider call (credentials are only checked for presence)")

    p = sub.add_parser("print", help="print a file marketd ships (systemd units, example "
                                     "config, README)")
    p.add_argument("name", choices=sorted(SHIPPED),
                   help="unit: marketd.service; config: config.example.toml; trigger-service "
                        "and trigger-timer: the /trigger timer; readme: README.md")
    sub.add_parser("print-unit", help="the systemd unit (same as: print unit)")
    sub.add_parser("print-config", help="the example config (same as: print config)")


# ---- commands ------------------------------------------------------------------------------


def cmd_enqueue(args: argparse.Namespace) -> int:
    from marketd import cli_client as client

    config = config_of(args)
    spec = parse_job({"provider": args.provider, "sku": args.sku, "size": args.size,
                      "size_system": args.size_system, "priority": args.priority,
                      "user_id": args.user_id})
    result = run(client.enqueue(config, spec))
    print(json.dumps(result))
    return EXIT_OK


def cmd_trigger(args: argparse.Namespace) -> int:
    from marketd import cli_client as client

    config = config_of(args)

    def progress(line: str) -> None:
        print(f"marketd: {line}", file=sys.stderr, flush=True)

    summary = run(client.trigger(config, progress=progress if args.progress > 0 else None,
                                 every_s=args.progress,
                                 timeout_s=args.timeout if args.timeout > 0 else None))
    print_json(summary)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from marketd import cli_client as client

    config = config_of(args)
    data = run(client.status(config))
    if args.json:
        print_json(data)
    else:
        print(client.format_status(data))
    return EXIT_OK


def cmd_reset_failed(args: argparse.Namespace) -> int:
    from marketd import cli_client as client
    from marketd.models import normalize_provider

    config = config_of(args)
    provider = normalize_provider(args.provider, "--provider") if args.provider else None
    n = run(client.reset_failed(config, provider))
    if args.json:
        print_json({"reset": n, "provider": provider})
    else:
        print(f"{n} failed job(s) moved back to pending")
    return EXIT_OK


def cmd_backup(args: argparse.Namespace) -> int:
    from marketd.cli_client import require_database
    from marketd.clock import Clock
    from marketd.store import open_store

    config = config_of(args)
    target = Path(args.path)
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent} is not a folder: create it first, or name a file in "
                         "an existing one")
    require_database(config)

    async def go() -> None:
        store = await open_store(config.database, Clock(), migrate=False)
        try:
            await store.backup(str(target))
        finally:
            await store.close()

    run(go())
    if args.json:
        print_json({"database": config.database.where, "backup": str(target),
                    "bytes": target.stat().st_size})
    else:
        print(f"backed up {config.database.where} to {target}")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from marketd.doctor import format_report, run_doctor
    from marketd.logs import configure_logging

    config = config_of(args)
    configure_logging("warning", "console")  # the clients' own events stay out of the report
    report = run(run_doctor(config, offline=args.offline))
    if args.json:
        print_json(report.as_dict())
    else:
        print(format_report(report))
    return EXIT_FAIL if report.failed else EXIT_OK


def cmd_print(args: argparse.Namespace) -> int:
    name = {"print-unit": "unit", "print-config": "config"}.get(args.command) or args.name
    text = resources.files("marketd").joinpath("data", SHIPPED[name]).read_text("utf-8")
    if name != "readme":
        text = _for_this_install(text)
    sys.stdout.write(text)
    return EXIT_OK


def _for_this_install(text: str) -> str:
    """A unit names /opt/marketd/bin/marketd: a marketd installed elsewhere (another venv,
    pipx) gets its own path in what it prints, so the unit it prints runs it."""
    here = Path(sys.prefix)
    if str(here) == INSTALL_PREFIX or not (here / "bin" / "marketd").exists():
        return text
    return text.replace(f"{INSTALL_PREFIX}/bin/", f"{here}/bin/").replace(
        f"file://{INSTALL_PREFIX}/", f"file://{here}/")


COMMANDS = {
    "enqueue": cmd_enqueue,
    "trigger": cmd_trigger,
    "status": cmd_status,
    "reset-failed": cmd_reset_failed,
    **cli_data.COMMANDS,
    "backup": cmd_backup,
    "doctor": cmd_doctor,
    "print": cmd_print,
    "print-unit": cmd_print,
    "print-config": cmd_print,
}
