"""One scheduler run's selection at 10k and at 1M pending jobs, and against the bare SQL claim.

The tables are built with raw sqlite3 executemany into marketd's real schema (schema.sql: the
partial index market_jobs_pending and the others), 4 sizes per SKU, 5% manual, 15% hot, 80%
background. Each sample is one ``Store.claim("stockx", 50, max_skus=100)``, what
``Scheduler._provider_batch`` asks for with a fresh 100/hour budget; between samples the jobs
go back to pending through ``Store.record(Outcomes(deferred=...))`` (not timed), so every
sample walks the same index to the same depth under the same WAL traffic as a run does.

Bare SQL claim: a plain sqlite3 connection, ``BEGIN IMMEDIATE``; ``SELECT id ... ORDER BY
priority DESC, created_at, rowid LIMIT 50``; ``UPDATE ... SET status = 'running' WHERE id IN
(?, ...)``; ``COMMIT``.

Also recorded: the query plan of select_pending, and the time of every named query that touches
market_jobs on the 1M table (``backlog_queries``), so a query whose cost follows the backlog
shows up by name.

Goals: p50 at 1M within 1.5x of p50 at 10k; p99 within 3x p50 (at each size).

    python -m bench.selection [--quick] [--samples 200]
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import Report, build_jobs_db, iso_at, parser, pct, quiet_logging

BARE_SELECT = """
SELECT id FROM market_jobs
WHERE status = 'pending' AND provider = ? AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
ORDER BY priority DESC, created_at, rowid LIMIT 50
"""


async def store_samples(path: Path, samples: int) -> list[float]:
    """Claim latencies through the real Store."""
    from marketd.store import Defer, Outcomes, SQLiteStore

    store = await SQLiteStore.open(str(path))
    times: list[float] = []
    try:
        for i in range(samples + 20):
            t0 = time.perf_counter()
            jobs = await store.claim("stockx", 50, max_skus=100)
            dt = time.perf_counter() - t0
            if len(jobs) != 50:
                raise RuntimeError(f"claimed {len(jobs)} jobs, expected 50")
            await store.record(Outcomes(deferred=[Defer(j.id) for j in jobs]))
            if i >= 20:  # the first 20 warm the caches
                times.append(dt)
    finally:
        await store.close()
    return times


def bare_samples(path: Path, samples: int) -> list[float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 10000")
    times: list[float] = []
    for i in range(samples + 20):
        now = iso_at(time.time())
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        ids = [r[0] for r in conn.execute(BARE_SELECT, ("stockx", now))]
        conn.execute(f"UPDATE market_jobs SET status = 'running', started_at = ?, updated_at = ? "
                     f"WHERE id IN ({','.join('?' * len(ids))})", (now, now, *ids))
        conn.execute("COMMIT")
        dt = time.perf_counter() - t0
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"UPDATE market_jobs SET status = 'pending', started_at = NULL "
                     f"WHERE id IN ({','.join('?' * len(ids))})", ids)
        conn.execute("COMMIT")
        if i >= 20:
            times.append(dt)
    conn.close()
    return times


def backlog_queries(path: Path) -> dict[str, dict[str, Any]]:
    """Every named query over market_jobs, timed once on the big table inside a rolled-back
    transaction, with its plan (parameters: provider stockx, the manual priority, now)."""
    import json
    import re

    from marketd.store.sqlite.base import Q

    params = {"provider": "stockx", "now": iso_at(time.time()), "limit": 50, "offset": 0,
              "min_priority": 200, "priority": 100, "created_at": iso_at(time.time()),
              "ids": json.dumps(["J00000000001"]), "keys": json.dumps(["stockx|J00000000|6"]),
              "id": "J00000000001", "before": "2000", "error": "e", "next_attempt_at": None,
              "status": None, "sku": None, "size": None}
    conn = sqlite3.connect(path, isolation_level=None)
    out: dict[str, dict[str, Any]] = {}
    for name, q in Q.items():
        if "market_jobs" not in q or "enqueue_staging" in q or name == "job_by_id":
            continue
        p = {k: params.get(k) for k in set(re.findall(r":(\w+)", q))}
        try:
            plan = [r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + q, p)]
            conn.execute("BEGIN IMMEDIATE")
            t0 = time.perf_counter()
            conn.execute(q, p).fetchall()
            out[name] = {"ms": (time.perf_counter() - t0) * 1000, "plan": plan}
        except sqlite3.Error as exc:
            out[name] = {"ms": float("nan"), "error": str(exc)}
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    conn.close()
    return out


def query_plan(path: Path) -> list[str]:
    from marketd.store.sqlite.base import Q

    conn = sqlite3.connect(path)
    rows = conn.execute("EXPLAIN QUERY PLAN " + Q["select_pending"], {
        "provider": "stockx", "now": iso_at(time.time()), "limit": 50,
        "min_priority": 0}).fetchall()
    conn.close()
    return [r[-1] for r in rows]


async def run(args: Any) -> Report:
    sizes = (2_000, 20_000) if args.quick else (10_000, 1_000_000)
    samples = 40 if args.quick else args.samples
    report = Report("selection", args.quick, params={
        "pending_sizes": sizes, "samples": samples, "claim": "Store.claim('stockx', 50, "
        "max_skus=100)"})
    quiet_logging()
    res: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="marketd-bench-") as tmp:
        for n in sizes:
            path = Path(tmp) / f"jobs{n}.db"
            build_s = build_jobs_db(path, n)
            plan = query_plan(path)
            # alternate the two in halves, so drift hits both alike
            st: list[float] = []
            bare: list[float] = []
            for half in (samples // 2, samples - samples // 2):
                st += await store_samples(path, half)
                bare += bare_samples(path, half)
            r = {"p50_ms": pct(st, 50) * 1000, "p99_ms": pct(st, 99) * 1000,
                 "bare_p50_ms": pct(bare, 50) * 1000, "bare_p99_ms": pct(bare, 99) * 1000}
            res[n] = r
            report.add(pending=n, build_s=build_s, store_p50_ms=r["p50_ms"],
                       store_p99_ms=r["p99_ms"], p99_over_p50=r["p99_ms"] / r["p50_ms"],
                       bare_p50_ms=r["bare_p50_ms"], bare_p99_ms=r["bare_p99_ms"],
                       store_over_bare_p50=r["p50_ms"] / r["bare_p50_ms"])
            report.extra.setdefault("query_plan", {})[str(n)] = plan
            report.extra.setdefault("samples_ms", {})[str(n)] = {
                "store": [round(t * 1000, 3) for t in st],
                "bare": [round(t * 1000, 3) for t in bare]}
            if n == sizes[-1]:
                report.extra["backlog_queries"] = backlog_queries(path)
            path.unlink()
    small, big = res[sizes[0]], res[sizes[1]]
    label = f"{sizes[1] // 1000}k" if sizes[1] < 1_000_000 else "1M"
    report.goal(f"claim p50 at {label} / p50 at {sizes[0] // 1000}k",
                big["p50_ms"] / small["p50_ms"], 1.5, higher_is_better=False)
    report.goal(f"claim p99 / p50 at {label}", big["p99_ms"] / big["p50_ms"], 3.0,
                higher_is_better=False)
    report.goal(f"claim p99 / p50 at {sizes[0] // 1000}k", small["p99_ms"] / small["p50_ms"],
                3.0, higher_is_better=False)
    slow = {k: v for k, v in report.extra["backlog_queries"].items() if v["ms"] > 5}
    if slow:
        print(f"\nqueries over 5 ms at {sizes[-1]:,} pending: " + ", ".join(
            f"{k} {v['ms']:.0f} ms" for k, v in sorted(slow.items(), key=lambda kv: -kv[1]["ms"])))
    report.extra["store_over_bare_p50"] = {str(n): r["p50_ms"] / r["bare_p50_ms"]
                                           for n, r in res.items()}
    print("\nStore.claim vs bare SQL claim, p50: " + ", ".join(
        f"{n:,}: {r['p50_ms'] / r['bare_p50_ms']:.2f}x" for n, r in res.items()))
    return report


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200)
    args = p.parse_args(argv)
    report = asyncio.run(run(args))
    report.finish(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
