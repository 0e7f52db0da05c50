"""Provider faults end to end (INTERFACE.md §6): the daemon and the simulator as real processes
over loopback, each fault injected at the HTTP boundary, and each ending as the contract says:

- 5xx, timeouts, network errors, truncated bodies: retried with backoff up to max_retries, then
  failed with the last error; never retried past the bound;
- 429: the provider pauses (Retry-After honoured, else 60 s), the batch goes back to pending,
  no retry is spent;
- 401 once: a client that can renew its token does and the job completes; one that cannot (or a
  second refusal) pauses the provider for auth_pause_seconds naming the credential, jobs wait;
- a provider down at start-up: the daemon still starts and serves, that provider's jobs fail
  after bounded retries, the others complete.

Every test ends with a graceful stop (exit 0) and checks the daemon's JSON log: no Traceback
outside an ``exception`` field, no crash events, and the simulator saw no window over a limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    ProcRig,
    db_rows,
    free_port,
    http,
    limit_violations,
    log_events,
    log_problems,
    make_proc_rig,
    sim_stats,
    start_logged,
    wait_until,
)

MAX_RETRIES = 2
FAST_RETRY = {"max_retries": MAX_RETRIES, "retry_base_seconds": 1, "retry_max_seconds": 1}
NIKE = ("DD1391-100", ["8", "9", "10"])
ADIDAS = ("B75806", ["7.5", "9.5"])


def jobs_for(provider: str, *groups: tuple[str, list[str]], priority: str = "manual"
             ) -> dict[str, Any]:
    return {"jobs": [{"provider": provider, "sku": sku, "size": size, "priority": priority}
                     for sku, sizes in groups for size in sizes]}


@pytest.fixture
def rigs() -> Iterator[list[ProcRig]]:
    made: list[ProcRig] = []
    yield made
    for rig in made:
        rig.close()


def finish(rig: ProcRig, forced_429: dict[str, int] | None = None) -> str:
    """Graceful stop (exit 0), a clean log, and no limit window exceeded; the log text."""
    stats = sim_stats(rig.sim_url)
    code = rig.terminate()
    text = rig.daemon_log()
    assert code == 0, text[-3000:]
    assert log_problems(text) == [], log_problems(text)[:5]
    assert limit_violations(stats, forced_429) == []
    running = db_rows(rig.db, "SELECT count(*) FROM market_jobs WHERE status = 'running'")
    assert running == [(0,)]
    return text


def test_5xx_storm_fails_after_bounded_retries(tmp_path: Path, rigs: list[ProcRig]) -> None:
    """Alias answers 503 to every call, eBay to 30% of them: every alias job fails after exactly
    max_retries retries with the provider's last error and is never tried again; eBay's jobs all
    end (completed or failed) with retry_count <= max_retries; 5xx never pauses a provider."""
    rig = make_proc_rig(tmp_path, sim_args=("--fault-rate", "alias=1.0", "--fault-rate",
                                            "ebay=0.3", "--seed", "7"), scheduler=FAST_RETRY)
    rigs.append(rig)
    rig.enqueue(jobs_for("alias", NIKE, ADIDAS))
    rig.enqueue(jobs_for("ebay", NIKE, ADIDAS))
    alias = wait_until(lambda: rig.settled("alias"), timeout=40, what="alias jobs settled")
    ebay = wait_until(lambda: rig.settled("ebay"), timeout=40, what="ebay jobs settled")
    assert len(alias) == 5 and len(ebay) == 5
    for job in alias:
        assert job["status"] == "failed", job
        assert job["retry_count"] == MAX_RETRIES, job
        assert f"gave up after {MAX_RETRIES} retries" in job["error_message"]
        assert "503" in job["error_message"], job["error_message"]
    for job in ebay:
        assert job["retry_count"] <= MAX_RETRIES, job
        assert job["status"] == "completed" or "503" in job["error_message"], job
    assert sim_stats(rig.sim_url)["ebay"]["faults"] > 0  # the storm did reach eBay
    budgets = rig.status()["budgets"]
    assert not budgets["alias"]["paused"] and not budgets["ebay"]["paused"]
    # failed is final: no more alias calls after the last retry
    before = sim_stats(rig.sim_url)["alias"]["requests"]
    time.sleep(2.5)  # two more interval runs
    assert sim_stats(rig.sim_url)["alias"]["requests"] == before
    # two product-level call groups, each tried 1 + max_retries times (plus catalog look-ups)
    assert before <= 2 * 3 * (MAX_RETRIES + 1)
    text = finish(rig)
    assert sum(e["event"] == "job_retry_scheduled" for e in log_events(text)) >= 2 * MAX_RETRIES


def test_answers_slower_than_timeout_retry_then_fail(tmp_path: Path,
                                                    rigs: list[ProcRig]) -> None:
    """Alias answers after 2.5 s with timeout_s = 1: each call times out, retries are bounded and
    the jobs fail 'timed out'. eBay is slow (0.4 s) but within its timeout: its jobs complete."""
    rig = make_proc_rig(tmp_path, sim_args=("--latency-ms", "alias=2500", "--latency-ms",
                                            "ebay=400"),
                        scheduler=FAST_RETRY, providers={"alias": {"timeout_s": 1},
                                                         "ebay": {"timeout_s": 5}})
    rigs.append(rig)
    rig.enqueue(jobs_for("alias", ADIDAS))
    rig.enqueue(jobs_for("ebay", ADIDAS))
    alias = wait_until(lambda: rig.settled("alias"), timeout=40, what="alias jobs settled")
    ebay = wait_until(lambda: rig.settled("ebay"), timeout=40, what="ebay jobs settled")
    for job in alias:
        assert job["status"] == "failed" and job["retry_count"] == MAX_RETRIES, job
        assert "timed out after 1 s" in job["error_message"], job
    assert all(j["status"] == "completed" and j["retry_count"] == 0 for j in ebay), ebay
    finish(rig)


def test_forced_429_without_retry_after_pauses_60s_and_spends_no_retry(
        tmp_path: Path, rigs: list[ProcRig]) -> None:
    """A 429 with no Retry-After: StockX pauses for the default 60 s (visible in /status), its
    batch goes back to pending with retry_count 0, nothing fails, and no call is sent during
    the pause."""
    rig = make_proc_rig(tmp_path, scheduler=FAST_RETRY)
    rigs.append(rig)
    rig.force("stockx", 429, 1)
    rig.enqueue(jobs_for("stockx", NIKE))
    budget = wait_until(lambda: (b := rig.status()["budgets"]["stockx"])["paused"] and b,
                        timeout=15, what="stockx paused")
    assert budget["pause_reason"].startswith("rate_limited")
    assert budget["check_credential"] is None
    now = time.time()
    until = _epoch(budget["paused_until"])
    assert 45 < until - now <= 61, budget
    sent = sim_stats(rig.sim_url)["stockx"]["requests"]
    time.sleep(2.5)  # interval runs go by: the paused provider is left alone
    assert sim_stats(rig.sim_url)["stockx"]["requests"] == sent == 1
    jobs = rig.jobs("stockx")
    assert [j["status"] for j in jobs] == ["pending"] * 3
    assert all(j["retry_count"] == 0 for j in jobs)
    text = finish(rig, forced_429={"stockx": 1})
    events = [e for e in log_events(text) if e["event"] == "provider_rate_limited"]
    assert len(events) == 1 and events[0]["retry_after_given"] is False


def test_forced_429_with_retry_after_is_honoured(tmp_path: Path, rigs: list[ProcRig]) -> None:
    """A 429 carrying Retry-After: 1 pauses Alias for about a second, not 60; then the batch
    completes without any retry spent."""
    rig = make_proc_rig(tmp_path, custom_sim={"alias": {"retry_after": True}},
                        scheduler=FAST_RETRY)
    rigs.append(rig)
    rig.force("alias", 429, 1)
    t0 = time.monotonic()
    rig.enqueue(jobs_for("alias", NIKE, ADIDAS))
    jobs = wait_until(lambda: rig.settled("alias"), timeout=20, what="alias jobs settled")
    assert time.monotonic() - t0 < 15  # far less than the 60 s default pause
    assert all(j["status"] == "completed" and j["retry_count"] == 0 for j in jobs), jobs
    text = finish(rig, forced_429={"alias": 1})
    events = [e for e in log_events(text) if e["event"] == "provider_rate_limited"]
    assert len(events) == 1, events
    assert events[0]["retry_after_given"] is True and events[0]["pause_s"] <= 2


def test_one_time_401_renews_or_pauses_by_provider(tmp_path: Path,
                                                  rigs: list[ProcRig]) -> None:
    """A single 401: StockX and eBay mint a new token, retry once and complete (no pause, no
    retry spent). Alias's token cannot be renewed: Alias pauses for auth_pause_seconds naming
    ALIAS_API_TOKEN in /status, its jobs wait (pending, not failed) and complete after the
    pause. Two 401s in a row on StockX pause it naming its credentials, jobs pending."""
    rig = make_proc_rig(tmp_path, scheduler={**FAST_RETRY, "auth_pause_seconds": 4})
    rigs.append(rig)
    for name in ("stockx", "alias", "ebay"):
        rig.force(name, 401, 1)
    rig.enqueue(jobs_for("stockx", NIKE))
    rig.enqueue(jobs_for("ebay", ADIDAS))
    rig.enqueue(jobs_for("alias", ADIDAS))
    paused = wait_until(lambda: (b := rig.status()["budgets"]["alias"])["paused"] and b,
                        timeout=15, what="alias paused for its credentials")
    assert paused["check_credential"] == "ALIAS_API_TOKEN", paused
    assert "credentials refused" in paused["pause_reason"]
    assert {j["status"] for j in rig.jobs("alias")} <= {"pending", "running"}
    for name in ("stockx", "ebay", "alias"):
        jobs = wait_until(lambda n=name: rig.settled(n), timeout=30, what=f"{name} settled")
        assert all(j["status"] == "completed" and j["retry_count"] == 0 for j in jobs), jobs
    stats = sim_stats(rig.sim_url)
    assert stats["stockx"]["token_requests"] >= 2 and stats["ebay"]["token_requests"] >= 2
    budgets = rig.status()["budgets"]
    assert not budgets["stockx"]["paused"] and not budgets["ebay"]["paused"]

    # refused twice: the renewal does not help, StockX pauses and names what to check
    rig.force("stockx", 401, 2)
    rig.enqueue(jobs_for("stockx", ("DZ5485-612", ["9"])))
    stockx = wait_until(lambda: (b := rig.status()["budgets"]["stockx"])["paused"] and b,
                        timeout=15, what="stockx paused for its credentials")
    assert "STOCKX_API_KEY" in stockx["check_credential"], stockx
    job = next(j for j in rig.jobs("stockx") if j["sku"] == "DZ5485-612")
    assert job["status"] == "pending" and job["retry_count"] == 0, job
    text = finish(rig)
    auth = [e for e in log_events(text) if e["event"] == "provider_auth_failed"]
    assert {e["provider"] for e in auth} == {"alias", "stockx"}
    assert all(e["check"] for e in auth)


@pytest.mark.parametrize("mode", ["json", "cut"])
def test_truncated_answers_are_retried(tmp_path: Path, rigs: list[ProcRig], mode: str) -> None:
    """An answer cut in half (a complete response holding half a JSON document, or a connection
    closed before the promised Content-Length) is a transient error: one retry, then the job
    completes, for each provider."""
    rig = make_proc_rig(tmp_path, custom_sim={}, scheduler=FAST_RETRY)
    rigs.append(rig)
    for name in ("stockx", "alias", "ebay"):
        code, body = http("POST", f"{rig.sim_url}/_test/truncate",
                          {"provider": name, "count": 1, "mode": mode})
        assert code == 200, body
        rig.enqueue(jobs_for(name, ("DZ5485-612", ["9"])))
    for name in ("stockx", "alias", "ebay"):
        jobs = wait_until(lambda n=name: rig.settled(n), timeout=30, what=f"{name} settled")
        assert [(j["status"], j["retry_count"]) for j in jobs] == [("completed", 1)], jobs
    text = finish(rig)
    retries = [e for e in log_events(text) if e["event"] == "job_retry_scheduled"]
    assert len(retries) == 3
    want = "JSON" if mode == "json" else "network error"
    assert all(want in e["error"] for e in retries), retries


def test_provider_down_at_startup(tmp_path: Path, rigs: list[ProcRig]) -> None:
    """Alias's base_url points at a closed port: the daemon starts and serves anyway, alias jobs
    fail after max_retries with a network error, StockX and eBay complete; once Alias is up,
    reset-failed brings its jobs back and they complete."""
    down = free_port()
    rig = make_proc_rig(tmp_path, scheduler=FAST_RETRY, security={"cron_secret": "cs"},
                        providers={"alias": {"base_url": f"http://127.0.0.1:{down}"}})
    rigs.append(rig)
    assert http("GET", f"{rig.url}/healthz")[0] == 200
    rig.enqueue(jobs_for("alias", ADIDAS))
    rig.enqueue(jobs_for("stockx", ADIDAS))
    rig.enqueue(jobs_for("ebay", ADIDAS))
    alias = wait_until(lambda: rig.settled("alias"), timeout=40, what="alias jobs settled")
    for job in alias:
        assert job["status"] == "failed" and job["retry_count"] == MAX_RETRIES, job
        assert "network error" in job["error_message"], job
    for name in ("stockx", "ebay"):
        jobs = wait_until(lambda n=name: rig.settled(n), timeout=30, what=f"{name} settled")
        assert all(j["status"] == "completed" for j in jobs), jobs
    # the provider comes up on that port; failed jobs go back and complete
    sim2, sim2_url = _simulator_on(tmp_path, down)
    try:
        code, body = http("POST", f"{rig.url}/reset-failed", {"provider": "alias"},
                          headers={"x-cron-secret": "cs"})
        assert code == 200 and body["reset"] == 2, body
        jobs = wait_until(lambda: (js := rig.settled("alias")) and
                          all(j["status"] == "completed" for j in js) and js,
                          timeout=30, what="alias completed after reset-failed")
        assert len(jobs) == 2
        assert limit_violations(sim_stats(sim2_url)) == []
        finish(rig)
    finally:
        sim2.kill()
        sim2.wait(10)


def _simulator_on(tmp_path: Path, port: int) -> tuple[Any, str]:
    proc = start_logged("simulator", "--port", str(port), "--limit", "alias=20/10s",
                        log=tmp_path / "sim2.log")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http("GET", f"{url}/_sim/stats", timeout=2)[0] == 200, what="alias up")
    return proc, url


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_404_fails_at_once_and_408_or_5xx_once_is_retried(tmp_path: Path,
                                                           rigs: list[ProcRig]) -> None:
    """A forced 404 fails the job "not found on <provider>" with no retry spent; a single 408,
    500 or 502 is retried once and the job completes."""
    rig = make_proc_rig(tmp_path, scheduler=FAST_RETRY)
    rigs.append(rig)
    for name in ("stockx", "alias", "ebay"):
        rig.force(name, 404, 1)
        rig.enqueue(jobs_for(name, ("DZ5485-612", ["9"])))
    for name in ("stockx", "alias", "ebay"):
        jobs = wait_until(lambda n=name: rig.settled(n), timeout=30, what=f"{name} settled")
        assert [(j["status"], j["retry_count"]) for j in jobs] == [("failed", 0)], jobs
        assert f"not found on {name}" in jobs[0]["error_message"], jobs
    for name, status in (("stockx", 408), ("alias", 500), ("ebay", 502)):
        rig.force(name, status, 1)
        rig.enqueue(jobs_for(name, ("B75806", ["9.5"])))
    for name in ("stockx", "alias", "ebay"):
        jobs = wait_until(lambda n=name: (js := [j for j in rig.jobs(n) if j["sku"] == "B75806"])
                          and all(j["status"] in ("completed", "failed") for j in js) and js,
                          timeout=30, what=f"{name} retried")
        assert [(j["status"], j["retry_count"]) for j in jobs] == [("completed", 1)], jobs
    finish(rig)
