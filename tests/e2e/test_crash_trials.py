"""Crash trials: the daemon as a real process under load against the simulator, killed with
SIGKILL at random moments and restarted, many times; then a graceful stop and an audit.

What must hold afterwards (the promise of issue 6):

- every job the API acknowledged is in the database exactly once, under the key it was given,
  and every row is explained (acknowledged, or sent by a request the kill cut short);
- nothing is left running after the final graceful stop (exit 0); jobs are completed, failed
  or pending;
- no dedupe_key has two active (pending or running) jobs;
- ``PRAGMA integrity_check`` is ok after every kill;
- the simulator, enforcing the same limits as the daemon, never saw a window over a limit
  (``max_seen <= count``) and answered no 429; and it never saw more API calls than the
  daemon had durably recorded in market_calls (a call is committed before it is sent);
- the daemon's logs hold no Traceback or crash event.

CI runs ``MARKETD_CRASH_TRIALS`` (default 5) trials with seed ``MARKETD_CRASH_SEED`` (default
1); ``python bench/crash_trials.py --trials 200 --seed 7`` runs the long version.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    daemon_config,
    db_rows,
    end_process,
    free_port,
    http,
    limit_violations,
    log_problems,
    sim_stats,
    start_daemon,
    start_logged,
    start_simulator,
    wait_until,
)

PROVIDERS = ("stockx", "alias", "ebay")
# (sku, UK size): products the simulator knows, plus one it does not (fails "not found")
UNIVERSE: tuple[tuple[str, str | None], ...] = (
    *(("DD1391-100", s) for s in ("8", "9", "10", "11")),
    *(("B75806", s) for s in ("7.5", "9.5")),
    ("DZ5485-612", "9"),
    *(("BB550WT1", s) for s in ("10", "10.5")),
    *(("CW2288-111", s) for s in ("8", "9")),
    ("ZZ0000-404", "9"),
)
PRIORITIES = ("manual", "hot", "background", 120)


@dataclass
class TrialReport:
    trials: int
    seed: int
    limit: str
    requests_sent: int = 0
    requests_cut: int = 0  # enqueue requests a kill cut short (answer never seen)
    jobs_acked: int = 0
    kills_mid_batch: int = 0  # kills while a job was running
    kills_at_startup: int = 0  # extra kills before the daemon was ready
    jobs_by_status: dict[str, int] = field(default_factory=dict)
    sim_requests: dict[str, int] = field(default_factory=dict)
    calls_recorded: dict[str, int] = field(default_factory=dict)
    max_seen: dict[str, str] = field(default_factory=dict)  # "provider limit" -> "seen/count"
    rate_limited: int = 0
    stop_seconds: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"crash trials: {self.trials} SIGKILLs (seed {self.seed}, limit {self.limit}), "
            f"{self.kills_mid_batch} mid-batch, plus {self.kills_at_startup} during start-up; "
            f"{self.seconds:.0f} s",
            f"enqueue requests: {self.requests_sent} sent, {self.requests_cut} cut short by a "
            f"kill; {self.jobs_acked} jobs acknowledged",
            "jobs: " + ", ".join(f"{k} {v}" for k, v in sorted(self.jobs_by_status.items())),
            "provider calls (simulator saw / daemon recorded): " + ", ".join(
                f"{p} {self.sim_requests.get(p, 0)}/{self.calls_recorded.get(p, 0)}"
                for p in PROVIDERS),
            "max in any window (seen/limit): " + ", ".join(
                f"{k} {v}" for k, v in sorted(self.max_seen.items())),
            f"429s answered: {self.rate_limited}; graceful stop took {self.stop_seconds:.1f} s",
            "problems: " + ("none" if not self.problems else "; ".join(self.problems)),
        ]
        return "\n".join(lines)


class Load:
    """Enqueue requests in a thread until told to stop: random jobs from UNIVERSE, random
    providers and priorities (a seeded rng), a short random pause between requests."""

    def __init__(self, url: str, rng: random.Random, max_requests: int) -> None:
        self.url, self.rng, self.max_requests = url, rng, max_requests
        self.acked: list[dict[str, Any]] = []  # results of 202 answers
        self.cut: list[set[str]] = []  # dedupe keys of requests with no answer
        self.sent = 0
        self.stop = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def batch(self) -> list[dict[str, Any]]:
        picks = self.rng.sample(UNIVERSE, self.rng.randint(1, 8))
        return [{"provider": self.rng.choice(PROVIDERS), "sku": sku, "size": size,
                 "priority": self.rng.choice(PRIORITIES)} for sku, size in picks]

    def _run(self) -> None:
        while not self.stop.is_set() and self.sent < self.max_requests:
            jobs = self.batch()
            self.sent += 1
            try:
                status, body = http("POST", f"{self.url}/enqueue", {"jobs": jobs}, timeout=10)
            except (OSError, HTTPException):
                self.cut.append({f"{j['provider']}|{j['sku']}|{j['size'] or ''}" for j in jobs})
                return  # the daemon is gone
            if status != 202:
                self.error = f"enqueue answered {status}: {body}"
                return
            self.acked.extend(body["jobs"])
            self.stop.wait(self.rng.uniform(0.01, 0.15))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def _status_counts(db: Path) -> dict[str, int]:
    return {str(s): int(n) for s, n in
            db_rows(db, "SELECT status, count(*) FROM market_jobs GROUP BY status")}


def crash_trials(workdir: Path, trials: int, seed: int, *, limit: str = "20/10s",
                 latency_ms: int = 150, fault_rate: float = 0.05, drain_s: float = 30,
                 say: Callable[[str], None] = lambda _: None) -> TrialReport:
    """Run the trials in ``workdir`` and audit the result; ``report.problems`` lists every
    broken promise (empty when all held)."""
    started = time.monotonic()
    rng = random.Random(seed)
    report = TrialReport(trials, seed, limit)
    workdir.mkdir(parents=True, exist_ok=True)
    sim_args = [a for p in PROVIDERS for a in
                ("--limit", f"{p}={limit}", "--latency-ms", f"{p}={latency_ms}",
                 "--fault-rate", f"{p}={fault_rate}")]
    sim, sim_url = start_simulator(workdir / "sim.log", *sim_args, "--seed", str(seed))
    db = workdir / "marketd.db"
    config = daemon_config(
        workdir / "marketd.toml", port=free_port(), db=db, sim_url=sim_url, limits=f'["{limit}"]',
        scheduler={"max_batch_size": 8, "max_retries": 3, "shutdown_grace_seconds": 2,
                   "manual_wake_ms": 100})
    logs: list[Path] = []
    acked: dict[str, str] = {}  # job id -> dedupe key
    cut: set[str] = set()
    daemon: subprocess.Popen[str] | None = None
    try:
        for trial in range(trials):
            if rng.random() < 0.2:  # now and then, a kill during start-up (migrate, rescue)
                logs.append(workdir / f"daemon-{trial}-early.log")
                early = start_logged("serve", "-c", str(config), log=logs[-1])
                time.sleep(rng.uniform(0.05, 1.0))
                end_process(early)
                report.kills_at_startup += 1
            logs.append(workdir / f"daemon-{trial}.log")
            daemon, url = start_daemon(config, logs[-1])
            with Load(url, random.Random(rng.random()), max_requests=40) as load:
                time.sleep(rng.uniform(0.2, 4.0))  # the random moment of the kill
                running = _status_counts(db).get("running", 0)
                daemon.kill()
                daemon.wait(10)
            report.kills_mid_batch += running > 0
            report.requests_sent += load.sent
            report.requests_cut += len(load.cut)
            if load.error:
                report.problems.append(f"trial {trial}: {load.error}")
            for job in load.acked:
                if job["id"] is not None:
                    if acked.get(job["id"], job["dedupe_key"]) != job["dedupe_key"]:
                        report.problems.append(f"job {job['id']} changed its key")
                    acked[job["id"]] = job["dedupe_key"]
            for keys in load.cut:
                cut |= keys
            check = db_rows(db, "PRAGMA integrity_check")
            if check != [("ok",)]:
                report.problems.append(f"trial {trial}: integrity_check {check}")
            say(f"trial {trial + 1}/{trials}: killed with {running} running; "
                f"{len(load.acked)} acked, {len(load.cut)} cut; {_status_counts(db)}")
        # the last start: drain for a while, then stop gracefully
        logs.append(workdir / "daemon-final.log")
        daemon, url = start_daemon(config, logs[-1])
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            counts = http("GET", f"{url}/status")[1]["jobs"]["total"]
            if counts["pending"] == 0 and counts["running"] == 0:
                break
            time.sleep(0.25)
        t0 = time.monotonic()
        daemon.terminate()
        code = daemon.wait(30)
        report.stop_seconds = time.monotonic() - t0
        if code != 0:
            report.problems.append(f"graceful stop exited {code}")
        if report.stop_seconds > 2 + 5:
            report.problems.append(f"graceful stop took {report.stop_seconds:.1f} s")
        _audit(report, db, sim_url, acked, cut, logs)
    finally:
        if daemon is not None:
            end_process(daemon)
        end_process(sim)
    report.seconds = time.monotonic() - started
    return report


def _audit(report: TrialReport, db: Path, sim_url: str, acked: dict[str, str], cut: set[str],
           logs: list[Path]) -> None:
    problems = report.problems
    report.jobs_acked = len(acked)
    report.jobs_by_status = _status_counts(db)
    rows = {str(i): (str(k), str(s)) for i, k, s in
            db_rows(db, "SELECT id, dedupe_key, status FROM market_jobs")}
    if report.jobs_by_status.get("running", 0):
        problems.append(f"{report.jobs_by_status['running']} jobs left running")
    if set(report.jobs_by_status) - {"pending", "completed", "failed"}:
        problems.append(f"unknown statuses {report.jobs_by_status}")
    lost = [i for i in acked if i not in rows]
    if lost:
        problems.append(f"{len(lost)} acknowledged jobs lost, e.g. {lost[:3]}")
    moved = [i for i, k in acked.items() if i in rows and rows[i][0] != k]
    if moved:
        problems.append(f"{len(moved)} jobs stored under another key, e.g. {moved[:3]}")
    unexplained = [i for i, (k, _) in rows.items() if i not in acked and k not in cut]
    if unexplained:
        problems.append(f"{len(unexplained)} jobs nobody enqueued, e.g. {unexplained[:3]}")
    dup = db_rows(db, "SELECT dedupe_key, count(*) FROM market_jobs WHERE status IN "
                      "('pending', 'running') GROUP BY dedupe_key HAVING count(*) > 1")
    if dup:
        problems.append(f"dedupe keys with two active jobs: {dup[:3]}")
    if db_rows(db, "PRAGMA integrity_check") != [("ok",)]:
        problems.append("integrity_check failed at the end")
    if report.jobs_by_status.get("completed", 0) == 0:
        problems.append("no job completed: the trials made no progress")
    stats = sim_stats(sim_url)
    problems.extend(limit_violations(stats))
    recorded = dict(Counter(str(p) for (p,) in db_rows(db, "SELECT provider FROM market_calls")))
    for name, s in stats.items():
        report.sim_requests[name] = int(s["requests"])
        report.calls_recorded[name] = int(recorded.get(name, 0))
        report.rate_limited += int(s["rate_limited"])
        for window in s["limits"]:
            report.max_seen[f"{name} {window['limit']}"] = f"{window['max_seen']}/{window['count']}"
        if s["requests"] > recorded.get(name, 0):
            problems.append(f"{name}: the simulator saw {s['requests']} calls, the daemon "
                            f"recorded only {recorded.get(name, 0)}")
    for log in logs:
        found = log_problems(log.read_text())
        if found:
            problems.append(f"{log.name}: {found[:2]}")


@pytest.mark.parametrize("limit", ["20/10s", "30/90s"], ids=["one-at-a-time", "reserved-ahead"])
def test_sigkill_at_random_moments_loses_nothing_and_keeps_limits(tmp_path: Path,
                                                                  limit: str) -> None:
    """MARKETD_CRASH_TRIALS SIGKILLs at seeded random moments under load, then a graceful stop:
    every promise in the module docstring holds. With a short window each call is reserved
    alone; with only a long one a batch reserves its calls ahead, and kills leave some
    reserved and unsent (which may only under-use the limit)."""
    trials = int(os.environ.get("MARKETD_CRASH_TRIALS", "5"))
    seed = int(os.environ.get("MARKETD_CRASH_SEED", "1"))
    report = crash_trials(tmp_path, trials, seed, limit=limit, drain_s=25)
    print(report.summary())
    assert report.problems == [], report.summary()
    assert report.jobs_acked > 0 and report.requests_sent > trials


def test_a_kill_during_a_batch_leaves_nothing_running(tmp_path: Path) -> None:
    """The deterministic core of the trials: kill while jobs are running (slow provider), and the
    restart returns every one of them to pending before it serves; they then complete."""
    sim, sim_url = start_simulator(tmp_path / "sim.log", "--latency-ms", "alias=1500",
                                   *(a for p in PROVIDERS for a in ("--limit", f"{p}=20/10s")))
    db = tmp_path / "marketd.db"
    config = daemon_config(tmp_path / "c.toml", port=free_port(), db=db, sim_url=sim_url)
    daemon: subprocess.Popen[str] | None = None
    try:
        daemon, url = start_daemon(config, tmp_path / "d1.log")
        jobs = [{"provider": "alias", "sku": sku, "size": size, "priority": "manual"}
                for sku, size in UNIVERSE[:6]]
        assert http("POST", f"{url}/enqueue", {"jobs": jobs})[0] == 202
        wait_until(lambda: _status_counts(db).get("running", 0) > 0, what="a batch in flight")
        daemon.kill()
        daemon.wait(10)
        assert _status_counts(db).get("running", 0) > 0  # the crash left them claimed
        daemon, url = start_daemon(config, tmp_path / "d2.log")
        wait_until(lambda: _status_counts(db) == {"completed": 6}, timeout=30,
                   what="all six completed after the restart")
        daemon.terminate()
        assert daemon.wait(15) == 0
        assert limit_violations(sim_stats(sim_url)) == []
        for log in ("d1.log", "d2.log"):
            assert log_problems((tmp_path / log).read_text()) == []
        rescued = [line for line in (tmp_path / "d2.log").read_text().splitlines()
                   if "crash_leftovers_rescued" in line]
        assert rescued, "the restart did not say it rescued the crash's leftovers"
    finally:
        if daemon is not None:
            end_process(daemon)
        end_process(sim)
