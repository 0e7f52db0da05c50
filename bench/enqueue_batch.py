"""Enqueue over HTTP, 1,000 jobs per request, against raw sqlite3 executemany of the same upsert.

marketd: the real daemon (``Daemon.create`` + ``web.create_app``) served by an aiohttp
AppRunner on loopback, a real SQLite file, requests sent one after another from an aiohttp
client in the same process (bodies serialised beforehand). Every job is new (an insert).

Baseline: a plain ``sqlite3`` connection to a database with the same schema and pragmas (WAL,
synchronous=NORMAL) running ``executemany`` of the same ``INSERT ... ON CONFLICT (dedupe_key)
... DO UPDATE`` with 1,000 rows per ``BEGIN IMMEDIATE`` ... ``COMMIT``, rows built beforehand.

Rounds alternate baseline and marketd; the ratio is of the medians. Goal: >= 0.6x.

    python -m bench.enqueue_batch [--quick]
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import (
    Report,
    build_jobs_db,
    instant_provider_factory,
    iso_at,
    make_config,
    median,
    parser,
    quiet_logging,
)

BATCH = 1000
UPSERT = """
INSERT INTO market_jobs
    (id, user_id, provider, sku, size, size_system, priority, status, dedupe_key, created_at)
VALUES (?, NULL, ?, ?, ?, 'UK', ?, 'pending', ?, ?)
ON CONFLICT (dedupe_key) WHERE status IN ('pending', 'running')
DO UPDATE SET priority = max(market_jobs.priority, excluded.priority), updated_at = ?
"""
SIZES = ("6", "7", "8", "9", "10")


def batch_jobs(round_no: int, req: int, tag: str) -> list[dict[str, Any]]:
    return [{"provider": "stockx", "sku": f"{tag}{round_no:02d}-{req:04d}-{i // 5:04d}",
             "size": SIZES[i % 5], "priority": 100} for i in range(BATCH)]


def raw_round(path: Path, round_no: int, requests: int) -> float:
    """Jobs per second of raw executemany, one transaction per 1,000 rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    now = iso_at(time.time())
    batches = [[(str(uuid.uuid4()), j["provider"], j["sku"], j["size"], j["priority"],
                 f"stockx|{j['sku']}|{j['size']}", now, now)
                for j in batch_jobs(round_no, r, "R")] for r in range(requests)]
    t0 = time.perf_counter()
    for rows in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(UPSERT, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return requests * BATCH / elapsed


async def http_round(session: Any, url: str, round_no: int, requests: int) -> float:
    bodies = [json.dumps({"jobs": batch_jobs(round_no, r, "H")}).encode()
              for r in range(requests)]
    t0 = time.perf_counter()
    for body in bodies:
        async with session.post(url, data=body,
                                headers={"Content-Type": "application/json"}) as resp:
            answer = await resp.read()  # checked, not decoded: the client's cost stays low
            if resp.status != 202 or answer.count(b'"dedupe_key"') != BATCH:
                raise RuntimeError(f"enqueue answered {resp.status}: {answer[:200]!r}")
    return requests * BATCH / (time.perf_counter() - t0)


async def run(args: Any) -> Report:
    import aiohttp
    from aiohttp import web

    from marketd.app import create_daemon
    from marketd.web import create_app

    rounds, requests = (2, 2) if args.quick else (5, 10)
    report = Report("enqueue_batch", args.quick,
                    params={"jobs_per_request": BATCH, "requests_per_round": requests,
                            "rounds": rounds})
    quiet_logging()
    with tempfile.TemporaryDirectory(prefix="marketd-bench-") as tmp:
        raw_db = Path(tmp) / "raw.db"
        build_jobs_db(raw_db, 0)
        config = make_config(Path(tmp) / "marketd.db", providers={"stockx": {}})
        daemon = await create_daemon(config, clients={"stockx": instant_provider_factory()})
        runner = web.AppRunner(create_app(daemon), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/enqueue"
        raw_rates, http_rates = [], []
        try:
            async with aiohttp.ClientSession() as session:
                await http_round(session, url, 99, 1)  # warm-up (imports, statement cache)
                for r in range(rounds):
                    raw_rates.append(raw_round(raw_db, r, requests))
                    http_rates.append(await http_round(session, url, r, requests))
                    report.add(round=r + 1, raw_jobs_s=raw_rates[-1],
                               http_jobs_s=http_rates[-1],
                               ratio=http_rates[-1] / raw_rates[-1])
        finally:
            await runner.cleanup()
            await daemon.close()
    raw, http = median(raw_rates), median(http_rates)
    report.add(round="median", raw_jobs_s=raw, http_jobs_s=http, ratio=http / raw)
    report.extra["baseline_jobs_s"] = raw
    report.extra["marketd_jobs_s"] = http
    report.goal("HTTP 1,000/request vs raw executemany (jobs/s)", http / raw, 0.6,
                higher_is_better=True)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    report = asyncio.run(run(args))
    report.finish(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
