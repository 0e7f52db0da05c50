"""Three daemons on one PostgreSQL database, as processes, against the simulator enforcing a
limit: one is killed with SIGKILL while it runs a batch, another takes its lanes and its jobs,
a manual job enqueued on a third is priced within seconds, and afterwards:

- no window the simulator saw went over the limit, and it answered no 429;
- every job acknowledged is one row (keys enqueued on two daemons at once are one job), and
  every one completed exactly once: none lost, duplicated or left running;
- the jobs the killed daemon had running went back to pending and another daemon completed
  them; the lanes it held were taken by another daemon within seconds;
- a graceful stop hands the stopping daemon's lanes over at once.

Skips with a reason when no PostgreSQL answers (fails instead with MARKETD_REQUIRE_SERVICES=1);
the test creates its own database and drops it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    daemon_config,
    end_process,
    free_port,
    http,
    limit_violations,
    log_problems,
    sim_stats,
    start_daemon,
    start_simulator,
    wait_until,
)

asyncpg = pytest.importorskip("asyncpg")

ADMIN_URL = os.environ.get("MARKETD_TEST_POSTGRES_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
PROVIDERS = ("stockx", "alias", "ebay")
LIMIT = "8/4s"
# products the simulator knows: (sku, UK size)
KEYS = (
    *(("DD1391-100", s) for s in ("8", "9", "10", "11")),
    *(("B75806", s) for s in ("7.5", "9.5")),
    ("DZ5485-612", "9"),
    *(("BB550WT1", s) for s in ("10", "10.5")),
    ("CW2288-111", "8"),
)
MANUAL_KEY = ("CW2288-111", "9")  # kept for the manual job after the kill


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _fetch(url: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    try:
        _run(_admin("SELECT 1"))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        reason = f"no PostgreSQL answers at {ADMIN_URL}: {exc}"
        if os.environ.get("MARKETD_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (MARKETD_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    name = f"marketd_e2e_{uuid.uuid4().hex}"
    _run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _config(tmp: Path, n: int, sim_url: str, pg_url: str) -> Path:
    path = daemon_config(
        tmp / f"d{n}.toml", port=free_port(), db=tmp / "unused.db", sim_url=sim_url,
        limits=f'["{LIMIT}"]',
        scheduler={"max_batch_size": 12, "manual_wake_ms": 100, "shutdown_grace_seconds": 2})
    text = path.read_text()
    old = f'path = "{tmp / "unused.db"}"'
    assert old in text
    path.write_text(text.replace(old, f'url = "{pg_url}"'))
    return path


def _holders(url: str) -> dict[str, str]:
    """provider -> the instance id that runs it, as a daemon's /status says (alive ones)."""
    status, body = http("GET", f"{url}/status", timeout=5)
    assert status == 200, body
    return {lane: i["id"] for i in body["instances"] if i["alive"] for lane in i["lanes"]}


def _this(url: str) -> str:
    body = http("GET", f"{url}/status", timeout=5)[1]
    return str(next(i["id"] for i in body["instances"] if i["this"]))


def test_three_daemons_one_killed_mid_batch(tmp_path: Path, pg_url: str) -> None:
    started = time.monotonic()
    sim_args = [a for p in PROVIDERS for a in
                ("--limit", f"{p}={LIMIT}", "--latency-ms", f"{p}=250")]
    sim, sim_url = start_simulator(tmp_path / "sim.log", *sim_args)
    procs: list[subprocess.Popen[str]] = []
    try:
        urls = []
        for n in range(3):
            proc, url = start_daemon(_config(tmp_path, n, sim_url, pg_url),
                                     tmp_path / f"d{n}.log")
            procs.append(proc)
            urls.append(url)
        ids = [_this(u) for u in urls]
        wait_until(lambda: set(_holders(urls[0])) == set(PROVIDERS), timeout=10,
                   what="every lane held")

        # jobs enqueued on different daemons; the first half of the keys on two at once
        acked: dict[str, str] = {}  # job id -> dedupe key
        lock = threading.Lock()

        def enqueue(url: str, jobs: list[dict[str, Any]]) -> None:
            status, body = http("POST", f"{url}/enqueue", {"jobs": jobs}, timeout=10)
            assert status == 202, body
            with lock:
                for j in body["jobs"]:
                    assert acked.get(j["id"], j["dedupe_key"]) == j["dedupe_key"]
                    acked[j["id"]] = j["dedupe_key"]

        threads = []
        for i, (sku, size) in enumerate(KEYS):
            for p, provider in enumerate(PROVIDERS):
                job = [{"provider": provider, "sku": sku, "size": size,
                        "priority": "background"}]
                targets = [urls[(i + p) % 3]] + ([urls[(i + p + 1) % 3]] if i < 5 else [])
                threads += [threading.Thread(target=enqueue, args=(u, job)) for u in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(acked) == len(KEYS) * len(PROVIDERS)  # two daemons, one job per key

        # kill the daemon holding the most lanes while it has jobs running
        holders = _holders(urls[0])
        victim = max(range(3), key=lambda n: sum(1 for h in holders.values() if h == ids[n]))
        victim_lanes = sorted(p for p, h in holders.items() if h == ids[victim])

        def victim_running() -> list[str]:
            rows = _run(_fetch(pg_url, "SELECT id::text FROM market_jobs WHERE status = "
                                       "'running' AND instance_id = $1::uuid", ids[victim]))
            return [r[0] for r in rows]

        running = wait_until(victim_running, timeout=15, what="the victim running a batch")
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        killed_at = time.monotonic()
        others = [n for n in range(3) if n != victim]

        # its lanes go to another daemon within seconds (the server dropped its locks)
        def lanes_taken() -> bool:
            now = _holders(urls[others[0]])
            return all(now.get(p) in (ids[others[0]], ids[others[1]]) for p in victim_lanes)

        wait_until(lanes_taken, timeout=10, what="the victim's lanes taken over")
        lanes_after_s = time.monotonic() - killed_at

        # a manual job on another daemon, for a provider the victim ran: priced in seconds
        provider = victim_lanes[0]
        status, body = http("POST", f"{urls[others[1]]}/enqueue", {"jobs": [{
            "provider": provider, "sku": MANUAL_KEY[0], "size": MANUAL_KEY[1],
            "priority": "manual"}]})
        assert status == 202, body
        manual_id = body["jobs"][0]["id"]
        acked[manual_id] = body["jobs"][0]["dedupe_key"]
        asked = time.monotonic()

        def manual_done() -> bool:
            rows = _run(_fetch(pg_url, "SELECT status::text FROM market_jobs WHERE id = $1",
                               uuid.UUID(manual_id)))
            return bool(rows) and rows[0][0] == "completed"

        wait_until(manual_done, timeout=15, what="the manual job priced")
        manual_s = time.monotonic() - asked

        def settled() -> bool:
            rows = _run(_fetch(pg_url, "SELECT count(*) FROM market_jobs "
                                       "WHERE status IN ('pending', 'running')"))
            return rows[0][0] == 0

        wait_until(settled, timeout=30, what="every job finished")
        rescued_s = time.monotonic() - killed_at

        # the audit
        rows = {str(r["id"]): r for r in _run(_fetch(
            pg_url, "SELECT id, dedupe_key, status::text AS status, instance_id::text AS inst "
                    "FROM market_jobs"))}
        assert set(rows) == set(acked), "jobs lost, or rows nobody acknowledged"
        assert all(rows[i]["dedupe_key"] == k for i, k in acked.items())
        assert {r["status"] for r in rows.values()} == {"completed"}
        for job_id in running:  # the victim's: back to pending, then another daemon's
            assert rows[job_id]["inst"] in (ids[others[0]], ids[others[1]]), rows[job_id]
        history = _run(_fetch(pg_url, "SELECT provider, sku, size, count(*) AS n "
                                      "FROM market_price_history GROUP BY 1, 2, 3"))
        assert len(history) >= len(KEYS) * 2  # (one ebay listing can answer two sizes)
        stats = sim_stats(sim_url)
        assert limit_violations(stats) == []
        calls = _run(_fetch(pg_url, "SELECT provider, count(*) AS n FROM market_calls "
                                    "GROUP BY provider"))
        recorded = {r["provider"]: r["n"] for r in calls}
        for name, s in stats.items():
            assert s["requests"] <= recorded.get(name, 0), (name, s["requests"], recorded)

        # a graceful stop hands the lanes over at once
        stopper, keeper = others
        procs[stopper].send_signal(signal.SIGTERM)
        assert procs[stopper].wait(15) == 0
        stopped_at = time.monotonic()
        wait_until(lambda: set(_holders(urls[keeper])) == set(PROVIDERS)
                   and set(_holders(urls[keeper]).values()) == {ids[keeper]}, timeout=5,
                   what="the stopped daemon's lanes handed over")
        handover_s = time.monotonic() - stopped_at
        procs[keeper].send_signal(signal.SIGTERM)
        assert procs[keeper].wait(15) == 0
        left = _run(_fetch(pg_url, "SELECT count(*) FROM market_instances"))[0][0]
        assert left == 1  # only the killed daemon's row (it never said goodbye)
        for n in others:
            assert log_problems((tmp_path / f"d{n}.log").read_text()) == []
        print(f"lanes taken over {lanes_after_s:.1f} s after the kill; manual job priced in "
              f"{manual_s:.1f} s; every job finished {rescued_s:.1f} s after the kill "
              f"({len(running)} were running on the killed daemon); graceful hand-over "
              f"{handover_s:.2f} s; {time.monotonic() - started:.0f} s in all")
    finally:
        for proc in procs:
            end_process(proc)
        end_process(sim)
