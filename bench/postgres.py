"""marketd on PostgreSQL: one daemon against one on SQLite, three daemons against one, and marketd
against procrastinate, as ratios from one run.

Every daemon is its own process (bench/pg_daemon.py: ``marketd.app.serve`` itself, with the
instant provider of bench._common for stockx and a 1,000,000/hour limit); every database is
made for the round (``marketd_bench_<hex>`` on the server, or an SQLite file) and dropped after.
Configurations: ``sqlite`` (one daemon on an SQLite file), ``pg1`` (one daemon on PostgreSQL),
``pg3`` (three daemons on one PostgreSQL database).

- **end-to-end jobs/s**: the bench process posts the jobs over HTTP, 1,000 per request (the
  portfolio mix of bench/end_to_end.py: 3.3 sizes per SKU), each daemon a share of the requests
  (all daemons at once); then tells every daemon to drain (scheduler runs until one claims
  nothing: bench/pg_daemon.py), waits for all, and drains again while the database still has a
  job pending or running, so the figure is right whether every daemon runs batches or one
  holds each provider's lane (the ``batches`` column: jobs each daemon ran). Jobs / (enqueue +
  drain) seconds. Checked after: every job completed, and one price-history row per job (none
  done twice).
- **enqueue req/s over HTTP**: one new job per request, wrk (or bench._loadgen) with 32
  connections in all (three daemons: three load processes of 11 each, at once), for
  ``--seconds``; every answer a 202.
- **lanes spread** (reported, not judged): three daemons on one database, each enabling one
  of the three providers and sent that provider's jobs, so each holds one lane: what three
  daemons could do if the lanes were spread over them (marketd gives every free lane to the
  first daemon that asks, so ``pg3`` runs them all on one).
- **procrastinate** (PyPI): on a database of its own with its schema applied, its async API
  defers the same number of no-op jobs (``batch_defer_async``, 1,000 a call) and a worker
  (``run_worker_async(wait=False)``, concurrency 1, its default) runs them until the queue is
  empty (bench/pg_procrastinate.py). Jobs / (defer + run) seconds. Concurrency 8 is reported
  beside it.

Without a server (or asyncpg, or procrastinate) it says why and exits 0 without a JSON
(``python -m bench`` lists it as skipped), or 1 under ``MARKETD_REQUIRE_SERVICES=1``.

Goals (issue 12): marketd's end-to-end jobs/s on PostgreSQL >= 1.5x procrastinate's; three
daemons >= 2x one (both measures). PostgreSQL against SQLite is reported, not judged. The CPU
seconds of the daemons, of the PostgreSQL server's processes and of the whole machine during
each measurement are printed beside it (where the time goes; the machine's cores bound what
three daemons can add). Where three daemons miss 2x, one more end-to-end of each PostgreSQL
configuration runs with the drains under pyinstrument (the busiest daemon's event loop):
``postgres.profile.pg1.txt`` and ``postgres.profile.pg3.txt`` beside the JSON.

The server: ``MARKETD_BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
postgres``, the admin database; trust auth).

    python -m bench.postgres [--quick] [--jobs 2000] [--rounds 3] [--seconds 3]
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import ROOT, Report, median, parser, table
from bench.end_to_end import SIZES
from bench.pg_daemon import PROVIDERS

ADMIN_URL = os.environ.get("MARKETD_BENCH_POSTGRES_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
CONFIGS = ("sqlite", "pg1", "pg3")  # measured both ways
# end to end only: three daemons, each enabling one provider (so each holds one lane), sent
# that provider's jobs: what spreading the lanes over the daemons would give (bench-only)
E2E_ONLY = ("pg3_spread",)
CHUNK = 1000
CONNS = 32


def workload(n: int, tag: str) -> list[tuple[str, str, str]]:
    """``n`` (provider, sku, size) jobs, bench/end_to_end.py's portfolio mix (SKUs with 4, 3, 3
    sizes in turn) spread over stockx, alias and ebay, three SKUs each in turn (ebay makes a
    call per job, the others one per SKU)."""
    jobs: list[tuple[str, str, str]] = []
    k = 0
    while len(jobs) < n:
        provider = PROVIDERS[(k // 3) % len(PROVIDERS)]
        jobs += [(provider, f"{tag}{k:06d}", s) for s in SIZES[:4 if k % 3 == 0 else 3]]
        k += 1
    return jobs[:n]


def child_env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("MARKETD_", "STOCKX_", "ALIAS_", "EBAY_"))}
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def db_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def missing_service() -> str | None:
    """Why this benchmark cannot run here (no server, or a library missing); None if it can."""
    import importlib.util

    for module, extra in (("asyncpg", "postgres"), ("procrastinate", "bench")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install '.[{extra}]')"
    import asyncpg

    try:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        return f"no PostgreSQL answers at {ADMIN_URL}: {exc}"
    await conn.close()
    return None


class Databases:
    """Databases made for this run on the server, every one dropped at the end."""

    def __init__(self) -> None:
        self.admin: Any = None
        self.names: list[str] = []
        self.lock = asyncio.Lock()  # one admin connection: one statement at a time

    async def __aenter__(self) -> Databases:
        import asyncpg

        self.admin = await asyncpg.connect(ADMIN_URL, timeout=10)
        return self

    async def new(self) -> str:
        name = f"marketd_bench_{uuid.uuid4().hex[:12]}"
        async with self.lock:
            await self.admin.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return name

    async def drop(self, name: str) -> None:
        async with self.lock:
            await self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.names.remove(name)

    async def __aexit__(self, *exc: object) -> None:
        try:
            for name in list(self.names):
                await self.drop(name)
        finally:
            await self.admin.close()


# ---- CPU accounting (for reading) ------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of one process, seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def postgres_cpu(databases: list[str]) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend (and autovacuum worker) of ``databases``, by pid:
    every live server process whose title names one of them (``postgres: ... USER DB HOST``).
    Other databases on the server (other users' tests) are left out."""
    out: dict[int, float] = {}
    if not databases:
        return out
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            title = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not title.startswith("postgres:") or not any(f" {db} " in title
                                                            for db in databases):
                continue
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(d.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def load_cpu() -> float:
    """CPU seconds of this process (the HTTP client) and its reaped children (wrk)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (every core), from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts[:8]) - idle) / TICK


class CpuMeter:
    """CPU seconds used while the block runs: the daemon processes', their databases' server
    processes' (looked at every 0.2 s too, so a backend that exits meanwhile still counts up
    to its last look), the bench process's with its reaped load processes, the machine's."""

    def __init__(self, pids: list[int], databases: list[str]) -> None:
        self.pids = pids
        self.databases = databases
        self.backends: dict[int, list[float]] = {}  # pid: [first look, last look]
        self.used: dict[str, float] = {}

    def look(self) -> None:
        for pid, cpu in postgres_cpu(self.databases).items():
            self.backends.setdefault(pid, [cpu, cpu])[1] = cpu

    def sample(self) -> dict[str, float]:
        return {"daemons": sum(proc_cpu(p) for p in self.pids), "load": load_cpu(),
                "machine": machine_busy(), "wall": time.perf_counter()}

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self.look()

    async def __aenter__(self) -> CpuMeter:
        self.look()
        self.start = self.sample()
        self.task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        end = self.sample()
        self.task.cancel()
        self.look()
        self.used = {k: end[k] - self.start[k] for k in end}
        self.used["postgres"] = sum(last - first for first, last in self.backends.values())

    def row(self) -> dict[str, float]:
        """CPU seconds per wall second (2.0: two cores busy): the daemons, their databases'
        server processes, the bench process with its load processes, the whole machine, and
        the rest of it (anything else running on the machine meanwhile, the server's shared
        processes such as the WAL writer included)."""
        u = self.used
        wall = u["wall"] or 1e-9
        other = u["machine"] - u["daemons"] - u["postgres"] - u["load"]
        return {"cpu_daemons": u["daemons"] / wall, "cpu_postgres": u["postgres"] / wall,
                "cpu_load": u["load"] / wall, "cpu_machine": u["machine"] / wall,
                "cpu_other": max(0.0, other) / wall}


# ---- the daemon processes --------------------------------------------------------------------


class DaemonProc:
    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url

    @classmethod
    async def start(cls, where: list[str]) -> DaemonProc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.pg_daemon", *where, cwd=ROOT, env=child_env(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            await proc.wait()
            raise RuntimeError(f"bench.pg_daemon {where} exited {proc.returncode} before ready")
        return cls(proc, json.loads(line)["url"].rstrip("/"))

    async def command(self, line: str, answer: bool = True) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        if not answer:
            return {}
        out = await self.proc.stdout.readline()
        if not out:
            raise RuntimeError(f"daemon {self.url} exited {await self.proc.wait()} on {line!r}")
        return dict(json.loads(out))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            try:
                await self.command("quit", answer=False)
                self.proc.stdin.close()  # type: ignore[union-attr]
                await asyncio.wait_for(self.proc.wait(), 30)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                self.proc.kill()
                await self.proc.wait()


@dataclass
class Setup:
    name: str
    daemons: list[DaemonProc]
    db: str  # a database name on the server, or an SQLite file's path
    spread: bool = False  # daemon i runs (and is sent the jobs of) PROVIDERS[i] only

    @property
    def pids(self) -> list[int]:
        return [d.proc.pid for d in self.daemons]

    @property
    def databases(self) -> list[str]:
        return [] if self.name == "sqlite" else [self.db]


async def start_setup(name: str, dbs: Databases, tmp: Path) -> Setup:
    if name == "sqlite":
        path = str(tmp / f"sqlite-{uuid.uuid4().hex[:8]}.db")
        return Setup(name, [await DaemonProc.start(["--path", path])], path)
    db = await dbs.new()
    count = 3 if name == "pg3" else 1
    # all at once: migrate holds an advisory lock; the later ones find nothing to do
    if name == "pg3_spread":  # each daemon one provider: the lanes spread by configuration
        daemons = await asyncio.gather(*(DaemonProc.start(["--url", db_url(db), "--providers", p])
                                         for p in PROVIDERS))
        return Setup(name, list(daemons), db, spread=True)
    daemons = await asyncio.gather(*(DaemonProc.start(["--url", db_url(db)])
                                     for _ in range(count)))
    return Setup(name, list(daemons), db)


async def stop_setup(setup: Setup, dbs: Databases) -> None:
    await asyncio.gather(*(d.stop() for d in setup.daemons))
    if setup.name != "sqlite":
        await dbs.drop(setup.db)


async def db_counts(setup: Setup) -> dict[str, int]:
    """Jobs by status, and price-history rows, read from the database itself."""
    sql_jobs = "SELECT status, count(*) FROM market_jobs GROUP BY status"
    sql_hist = "SELECT count(*) FROM market_price_history"
    if setup.name == "sqlite":
        import sqlite3

        conn = sqlite3.connect(setup.db)
        try:
            out = {str(k): int(v) for k, v in conn.execute(sql_jobs).fetchall()}
            out["history"] = conn.execute(sql_hist).fetchone()[0]
            return out
        finally:
            conn.close()
    import asyncpg

    conn = await asyncpg.connect(db_url(setup.db))
    try:
        out = {str(r[0]): int(r[1]) for r in await conn.fetch(sql_jobs)}
        out["history"] = await conn.fetchval(sql_hist)
        return out
    finally:
        await conn.close()


# ---- end to end ------------------------------------------------------------------------------


async def end_to_end(setup: Setup, n: int, tag: str,
                     profile_to: Path | None = None) -> dict[str, Any]:
    import aiohttp

    k = len(setup.daemons)
    jobs = workload(n, tag)
    if setup.spread:  # each daemon its own provider's jobs
        shares = [[j for j in jobs if j[0] == p] for p in PROVIDERS]
    else:  # the requests dealt in turn
        chunks = [jobs[i:i + CHUNK] for i in range(0, len(jobs), CHUNK)]
        shares = [[j for c in chunks[i::k] for j in c] for i in range(k)]

    def bodies(share: list[tuple[str, str, str]]) -> list[bytes]:
        return [json.dumps({"jobs": [{"provider": p, "sku": s, "size": z, "priority": 100}
                                     for p, s, z in share[i:i + CHUNK]]}).encode()
                for i in range(0, len(share), CHUNK)]

    headers = {"Content-Type": "application/json"}

    async def post_all(session: aiohttp.ClientSession, d: DaemonProc, mine: list[bytes]) -> None:
        for body in mine:
            async with session.post(d.url + "/enqueue", data=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status != 202:
                    raise RuntimeError(f"enqueue answered {resp.status}: {text[:300]}")

    if profile_to is not None:  # every daemon's first drain: the busiest one's is kept
        for i, d in enumerate(setup.daemons):
            await d.command(f"profile {profile_to}.{i}", answer=False)
    async with (aiohttp.ClientSession() as session,
                CpuMeter(setup.pids, setup.databases) as cpu_enq):
        await asyncio.gather(*(post_all(session, d, bodies(share))
                               for d, share in zip(setup.daemons, shares, strict=True)))
    jobs_by = [0] * k
    async with CpuMeter(setup.pids, setup.databases) as cpu_drain:
        for _ in range(20):
            drains = await asyncio.gather(*(d.command("drain") for d in setup.daemons))
            jobs_by = [a + d["jobs"] for a, d in zip(jobs_by, drains, strict=True)]
            counts = await db_counts(setup)
            if not counts.get("pending") and not counts.get("running"):
                break
    if counts.get("completed") != n:
        raise RuntimeError(f"{setup.name}: jobs {counts}, expected {n} completed")
    if counts["history"] != n:
        raise RuntimeError(f"{setup.name}: {counts['history']} price-history rows for {n} jobs "
                           "(a job done twice, or one missed)")
    enqueue_s, drain_s = cpu_enq.used["wall"], cpu_drain.used["wall"]
    return {"enqueue_s": enqueue_s, "drain_s": drain_s, "total_s": enqueue_s + drain_s,
            "jobs_s": n / (enqueue_s + drain_s), "enqueue_jobs_s": n / enqueue_s,
            "drain_jobs_s": n / drain_s, "batches_jobs": jobs_by,
            "cpu_enqueue": cpu_enq.row(), "cpu_drain": cpu_drain.row()}


async def procrastinate(dbs: Databases, n: int, tag: str, concurrency: int) -> dict[str, Any]:
    db = await dbs.new()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.pg_procrastinate", "--url", db_url(db), "--jobs", str(n),
            "--tag", tag, "--chunk", str(CHUNK), "--concurrency", str(concurrency),
            "--apply-schema", cwd=ROOT, env=child_env(), stdout=asyncio.subprocess.PIPE)
        async with CpuMeter([], [db]) as cpu:  # the process's own CPU is in its answer
            out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"bench.pg_procrastinate exited {proc.returncode}")
        res = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        await dbs.drop(db)
    row = cpu.row()  # the schema's setup and the interpreter's start are in it too
    row["cpu_daemons"] = res["cpu_s"] / cpu.used["wall"]  # reaped: it is in cpu_load too
    row["cpu_load"] = max(0.0, row["cpu_load"] - row["cpu_daemons"])
    return {**res, "jobs_s": n / res["total_s"], "defer_jobs_s": n / res["defer_s"],
            "process_jobs_s": n / res["process_s"], "cpu": row}


# ---- enqueue over HTTP -----------------------------------------------------------------------


async def enqueue_http(setup: Setup, tool: str, seconds: float, tag: str,
                       lua: Path) -> dict[str, Any]:
    from bench.enqueue_single import load

    k = len(setup.daemons)
    conns = max(1, round(CONNS / k))
    async with CpuMeter(setup.pids, setup.databases) as cpu:
        results = await asyncio.gather(*(
            load(d.url + "/enqueue", tool, conns, seconds, f"{tag}d{i}", lua)
            for i, d in enumerate(setup.daemons)))
    errors = sum(int(r["errors"]) for r in results)
    if errors:
        raise RuntimeError(f"{setup.name}: {errors} enqueue requests failed")
    return {"req_s": sum(r["rps"] for r in results), "per_daemon": [r["rps"] for r in results],
            "cpu": cpu.row()}


# ---- the run ---------------------------------------------------------------------------------


async def run(args: Any) -> Report:
    from bench.enqueue_single import LUA

    n = 100 if args.quick else args.jobs
    rounds = 1 if args.quick else args.rounds
    seconds = 1.0 if args.quick else args.seconds
    tool = args.loadgen or ("wrk" if shutil.which("wrk") else "python")
    report = Report("postgres", args.quick, params={
        "jobs": n, "rounds": rounds, "mix": "portfolio (3.3 sizes per SKU)",
        "enqueue_chunk": CHUNK, "http_connections": CONNS, "seconds_per_http_run": seconds,
        "load_process": tool, "procrastinate_concurrency": args.procrastinate_concurrency,
        "limit": "1000000/hour each, stockx, alias and ebay",
        "server": ADMIN_URL.rsplit("@", 1)[-1]})
    e2e: dict[str, list[dict[str, Any]]] = {c: [] for c in (*CONFIGS, *E2E_ONLY)}
    http: dict[str, list[dict[str, Any]]] = {c: [] for c in CONFIGS}
    proc1: list[dict[str, Any]] = []
    judged_c, *other_c = args.procrastinate_concurrency
    proc_other: dict[int, list[dict[str, Any]]] = {c: [] for c in other_c}
    with tempfile.TemporaryDirectory(prefix="marketd-bench-") as tmpdir:
        tmp = Path(tmpdir)
        lua = tmp / "post.lua"
        lua.write_text(LUA)
        async with Databases() as dbs:
            for r in range(rounds):
                order = list(CONFIGS) if r % 2 == 0 else list(reversed(CONFIGS))
                started = await asyncio.gather(*(start_setup(c, dbs, tmp)
                                                 for c in (*CONFIGS, *E2E_ONLY)),
                                               return_exceptions=True)
                setups = {s.name: s for s in started if isinstance(s, Setup)}
                try:
                    for s in started:
                        if isinstance(s, BaseException):
                            raise s
                    for c in [*order, *E2E_ONLY]:
                        e2e[c].append(await end_to_end(setups[c], n, f"E{r}{c}"))
                    proc1.append(await procrastinate(dbs, n, f"Q{r}", judged_c))
                    for c in other_c:
                        proc_other[c].append(await procrastinate(dbs, n, f"R{r}c{c}", c))
                    for c in order:
                        http[c].append(await enqueue_http(setups[c], tool, seconds, f"H{r}{c}",
                                                          lua))
                finally:
                    await asyncio.gather(*(stop_setup(s, dbs) for s in setups.values()))
                for c in (*CONFIGS, *E2E_ONLY):
                    x = e2e[c][-1]
                    report.add(round=r + 1, config=c, e2e_jobs_s=x["jobs_s"],
                               enqueue_batch_jobs_s=x["enqueue_jobs_s"],
                               drain_jobs_s=x["drain_jobs_s"],
                               http_req_s=http[c][-1]["req_s"] if c in http else "",
                               drain_cpu_daemons=x["cpu_drain"]["cpu_daemons"],
                               drain_cpu_postgres=x["cpu_drain"]["cpu_postgres"],
                               drain_cpu_machine=x["cpu_drain"]["cpu_machine"],
                               drain_cpu_other=x["cpu_drain"]["cpu_other"],
                               batches=x["batches_jobs"])
                p = proc1[-1]
                report.add(round=r + 1, config="procrastinate", e2e_jobs_s=p["jobs_s"],
                           enqueue_batch_jobs_s=p["defer_jobs_s"],
                           drain_jobs_s=p["process_jobs_s"],
                           drain_cpu_daemons=p["cpu"]["cpu_daemons"],
                           drain_cpu_postgres=p["cpu"]["cpu_postgres"],
                           drain_cpu_machine=p["cpu"]["cpu_machine"],
                           drain_cpu_other=p["cpu"]["cpu_other"])
            if args.profile and (m_ratio := median([x["jobs_s"] for x in e2e["pg3"]]) / median(
                    [x["jobs_s"] for x in e2e["pg1"]])) < 2.0:
                report.extra["profiles"] = await profiles(dbs, tmp, n, args.out)
                report.extra["profiles"]["why"] = f"three daemons / one = {m_ratio:.2f}x < 2x"

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return median([x[key] for x in rows])

    m = {c: med(e2e[c], "jobs_s") for c in e2e}
    md = {c: med(e2e[c], "drain_jobs_s") for c in e2e}
    me = {c: med(e2e[c], "enqueue_jobs_s") for c in e2e}
    h = {c: med(http[c], "req_s") for c in CONFIGS}
    p1, p1d = med(proc1, "jobs_s"), med(proc1, "process_jobs_s")
    for c in e2e:
        report.add(round="median", config=c, e2e_jobs_s=m[c], enqueue_batch_jobs_s=me[c],
                   drain_jobs_s=md[c], http_req_s=h.get(c, ""))
    report.add(round="median", config="procrastinate", e2e_jobs_s=p1,
               enqueue_batch_jobs_s=med(proc1, "defer_jobs_s"), drain_jobs_s=p1d)
    for c, rows in proc_other.items():
        report.add(round="median", config=f"procrastinate c={c}", e2e_jobs_s=med(rows, "jobs_s"),
                   enqueue_batch_jobs_s=med(rows, "defer_jobs_s"),
                   drain_jobs_s=med(rows, "process_jobs_s"))
    reported = [
        ["PostgreSQL / SQLite, one daemon", "end-to-end jobs/s", m["pg1"] / m["sqlite"]],
        ["PostgreSQL / SQLite, one daemon", "enqueue req/s (1 job/request)",
         h["pg1"] / h["sqlite"]],
        ["PostgreSQL / SQLite, one daemon", "enqueue jobs/s (1,000/request)",
         me["pg1"] / me["sqlite"]],
        ["PostgreSQL / SQLite, one daemon", "drain jobs/s", md["pg1"] / md["sqlite"]],
        ["three daemons / one, PostgreSQL", "enqueue jobs/s (1,000/request)",
         me["pg3"] / me["pg1"]],
        ["three daemons / one, PostgreSQL", "drain jobs/s", md["pg3"] / md["pg1"]],
        ["three daemons, one provider each (lanes spread) / one", "end-to-end jobs/s",
         m["pg3_spread"] / m["pg1"]],
        ["three daemons, one provider each (lanes spread) / one", "drain jobs/s",
         md["pg3_spread"] / md["pg1"]],
        ["marketd PostgreSQL / procrastinate", "drain (worker) jobs/s", md["pg1"] / p1d],
    ]
    # where the time goes: CPU seconds of the daemons and their server processes (and, for
    # HTTP, the load processes) per job; how many cores one daemon's measurement kept busy, and
    # how many the rest of the machine took meanwhile; and what the machine's cores would allow
    # three daemons if each job kept costing what it costs one (the others' share aside)
    cores = os.cpu_count() or 1

    def ours(cpu: dict[str, float], load: bool = False) -> float:
        return cpu["cpu_daemons"] + cpu["cpu_postgres"] + (cpu["cpu_load"] if load else 0.0)

    cpu_ms = {c: median([ours(x["cpu_drain"]) / x["drain_jobs_s"] * 1000 for x in e2e[c]])
              for c in e2e}
    cpu_us_http = {c: median([ours(x["cpu"], True) / x["req_s"] * 1e6 for x in http[c]])
                   for c in CONFIGS}
    busy = median([ours(x["cpu_drain"]) for x in e2e["pg1"]])
    busy_http = median([ours(x["cpu"], True) for x in http["pg1"]])
    other = median([x["cpu_drain"]["cpu_other"] for c in CONFIGS for x in e2e[c]]
                   + [x["cpu"]["cpu_other"] for c in CONFIGS for x in http[c]])
    report.extra["cpu"] = {
        "drain_ms_per_job": {c: round(v, 3) for c, v in cpu_ms.items()},
        "http_us_per_request": {c: round(v, 1) for c, v in cpu_us_http.items()},
        "pg1_drain_cores_busy": round(busy, 3), "pg1_http_cores_busy": round(busy_http, 3),
        "other_processes_cores_busy": round(other, 3), "cores": cores}
    reported += [
        ["three daemons / one, PostgreSQL",
         f"drain: ceiling of {cores} cores at one daemon's CPU per job", cores / busy],
        ["three daemons / one, PostgreSQL",
         f"enqueue req/s: ceiling of {cores} cores at one daemon's CPU per request",
         cores / busy_http]]
    for c, rows in proc_other.items():
        reported.append([f"marketd PostgreSQL / procrastinate concurrency {c}",
                         "end-to-end jobs/s", m["pg1"] / med(rows, "jobs_s")])
    report.extra["reported"] = [{"compared": a, "measure": b, "ratio": round(c, 3)}
                                for a, b, c in reported]
    print("\nreported, not judged (medians)")
    print(table(["compared", "measure", "ratio"], [[a, b, f"{c:.2f}x"] for a, b, c in reported]))
    print("\nCPU per job of the drain, daemons + their server processes (ms): " + ", ".join(
        f"{c} {v:.3f}" for c, v in cpu_ms.items()))
    print("CPU per enqueue request, daemons + server + load process (us): " + ", ".join(
        f"{c} {v:.0f}" for c, v in cpu_us_http.items()))
    print(f"one PostgreSQL daemon keeps {busy:.2f} of {cores} cores busy draining, "
          f"{busy_http:.2f} taking requests; the rest of the machine took {other:.2f} cores "
          "meanwhile (median; other processes: the figures above are only as good as that)")
    report.goal("end-to-end jobs/s, marketd on PostgreSQL vs procrastinate", m["pg1"] / p1, 1.5,
                higher_is_better=True)
    report.goal("end-to-end jobs/s, three daemons vs one (PostgreSQL)", m["pg3"] / m["pg1"], 2.0,
                higher_is_better=True)
    report.goal("enqueue req/s over HTTP, three daemons vs one (PostgreSQL)", h["pg3"] / h["pg1"],
                2.0, higher_is_better=True)
    report.extra["machine_cpus"] = os.cpu_count()
    return report


async def profiles(dbs: Databases, tmp: Path, n: int, out: Path) -> dict[str, str]:
    """One more end-to-end of each PostgreSQL configuration with every daemon's first drain
    under pyinstrument (its event loop only: the server's time shows as waiting); the profile
    of the daemon that ran the most jobs is kept."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for c in ("pg1", "pg3"):
        setup = await start_setup(c, dbs, tmp)
        path = (out / f"postgres.profile.{c}.txt").resolve()
        try:
            res = await end_to_end(setup, n, f"P{c}", profile_to=path)
        finally:
            await stop_setup(setup, dbs)
        busiest = max(range(len(res["batches_jobs"])), key=lambda i: res["batches_jobs"][i])
        for i in range(len(setup.daemons)):
            part = path.with_name(f"{path.name}.{i}")
            if i == busiest:
                part.replace(path)
            else:
                part.unlink(missing_ok=True)
        written[c] = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--loadgen", choices=("wrk", "python"), default=None)
    p.add_argument("--procrastinate-concurrency", type=int, nargs="+", default=[1],
                   help="the worker's concurrency: the first is judged, the others reported "
                        "(default 1, procrastinate's own default)")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    args = p.parse_args(argv)
    if args.quick:
        args.profile = False
    missing = asyncio.run(missing_service())
    if missing:
        # no JSON: `python -m bench` lists it as skipped; CI requires the server
        (args.out / "postgres.json").unlink(missing_ok=True)
        required = os.environ.get("MARKETD_REQUIRE_SERVICES") == "1"
        print(f"bench.postgres: {'FAILED' if required else 'SKIPPED'}: {missing}",
              file=sys.stderr)
        return 1 if required else 0
    report = asyncio.run(run(args))
    report.finish(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
