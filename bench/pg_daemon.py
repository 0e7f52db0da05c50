"""One marketd daemon as its own process, for bench/postgres.py: ``marketd.app.serve`` itself
(HTTP, scheduler, shutdown) with the instant provider of bench._common for each of stockx, alias
and ebay (the same limit for each, 1,000,000/hour by default; ``--providers`` enables fewer),
on SQLite (``--path``) or PostgreSQL (``--url``).

Speaks over its stdin and stdout, one JSON line each:

- on ready it prints ``{"url": "http://127.0.0.1:PORT", "pid": PID}``;
- ``drain`` (a line on stdin): scheduler runs (``run_once("interval")``, as bench/end_to_end.py
  does) until one claims nothing (the queue is empty, or another daemon runs every provider
  this one would), then prints ``{"runs", "jobs", "seconds"}``. With several daemons on one
  database, bench/postgres.py tells every one to drain and waits for all, then looks at the
  job counts itself (and drains again if any job is still pending or running): right
  whether every daemon runs batches or one holds each provider's lane, and no daemon polls
  the database while another works;
- ``profile PATH``: the next drain runs under pyinstrument, its text written to PATH;
- ``quit`` or end of input: graceful stop (as SIGTERM), exit 0.

    python -m bench.pg_daemon --url postgresql://postgres@127.0.0.1:5432/db
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from bench._common import instant_provider_factory, quiet_logging

PROVIDERS = ("stockx", "alias", "ebay")


def config(url: str | None, path: str | None, limit: str,
           providers: tuple[str, ...] = PROVIDERS) -> Any:
    from marketd.config import parse_config

    database = {"url": url} if url else {"path": path}
    return parse_config({
        "database": database, "server": {"host": "127.0.0.1", "port": 0},
        "providers": {p: {"enabled": p in providers, "limits": [limit]} for p in PROVIDERS},
        # every job is new: never answered as fresh; the interval run only at start-up
        "scheduler": {"fresh_for_seconds": 0, "interval_seconds": 86400}}, env={})


async def drain(daemon: Any, profile_to: str | None) -> dict[str, Any]:
    """Scheduler runs until one claims nothing (the queue is empty, or this daemon holds no
    provider's lane)."""
    prof = None
    if profile_to:
        from pyinstrument import Profiler

        prof = Profiler(interval=0.0005, async_mode="disabled")
        prof.start()
    t0 = time.perf_counter()
    runs = jobs = 0
    while True:
        summary = await daemon.scheduler.run_once("interval")
        runs += 1
        n = summary.total("batch_size")
        if not n:
            break
        jobs += n
    seconds = time.perf_counter() - t0
    if prof is not None:
        prof.stop()
        with open(profile_to, "w") as f:
            f.write(prof.output_text(unicode=False, show_all=False))
    return {"runs": runs, "jobs": jobs, "seconds": seconds}


async def main_async(args: argparse.Namespace) -> int:
    from marketd.app import serve

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    ready: asyncio.Future[Any] = loop.create_future()

    def on_ready(daemon: Any, url: str) -> None:
        ready.set_result(daemon)
        print(json.dumps({"url": url, "pid": os.getpid()}), flush=True)

    async def commands() -> None:
        try:
            daemon = await ready
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                         sys.stdin)
            profile_to = None
            while line := (await reader.readline()).decode().strip():
                if line == "drain":
                    out = await drain(daemon, profile_to)
                    profile_to = None
                    print(json.dumps(out), flush=True)
                elif line.startswith("profile "):
                    profile_to = line.split(" ", 1)[1]
                elif line == "quit":
                    break
        finally:
            stop.set()  # a failed drain stops the daemon too: the bench sees it exit

    task = asyncio.create_task(commands())
    try:
        return await serve(config(args.url, args.path, args.limit, tuple(args.providers)),
                           clients={p: instant_provider_factory() for p in PROVIDERS},
                           stop_event=stop,
                           on_ready=on_ready)
    finally:
        task.cancel()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a PostgreSQL database URL")
    where.add_argument("--path", help="an SQLite database file")
    p.add_argument("--limit", default="1000000/hour")
    p.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS),
                   help="the providers enabled (default all three)")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    quiet_logging(args.log_level)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
