"""The commands that take prices out of the database: ``prices`` (latest, ``--history``,
``--csv``), and the upkeep of what is kept (``prune``, ``enrich``). They read the database
directly, whether or not the daemon runs, and never create one."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from marketd.cli_base import EXIT_OK, UsageError, add_config, config_of, print_json, run
from marketd.cli_client import read_store
from marketd.clock import parse_iso
from marketd.config import Config
from marketd.models import (
    normalize_provider,
    normalize_size,
    normalize_size_system,
    normalize_sku,
    normalize_user_id,
    size_key,
)
from marketd.portfolio import fx_of
from marketd.views import history_view
from marketd.web_prices import PriceQuery, all_pages, csv_lines, export_view


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("prices", help="latest stored prices (--history: one price's changes)",
                       description="The latest price of every key (all of them: nothing is "
                                   "cut), or with --history the changes of one key's price, "
                                   "oldest first.")
    add_config(p)
    p.add_argument("--sku", action="append",
                   help="only this SKU (repeat for several; one with --history)")
    p.add_argument("--provider")
    p.add_argument("--user-id", help="only the keys this user's jobs asked for")
    p.add_argument("--size", help="UK size unless --size-system says otherwise")
    p.add_argument("--size-system", default="UK", help="UK (default), US or EU")
    p.add_argument("--history", action="store_true",
                   help="the history of one price (needs --provider and --sku; --size for a "
                        "sized product): a point per change, oldest first")
    p.add_argument("--since", metavar="TIME",
                   help="with --history: only points from this ISO-8601 time on")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON")
    out.add_argument("--csv", action="store_true",
                     help="print CSV as GET /prices.csv does (header, then every price)")
    add_upkeep_parsers(sub)


def add_upkeep_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("prune", help="delete rows older than [retention] keeps them",
                       description="Delete finished jobs, price history (each key keeps its "
                                   "newest point), scheduler runs, per-batch metrics and "
                                   "settled webhook deliveries older than [retention] says, "
                                   "a small transaction at a time (the daemon does the same "
                                   "daily). Safe beside a running daemon.")
    add_config(p)
    p.add_argument("--dry-run", action="store_true",
                   help="count what would be deleted; delete nothing")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("enrich", help="queue catalog look-ups for SKUs with no title",
                       description="For SKUs users asked for that no provider's catalog has "
                                   "named, queue one price fetch per provider and SKU at the "
                                   "lowest priority (40): its catalog look-up brings the "
                                   "title, brand, colourway and image. The daemon runs them "
                                   "with budget nothing else needs (it also does this "
                                   "hourly).")
    add_config(p)
    p.add_argument("--limit", type=int, default=100, help="at most this many look-ups")
    p.add_argument("--json", action="store_true", help="print JSON")


def _size(args: argparse.Namespace) -> str | None:
    if not args.size:
        return None
    return size_key(normalize_size(args.size, "--size"),
                    normalize_size_system(args.size_system, "--size-system"))


def _money(value: str | None) -> str:
    return value if value is not None else "-"


def cmd_prices(args: argparse.Namespace) -> int:
    config = config_of(args)
    provider = normalize_provider(args.provider, "--provider") if args.provider else None
    skus = sorted({normalize_sku(s, "--sku") for s in args.sku}) if args.sku else None
    size = _size(args)
    if args.history:
        if args.csv:
            raise UsageError("--history prints a table or --json, not --csv")
        if skus is not None and len(skus) > 1:
            raise UsageError("--history takes one --sku")
        return _history(config, args, provider, skus[0] if skus else None, size)
    if args.since:
        raise UsageError("--since goes with --history")
    user_id = normalize_user_id(args.user_id, "--user-id") if args.user_id else None
    query = PriceQuery(provider=provider, skus=skus, size=size, user_id=user_id, after=None)
    fx = fx_of(config)
    if args.csv:
        async def write_csv() -> None:
            header = True
            async with read_store(config) as store:
                async for rows in all_pages(query, store):
                    sys.stdout.write(csv_lines(rows, header=header, fx=fx).replace("\r\n", "\n"))
                    header = False
            if header:
                sys.stdout.write(csv_lines([], header=True, fx=fx).replace("\r\n", "\n"))

        run(write_csv())
        return EXIT_OK

    async def read() -> list[dict[str, Any]]:
        async with read_store(config) as store:
            return [export_view(r, fx) async for rows in all_pages(query, store) for r in rows]

    rows = run(read())
    if args.json:
        print_json({"prices": rows})
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


def _history(config: Config, args: argparse.Namespace, provider: str | None, sku: str | None,
             size: str | None) -> int:
    if provider is None or sku is None:
        raise UsageError("--history needs --provider and --sku (and --size for a sized "
                         "product)")
    since = None
    if args.since:
        try:
            since = parse_iso(args.since)
        except ValueError:
            raise UsageError(f"--since {args.since!r} is not an ISO-8601 time") from None

    async def read() -> list[dict[str, Any]]:
        async with read_store(config) as store:
            return [history_view(r) for r in await store.price_history(
                provider, sku, size, since=since)]

    points = run(read())
    if args.json:
        print_json({"provider": provider, "sku": sku, "size": size, "history": points})
        return EXIT_OK
    key = f"{provider}|{sku}|{size or ''}"
    if not points:
        print(f"no history for {key}")
        return EXIT_OK
    print(f"history of {key} (a line per change, oldest first)")
    print(f"{'since':24} {'ask':>10} {'bid':>10} {'last':>10}  currency")
    for r in points:
        print(f"{r['fetched_at']:24} {_money(r['lowest_ask']):>10} "
              f"{_money(r['highest_bid']):>10} {_money(r['last_sale']):>10}  {r['currency']}")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    from marketd.retention import prune

    config = config_of(args)

    async def go() -> dict[str, Any]:
        async with read_store(config) as store:
            started = time.monotonic()
            report = await prune(store, config.retention, store.clock.now(),
                                 dry_run=args.dry_run)
            stats = await store.database_stats()
            return {"dry_run": args.dry_run, "seconds": round(time.monotonic() - started, 3),
                    "kinds": report, "database": stats}

    result = run(go())
    if args.json:
        print_json(result)
        return EXIT_OK
    verb = "would delete" if args.dry_run else "deleted"
    for kind, r in result["kinds"].items():
        if r["before"] is None:
            print(f"{kind:8} kept forever (retention.{kind}_days = 0)")
        else:
            print(f"{kind:8} {verb} {r['rows']} row(s) older than {r['before']} "
                  f"({r['days']:g} days)")
    db = result["database"]
    wal = f", WAL {db['wal_bytes'] / 1048576:.1f} MiB" if db["wal_bytes"] is not None else ""
    print(f"database {db['size_bytes'] / 1048576:.1f} MiB{wal}")
    return EXIT_OK


def cmd_enrich(args: argparse.Namespace) -> int:
    from marketd.enrich import enqueue_enrichment

    config = config_of(args)
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")

    async def go() -> list[dict[str, Any]]:
        async with read_store(config) as store:
            return await enqueue_enrichment(store, limit=args.limit, retry_after_s=0)

    queued = run(go())
    if args.json:
        print_json({"queued": queued})
        return EXIT_OK
    if not queued:
        print("nothing to enrich: every cached catalog answer of a SKU users asked for names "
              "it (look-ups queued before are pending: marketd status)")
        return EXIT_OK
    for q in queued:
        print(f"{q['provider']:7} {q['sku']:16} look-up queued ({q['status']})")
    print(f"{len(queued)} look-up(s) queued at priority 40; the daemon runs them with spare "
          "budget")
    return EXIT_OK


COMMANDS = {
    "prices": cmd_prices,
    "prune": cmd_prune,
    "enrich": cmd_enrich,
}
