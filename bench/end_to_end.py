"""End-to-end jobs/s: enqueue -> scheduler run -> worker -> store, against huey on SQLite.

marketd: the real ``Daemon`` (store, budget, lanes, scheduler, worker) with a provider that
answers at once (bench._common's InstantProvider: one budget token per SKU group, spent
durably as the real clients do, then a price for every job of the group) and a generous limit
(1,000,000/hour). ``Daemon.enqueue`` takes the jobs 1,000 at a time, then
``scheduler.run_once("interval")`` runs until nothing is pending (max_batch_size 50, the
default). Every job ends completed with its price in market_prices.

huey: ``Huey`` with its SQLite storage (WAL; synchronous=NORMAL, as marketd's store, instead
of huey's default FULL) enqueues one task per job, then a worker loop does what huey's consumer
worker does without its polling sleeps: ``dequeue()`` + ``execute()`` until the queue is empty.
Each task writes its price row (the same upsert into a market_prices table, plus a history
row, one transaction) on a plain sqlite3 connection.

Reported, not judged: marketd on bench/prototypes.py's InlineStore (the same store code
without a thread hop per transaction), and the SQL floor: marketd's own statements for the same
work on a plain sqlite3 connection with no Python around them, one transaction per call (as
marketd commits) and one reservation plus one write per 50-call run (the least any design that
records calls before sending them could do).

Two mixes: "portfolio" (3-4 sizes per SKU, as 500 items over 150 SKUs: marketd makes one call
per SKU) and "one size per SKU" (one call per job). Goal (on the portfolio mix): >= 3x.

    python -m bench.end_to_end [--quick] [--jobs 6000]
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    Report,
    instant_provider_factory,
    make_config,
    median,
    open_daemon,
    parser,
    quiet_logging,
)

SIZES = ("7", "8", "9", "10")
PRICE_SCHEMA = """
CREATE TABLE IF NOT EXISTS market_prices (
    provider TEXT NOT NULL, sku TEXT NOT NULL, size TEXT NOT NULL DEFAULT '',
    currency TEXT NOT NULL, lowest_ask INTEGER, highest_bid INTEGER, last_sale INTEGER,
    fetched_at TEXT NOT NULL, PRIMARY KEY (provider, sku, size));
CREATE TABLE IF NOT EXISTS market_price_history (
    id INTEGER PRIMARY KEY, provider TEXT NOT NULL, sku TEXT NOT NULL,
    size TEXT NOT NULL DEFAULT '', currency TEXT NOT NULL, lowest_ask INTEGER,
    highest_bid INTEGER, last_sale INTEGER, fetched_at TEXT NOT NULL);
"""


def workload(n: int, mix: str, tag: str) -> list[tuple[str, str, str]]:
    """``n`` (provider, sku, size) jobs: portfolio = SKUs with 4, 3, 3 sizes in turn."""
    jobs: list[tuple[str, str, str]] = []
    k = 0
    while len(jobs) < n:
        count = 1 if mix == "single" else (4 if k % 3 == 0 else 3)
        for s in SIZES[:count]:
            jobs.append(("stockx", f"{tag}{k:06d}", s))
        k += 1
    return jobs[:n]


# ---- marketd -----------------------------------------------------------------------------------


async def run_marketd(tmp: Path, jobs: list[tuple[str, str, str]],
                      profile_to: Path | None = None, store_cls: Any = None) -> dict[str, Any]:
    from marketd.models import JobSpec

    config = make_config(tmp / "marketd.db", providers={"stockx": {"limits": ["1000000/hour"]}},
                         scheduler={"fresh_for_seconds": 0})
    registry: dict[str, Any] = {}
    daemon = await open_daemon(config, {"stockx": instant_provider_factory(registry)}, store_cls)
    specs = [JobSpec(p, sku, size) for p, sku, size in jobs]
    prof = None
    if profile_to is not None:
        from pyinstrument import Profiler

        prof = Profiler(interval=0.0005, async_mode="disabled")
        prof.start()
    try:
        t0 = time.perf_counter()
        for i in range(0, len(specs), 1000):
            await daemon.enqueue(specs[i:i + 1000])
        t1 = time.perf_counter()
        runs = 0
        while True:
            summary = await daemon.scheduler.run_once("interval")
            runs += 1
            if not summary.total("batch_size"):
                break
        t2 = time.perf_counter()
        if prof is not None:
            prof.stop()
            assert profile_to is not None
            profile_to.write_text(prof.output_text(unicode=False, show_all=False))
        counts = (await daemon.store.job_counts()).get("stockx", {})
        if counts.get("completed", 0) != len(jobs):
            raise RuntimeError(f"marketd finished with {counts}, expected {len(jobs)} completed")
        calls = registry["stockx"].groups
    finally:
        await daemon.close()
    return {"enqueue_s": t1 - t0, "process_s": t2 - t1, "total_s": t2 - t0, "runs": runs,
            "calls": calls}


# ---- the SQL floor ---------------------------------------------------------------------------


def run_sql_floor(tmp: Path, jobs: list[tuple[str, str, str]], shape: str) -> dict[str, Any]:
    """marketd's own statements (marketd/sql/queries.sql, schema.sql) for the same work on one
    plain sqlite3 connection, with no Python around them: what the schema and the durability
    rules cost at the least. ``per_call``: as marketd does, one transaction per call (the
    previous group's results and this call's reservation); ``per_run``: every call of a
    50-SKU run reserved in one transaction and every result written in one more (what
    reserving a batch of calls ahead would allow at best)."""
    import json

    from marketd import sql
    from marketd.clock import iso

    q = sql.queries()
    conn = sqlite3.connect(tmp / f"floor-{shape}.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for stmt in sql.statements(sql.schema()):
        conn.execute(stmt)

    def tx(work: Any, *args: Any) -> Any:
        conn.execute("BEGIN IMMEDIATE")
        out = work(*args)
        conn.execute("COMMIT")
        return out

    def reserve(n: int) -> None:
        conn.execute(q["calls_after"], {"provider": "stockx", "after_id": 1 << 62,
                                        "since": 0.0}).fetchall()
        conn.execute(q["insert_calls"], {"provider": "stockx", "sent_at": time.time(),
                                         "n": n}).fetchall()
        conn.execute(q["spend_budget"], {"provider": "stockx", "hour_window": now,
                                         "rate_limit": 1_000_000, "n": n})

    def record(groups: list[list[Any]], reserve_n: int = 0) -> None:
        for group in groups:
            record_one(group)
        if reserve_n:
            reserve(reserve_n)

    def record_one(group: list[Any]) -> None:
        prices = [("stockx", r[3], r[4], "GBP", 9600, 9100, 9400, now, None) for r in group]
        stored = {tuple(r[:3]) for r in conn.execute(  # history records change: read first
            q["current_prices"], {"keys": json.dumps([p[:3] for p in prices])})}
        changed = [p for p in prices if p[:3] not in stored]
        conn.executemany(q["upsert_price"], prices)
        conn.executemany(q["insert_price_history"], [p[:8] for p in changed])
        conn.execute(q["complete_answered"], {"now": now, "keys": json.dumps(
            [f"stockx|{r[3]}|{r[4]}" for r in group])})
        conn.execute(q["complete_jobs"], {"now": now, "ids": json.dumps([r[0] for r in group])})

    def claim() -> list[Any]:
        rows = conn.execute(q["select_pending"], {"provider": "stockx", "now": now,
                                                  "limit": 1000, "min_priority": 0}).fetchall()
        ids: list[str] = []
        skus: set[str] = set()
        for job_id, sku in rows:
            if sku in skus or len(skus) < 50:
                skus.add(sku)
                ids.append(job_id)
        return conn.execute(q["claim_jobs"], {"ids": json.dumps(ids), "now": now,
                                                 "instance": None}).fetchall()

    now = iso(time.time())
    t0 = time.perf_counter()
    for i in range(0, len(jobs), 1000):
        tx(lambda i: conn.executemany(
            "INSERT INTO market_jobs (id, provider, sku, size, priority, dedupe_key, created_at) "
            "VALUES (?, ?, ?, ?, 100, ?, ?)",
            [(f"j{i + k}", p, sku, size, f"{p}|{sku}|{size}", now)
             for k, (p, sku, size) in enumerate(jobs[i:i + 1000])]), i)
    t1 = time.perf_counter()
    while True:
        claimed = tx(claim)
        if not claimed:
            break
        groups: dict[str, list[Any]] = {}
        for r in claimed:
            groups.setdefault(r[3], []).append(r)
        if shape == "per_run":
            tx(reserve, len(groups))
            tx(record, list(groups.values()))
            continue
        previous: list[list[Any]] = []
        for group in groups.values():
            tx(record, previous, 1)
            previous = [group]
        tx(record, previous)
    t2 = time.perf_counter()
    done = conn.execute("SELECT count(*) FROM market_jobs WHERE status = 'completed'").fetchone()
    conn.close()
    if done[0] != len(jobs):
        raise RuntimeError(f"SQL floor completed {done[0]} of {len(jobs)}")
    return {"enqueue_s": t1 - t0, "process_s": t2 - t1, "total_s": t2 - t0}


# ---- huey --------------------------------------------------------------------------------------


def run_huey(tmp: Path, jobs: list[tuple[str, str, str]], tag: str) -> dict[str, Any]:
    from huey import Huey
    from huey.storage import SqliteStorage

    class NormalSqliteStorage(SqliteStorage):  # type: ignore[misc]
        """huey's SQLite storage at marketd's durability (WAL, synchronous=NORMAL)."""

        def _create_connection(self) -> sqlite3.Connection:
            conn = super()._create_connection()
            conn.execute("PRAGMA synchronous = NORMAL")
            return conn

    prices_path = tmp / f"huey-prices-{tag}.db"
    setup = sqlite3.connect(prices_path)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.executescript(PRICE_SCHEMA)
    setup.close()
    conn = sqlite3.connect(prices_path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA synchronous = NORMAL")

    huey = Huey(f"bench{tag}", storage_class=NormalSqliteStorage,
                filename=str(tmp / f"huey-{tag}.db"))

    @huey.task()
    def fetch_price(provider: str, sku: str, size: str) -> None:
        from marketd.clock import iso

        row = (provider, sku, size, "GBP", 9600, 9100, 9400, iso(time.time()))
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO market_prices (provider, sku, size, currency, lowest_ask, highest_bid, "
            "last_sale, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (provider, sku, size) DO UPDATE SET currency = excluded.currency, "
            "lowest_ask = excluded.lowest_ask, highest_bid = excluded.highest_bid, "
            "last_sale = excluded.last_sale, fetched_at = excluded.fetched_at "
            "WHERE excluded.fetched_at >= market_prices.fetched_at", row)
        conn.execute(
            "INSERT INTO market_price_history (provider, sku, size, currency, lowest_ask, "
            "highest_bid, last_sale, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
        conn.execute("COMMIT")

    t0 = time.perf_counter()
    for p, sku, size in jobs:
        fetch_price(p, sku, size)
    t1 = time.perf_counter()
    done = 0
    while True:
        task = huey.dequeue()
        if task is None:
            break
        huey.execute(task)
        done += 1
    t2 = time.perf_counter()
    n = conn.execute("SELECT count(*) FROM market_prices").fetchone()[0]
    conn.close()
    if done != len(jobs) or n != len(jobs):
        raise RuntimeError(f"huey ran {done} tasks and stored {n} prices of {len(jobs)}")
    return {"enqueue_s": t1 - t0, "process_s": t2 - t1, "total_s": t2 - t0}


async def run(args: Any) -> Report:
    from bench import prototypes

    n = 300 if args.quick else args.jobs
    rounds = 1 if args.quick else args.rounds
    report = Report("end_to_end", args.quick, params={
        "jobs": n, "rounds": rounds, "max_batch_size": 50, "enqueue_chunk": 1000,
        "huey_sqlite_synchronous": "NORMAL"})
    quiet_logging()
    rates: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="marketd-bench-") as tmpdir:
        for mix in ("portfolio", "single"):
            r_pm: list[float] = []
            r_m: list[float] = []
            r_h: list[float] = []
            p_m: list[float] = []
            p_h: list[float] = []
            f_c: list[float] = []
            f_r: list[float] = []
            for r in range(rounds):
                sub = Path(tmpdir) / f"{mix}{r}"
                sub.mkdir()
                jobs = workload(n, mix, f"E{r}")
                h = run_huey(sub, jobs, f"{mix}{r}")
                m = await run_marketd(sub, jobs)
                sub2 = Path(tmpdir) / f"{mix}{r}-proto"
                sub2.mkdir()
                pm = await run_marketd(sub2, workload(n, mix, f"F{r}"),
                                       store_cls=prototypes.InlineStore)
                f_c.append(n / run_sql_floor(sub, workload(n, mix, "C"), "per_call")["total_s"])
                f_r.append(n / run_sql_floor(sub, workload(n, mix, "R"), "per_run")["total_s"])
                r_m.append(n / m["total_s"])
                r_pm.append(n / pm["total_s"])
                r_h.append(n / h["total_s"])
                p_m.append(n / m["process_s"])
                p_h.append(n / h["process_s"])
                report.add(mix=mix, round=r + 1, marketd_jobs_s=r_m[-1], huey_jobs_s=r_h[-1],
                           ratio=r_m[-1] / r_h[-1], marketd_process_jobs_s=p_m[-1],
                           huey_process_jobs_s=p_h[-1], process_ratio=p_m[-1] / p_h[-1],
                           marketd_calls=m["calls"], marketd_runs=m["runs"],
                           proto_inline_jobs_s=r_pm[-1], proto_ratio=r_pm[-1] / r_h[-1],
                           floor_per_call_ratio=f_c[-1] / r_h[-1],
                           floor_per_run_ratio=f_r[-1] / r_h[-1])
            rates[mix] = {"marketd": r_m, "huey": r_h, "marketd_p": p_m, "huey_p": p_h,
                          "proto": r_pm, "floor_call": f_c, "floor_run": f_r}
            report.add(mix=mix, round="median", marketd_jobs_s=median(r_m),
                       huey_jobs_s=median(r_h), ratio=median(r_m) / median(r_h),
                       marketd_process_jobs_s=median(p_m), huey_process_jobs_s=median(p_h),
                       process_ratio=median(p_m) / median(p_h),
                       proto_inline_jobs_s=median(r_pm),
                       proto_ratio=median(r_pm) / median(r_h),
                       floor_per_call_ratio=median(f_c) / median(r_h),
                       floor_per_run_ratio=median(f_r) / median(r_h))
        if args.profile:
            args.out.mkdir(parents=True, exist_ok=True)
            sub = Path(tmpdir) / "profile"
            sub.mkdir()
            await run_marketd(sub, workload(n, "portfolio", "P"),
                              args.out / "end_to_end.profile.txt")
    port = rates["portfolio"]
    single = rates["single"]
    report.goal("end-to-end jobs/s vs huey, portfolio mix (3.3 jobs/call)",
                median(port["marketd"]) / median(port["huey"]), 3.0, higher_is_better=True)
    report.extra["prototype_inline_store"] = {
        "what": "bench/prototypes.py InlineStore: the same Store code, no thread hop per "
                "statement",
        "portfolio_ratio_vs_huey": median(port["proto"]) / median(port["huey"]),
        "single_ratio_vs_huey": median(single["proto"]) / median(single["huey"]),
        "portfolio_speedup_vs_marketd": median(port["proto"]) / median(port["marketd"])}
    print("\nprototype InlineStore: portfolio {:.2f}x huey ({:.1f}x marketd today), one size "
          "per SKU {:.2f}x huey".format(
              report.extra["prototype_inline_store"]["portfolio_ratio_vs_huey"],
              report.extra["prototype_inline_store"]["portfolio_speedup_vs_marketd"],
              report.extra["prototype_inline_store"]["single_ratio_vs_huey"]))
    report.extra["sql_floor"] = {
        "what": "marketd's own SQL for the same work on plain sqlite3, no Python around it",
        "per_call_ratio_vs_huey": median(port["floor_call"]) / median(port["huey"]),
        "per_run_ratio_vs_huey": median(port["floor_run"]) / median(port["huey"]),
        "marketd_share_of_per_call_floor": median(port["marketd"]) / median(port["floor_call"])}
    print("SQL floor (marketd's statements alone): one transaction per call {:.2f}x huey "
          "(marketd reaches {:.0%} of it); one reservation and one write per run {:.2f}x "
          "huey".format(report.extra["sql_floor"]["per_call_ratio_vs_huey"],
                        report.extra["sql_floor"]["marketd_share_of_per_call_floor"],
                        report.extra["sql_floor"]["per_run_ratio_vs_huey"]))
    report.extra["one_size_per_sku_ratio"] = median(single["marketd"]) / median(single["huey"])
    print(f"\none size per SKU (a call per job): marketd/huey = "
          f"{report.extra['one_size_per_sku_ratio']:.2f}x (reported, not judged)")
    return report


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=6000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-profile", dest="profile", action="store_false")
    args = p.parse_args(argv)
    if args.quick:
        args.profile = False
    report = asyncio.run(run(args))
    report.finish(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
