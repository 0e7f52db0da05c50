"""procrastinate, the baseline of bench/postgres.py, as its own process: on a database of its own
with procrastinate's schema applied, defer ``--jobs`` no-op jobs (the same (provider, sku, size)
workload marketd gets, one job each) with its documented async API, then run a worker until
the queue is empty. Prints one JSON line: ``{"defer_s", "process_s", "total_s", "succeeded",
"cpu_s"}`` (this process's CPU seconds over the defer and the run).

- ``App(connector=PsycopgConnector(conninfo=URL))``, ``async with app.open_async()``;
- ``task.batch_defer_async(*kwargs)``, ``--chunk`` jobs a call (its batch API: one INSERT);
  ``--chunk 1`` defers one ``defer_async`` at a time;
- ``app.run_worker_async(wait=False, concurrency=N, install_signal_handlers=False)``: a worker
  that returns once it has caught up with the queue (``listen_notify`` off: nothing is
  deferred while it runs).

    python -m bench.pg_procrastinate --url postgresql://postgres@127.0.0.1:5432/db --jobs 6000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time


async def run(args: argparse.Namespace) -> dict[str, float | int]:
    import procrastinate

    from bench.postgres import workload

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=args.url))

    @app.task(name="fetch_price")
    async def fetch_price(provider: str, sku: str, size: str) -> None:
        """A no-op job: what the instant provider is to marketd."""

    jobs = [{"provider": p, "sku": sku, "size": size}
            for p, sku, size in workload(args.jobs, args.tag)]
    async with app.open_async():
        if args.apply_schema:
            await app.schema_manager.apply_schema_async()
        t0, cpu0 = time.perf_counter(), time.process_time()
        if args.chunk <= 1:
            for kw in jobs:
                await fetch_price.defer_async(**kw)
        else:
            for i in range(0, len(jobs), args.chunk):
                await fetch_price.batch_defer_async(*jobs[i:i + args.chunk])
        t1 = time.perf_counter()
        await app.run_worker_async(wait=False, concurrency=args.concurrency,
                                   install_signal_handlers=False, listen_notify=False)
        t2, cpu2 = time.perf_counter(), time.process_time()
        async with app.connector.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute("SELECT status, count(*) FROM procrastinate_jobs GROUP BY status")
            counts = dict(await cur.fetchall())
    done = int(counts.get("succeeded", 0))
    if set(counts) - {"succeeded"} or done < len(jobs):
        raise RuntimeError(f"procrastinate left {counts}, expected {len(jobs)} succeeded")
    return {"defer_s": t1 - t0, "process_s": t2 - t1, "total_s": t2 - t0, "succeeded": done,
            "cpu_s": cpu2 - cpu0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--jobs", type=int, default=6000)
    p.add_argument("--tag", default="Q")
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--apply-schema", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # not the warning about an App in __main__
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
