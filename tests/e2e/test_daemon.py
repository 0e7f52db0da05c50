"""The daemon as a real process against the simulator as a real process, over loopback."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import free_port, http, start, wait_until, write_config

SKUS = {"DD1391-100": ["8", "9", "10", "11"], "B75806": ["7.5", "9.5"],
        "DZ5485-612": ["9"], "BB550WT1": ["10", "10.5"]}


@dataclass
class Rig:
    url: str
    sim_url: str
    db: Path
    daemon: subprocess.Popen[str]
    sim: subprocess.Popen[str]
    config: Path


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def make_rig(tmp_path: Path, sim_args: list[str], limits: str, extra: str = "",
             interval: float = 2) -> Rig:
    sim_port, port = free_port(), free_port()
    # the simulator enforces the same limits the daemon is configured with
    for name in ("stockx", "alias", "ebay"):
        for text in limits.strip("[]").replace('"', "").split(","):
            sim_args = [*sim_args, "--limit", f"{name}={text.strip()}"]
    sim = start("simulator", "--port", str(sim_port), *sim_args)
    sim_url = f"http://127.0.0.1:{sim_port}"
    wait_until(lambda: http("GET", f"{sim_url}/_sim/stats")[0] == 200, what="simulator")
    providers = ""
    creds = {"stockx": f'api_key = "k"\nclient_id = "c"\nclient_secret = "s"\n'
                       f'refresh_token = "r"\nauth_url = "{sim_url}"\n',
             "alias": 'api_token = "goatapi_t"\n', "ebay": 'client_id = "c"\nclient_secret = "s"\n'}
    for name, c in creds.items():
        providers += (f'[providers.{name}]\nbase_url = "{sim_url}"\nlimits = {limits}\n'
                      f'timeout_s = 10\n{c}')
    db = tmp_path / "m.db"
    config = write_config(tmp_path / "c.toml", f"""
[server]
port = {port}
[database]
path = "{db}"
[scheduler]
interval_seconds = {interval}
retry_base_seconds = 1
retry_max_seconds = 2
{extra}
[security]
cron_secret = "cs"
[logging]
format = "json"
{providers}""")
    daemon = start("serve", "-c", str(config))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http("GET", f"{url}/healthz")[0] == 200, what="daemon ready")
    return Rig(url, sim_url, db, daemon, sim, config)


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(*args: Any, **kw: Any) -> Rig:
        rig = make_rig(tmp_path, *args, **kw)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        stop(rig.daemon)
        stop(rig.sim)


def enqueue_portfolio(rig: Rig, priority: str = "hot") -> int:
    jobs = [{"provider": p, "sku": sku, "size": size, "priority": priority}
            for p in ("stockx", "alias", "ebay") for sku, sizes in SKUS.items() for size in sizes]
    status, body = http("POST", f"{rig.url}/enqueue", {"jobs": jobs})
    assert status == 202, body
    return len(jobs)


def counts(rig: Rig) -> dict[str, int]:
    return http("GET", f"{rig.url}/status")[1]["jobs"]["total"]


def test_tight_limits_no_429_and_coalesced_calls(rig_factory: Any) -> None:
    """Against 20 calls per 10 s on every provider: all jobs done, zero 429s, no window over
    its limit, and fewer StockX calls than prices stored (coalescing)."""
    rig = rig_factory([], '["20/10s"]')
    n = enqueue_portfolio(rig)
    wait_until(lambda: counts(rig)["completed"] == n, timeout=90, what="all jobs completed")
    stats = http("GET", f"{rig.sim_url}/_sim/stats")[1]["providers"]
    for name in ("stockx", "alias", "ebay"):
        assert stats[name]["rate_limited"] == 0, stats[name]
        for window in stats[name]["limits"]:
            assert window["max_seen"] <= window["count"], (name, window)
    prices = http("GET", f"{rig.url}/prices?provider=stockx")[1]["prices"]
    assert {(p["sku"], p["size"]) for p in prices} >= {
        (sku, size) for sku, sizes in SKUS.items() for size in sizes}
    assert stats["stockx"]["requests"] / len(prices) < 1
    assert all(p["lowest_ask"] is None or p["lowest_ask"].count(".") == 1 for p in prices)


def test_sigterm_mid_batch_drains_and_returns_jobs(rig_factory: Any) -> None:
    """SIGTERM during a slow batch: exit 0 within grace + 5 s, nothing left running, no job lost."""
    rig = rig_factory(["--latency-ms", "stockx=1500", "--latency-ms", "alias=1500",
                       "--latency-ms", "ebay=1500"], '["100/minute"]',
                      "shutdown_grace_seconds = 2\n")
    n = enqueue_portfolio(rig, priority="manual")
    wait_until(lambda: counts(rig)["running"] > 0, what="a batch in flight")
    started = time.monotonic()
    rig.daemon.send_signal(signal.SIGTERM)
    code = rig.daemon.wait(timeout=2 + 5 + 3)
    elapsed = time.monotonic() - started
    assert code == 0, rig.daemon.stderr.read() if rig.daemon.stderr else ""
    assert elapsed < 2 + 5
    con = sqlite3.connect(rig.db)
    rows = dict(con.execute("SELECT status, count(*) FROM market_jobs GROUP BY status").fetchall())
    con.close()
    assert rows.get("running", 0) == 0
    assert sum(rows.values()) == n
    assert rows.get("pending", 0) > 0
    err = rig.daemon.stderr.read() if rig.daemon.stderr else ""
    assert "Traceback" not in err and "marketd_stopped" in err


def test_sigkill_then_restart_loses_nothing(rig_factory: Any, tmp_path: Path) -> None:
    """SIGKILL mid-batch, restart: running jobs return to pending and everything completes."""
    rig = rig_factory(["--latency-ms", "stockx=800"], '["100/minute"]')
    n = enqueue_portfolio(rig, priority="manual")
    wait_until(lambda: counts(rig)["running"] > 0, what="a batch in flight")
    rig.daemon.kill()
    rig.daemon.wait(10)
    rig.daemon = start("serve", "-c", str(rig.config))
    wait_until(lambda: http("GET", f"{rig.url}/healthz")[0] == 200, what="restart")
    wait_until(lambda: counts(rig)["completed"] == n, timeout=90, what="all completed")
    stats = http("GET", f"{rig.sim_url}/_sim/stats")[1]["providers"]
    assert all(stats[p]["rate_limited"] == 0 for p in stats), stats
    con = sqlite3.connect(rig.db)
    dup = con.execute("SELECT dedupe_key, count(*) FROM market_jobs GROUP BY dedupe_key "
                      "HAVING count(*) > 1").fetchall()
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert dup == []


def test_manual_enqueue_is_fetched_within_seconds(rig_factory: Any) -> None:
    """A manual job is fetched within 3 s of its enqueue, without waiting for the interval."""
    # a ten-minute interval: only the manual wake can explain a fetch within 3 s
    rig = rig_factory([], '["100/minute"]', "", interval=600)
    http("POST", f"{rig.url}/trigger", headers={"x-cron-secret": "cs"})
    t0 = time.monotonic()
    status, body = http("POST", f"{rig.url}/enqueue", {"provider": "alias", "sku": "DD1391-100",
                                                       "size": "9", "priority": "manual"})
    assert status == 202
    job_id = body["jobs"][0]["id"]

    def done() -> bool:
        jobs = http("GET", f"{rig.url}/jobs?provider=alias&status=completed")[1]["jobs"]
        return any(j["id"] == job_id for j in jobs)

    wait_until(done, timeout=10, what="manual job completed")
    assert time.monotonic() - t0 < 3.0


def test_systemd_notify_ready_and_watchdog(tmp_path: Path) -> None:
    """Under systemd (Type=notify) the daemon sends READY=1 once listening, then WATCHDOG=1."""
    import socket

    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(20)
    port = free_port()
    config = write_config(tmp_path / "c.toml", f"""
[server]
port = {port}
[database]
path = "{tmp_path / 'm.db'}"
[providers.stockx]
enabled = false
[providers.alias]
enabled = false
[providers.ebay]
enabled = false
""")
    proc = start("serve", "-c", str(config),
                 env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "200000"})
    try:
        messages = [sock.recv(256).decode() for _ in range(2)]
        assert messages[0] == "READY=1"
        assert http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert messages[1] == "WATCHDOG=1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert sock.recv(256).decode() in ("WATCHDOG=1", "STOPPING=1")
    finally:
        stop(proc)
        sock.close()


def test_demo_prices_all_three_providers_and_stops_cleanly(tmp_path: Path) -> None:
    """`marketd demo`: no keys, prices from all three simulated providers within seconds,
    Ctrl-C (SIGINT) exits 0 without a traceback."""
    port = free_port()
    proc = start("demo", "--port", str(port), "--db", str(tmp_path / "demo.db"))
    try:
        url = f"http://127.0.0.1:{port}"

        def priced() -> bool:
            prices = http("GET", f"{url}/prices")[1]["prices"]
            return {p["provider"] for p in prices} == {"stockx", "alias", "ebay"}

        wait_until(priced, timeout=60, what="prices from all three providers")
        assert http("GET", f"{url}/")[0] == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        out = (proc.stdout.read() if proc.stdout else "") + (
            proc.stderr.read() if proc.stderr else "")
        assert "Traceback" not in out and f"{url}/" in out
    finally:
        stop(proc)
