"""Run marketd as a real process (``python -m marketd``) and wait on it without sleeping blind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def marketd(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "marketd", *args], capture_output=True,
                          text=True, timeout=timeout, env=_env(env), cwd=cwd, check=False)


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "marketd", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(env))


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKETD_", "STOCKX_",
                                                                     "ALIAS_", "EBAY_"))}
    env.pop("CRON_SECRET", None)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 30) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = dict(headers or {})
    if data is not None:  # urllib's default is a form, which JSON endpoints refuse (415)
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_until(predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
    """Poll a real process's state (not the clock of the code under test)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---- crash, fault and security trials (issue 6): processes whose logs go to files ----------

PROVIDER_NAMES = ("stockx", "alias", "ebay")
# what must never appear in the daemon's log: the marks of an unhandled exception
CRASH_EVENTS = ("request_crashed", "scheduler_task_failed", "scheduler_run_crashed",
                "provider_client_crashed", "after_run_hook_failed", "client_close_failed")


def start_logged(*args: str, log: Path, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[str]:
    """``python -m marketd ARGS`` with stdout and stderr appended to ``log`` (a pipe nobody
    reads would fill up and stall a chatty daemon)."""
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-m", "marketd", *args], text=True,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=_env(env))


def start_python_logged(code: str, *args: str, log: Path) -> subprocess.Popen[str]:
    """``python -c CODE ARGS`` with the repository importable, output appended to ``log``."""
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-c", code, *args], text=True,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=_env(None))


def end_process(proc: subprocess.Popen[str], timeout: float = 10) -> int:
    """SIGKILL a process this test started (if it still runs) and reap it."""
    if proc.poll() is None:
        proc.kill()
    return proc.wait(timeout)


def start_simulator(log: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """The built-in simulator (``marketd simulator ARGS``) on a free loopback port."""
    port = free_port()
    proc = start_logged("simulator", "--port", str(port), *args, log=log)
    url = f"http://127.0.0.1:{port}"
    _wait_alive(proc, lambda: http("GET", f"{url}/_sim/stats", timeout=2)[0] == 200,
                "simulator", log)
    return proc, url


_SIM_MAIN = "from tests.e2e.helpers import custom_simulator_main; custom_simulator_main()"


def start_custom_simulator(log: Path, options: dict[str, Any]
                           ) -> tuple[subprocess.Popen[str], str]:
    """The simulator with options its command line lacks (``retry_after``, ``slow_rate`` …):
    ``{"seed": 0, "providers": {"alias": {"limits": ["20/10s"], "retry_after": true}}}``.
    It also serves ``POST /_test/truncate {"provider", "count", "mode"}``: the next ``count``
    successful API answers of that provider are cut in half, either as a complete but
    truncated JSON body (mode ``json``) or by closing the connection half-way through a body
    whose Content-Length promised more (mode ``cut``)."""
    port = free_port()
    proc = start_python_logged(_SIM_MAIN, str(port), json.dumps(options), log=log)
    url = f"http://127.0.0.1:{port}"
    _wait_alive(proc, lambda: http("GET", f"{url}/_sim/stats", timeout=2)[0] == 200,
                "custom simulator", log)
    return proc, url


def custom_simulator_main() -> None:
    """Entry point of :func:`start_custom_simulator`'s child process."""
    from dataclasses import replace

    from aiohttp import web

    from marketd.simulator import SimulatorOptions, create_simulator_app

    port, raw = int(sys.argv[1]), json.loads(sys.argv[2])
    options = SimulatorOptions(seed=int(raw.get("seed", 0)))
    for name, fields in raw.get("providers", {}).items():
        options = replace(options, **{name: replace(options.provider(name), **fields)})
    app = create_simulator_app(options)
    prefixes = {"stockx": "/v2/", "alias": "/api/v1/", "ebay": "/buy/browse/v1/"}
    pending: dict[str, list[str]] = {name: [] for name in prefixes}

    @web.middleware
    async def truncate(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        name = next((n for n, p in prefixes.items() if request.path.startswith(p)), None)
        if name is None or not pending[name] or response.status != 200 \
                or not isinstance(response, web.Response) \
                or not isinstance(response.body, bytes) or not response.body:
            return response
        mode = pending[name].pop(0)
        body = response.body
        half = body[: max(1, len(body) // 2)]
        if mode == "json":
            response.body = half
            return response
        cut = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        cut.content_length = len(body)
        await cut.prepare(request)
        await cut.write(half)
        if request.transport is not None:
            request.transport.close()
        return cut

    async def control(request: web.Request) -> web.Response:
        body = await request.json()
        pending[str(body["provider"])].extend(
            [str(body.get("mode", "json"))] * int(body.get("count", 1)))
        return web.json_response({"pending": pending})

    app.middlewares.insert(0, truncate)
    app.router.add_post("/_test/truncate", control)
    print(f"custom simulator on {port}", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None,
                handle_signals=True)


def _wait_alive(proc: subprocess.Popen[str], ready: Any, what: str, log: Path,
                timeout: float = 30) -> None:
    def check() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}: "
                                 f"{log.read_text()[-2000:]}")
        return bool(ready())

    wait_until(check, timeout=timeout, what=what)


def daemon_config(path: Path, *, port: int, db: Path, sim_url: str, limits: str = '["20/10s"]',
                  scheduler: dict[str, Any] | None = None,
                  providers: dict[str, dict[str, Any]] | None = None,
                  security: dict[str, str] | None = None, secrets_in_file: bool = True) -> Path:
    """A daemon config whose three providers talk to ``sim_url`` with ``limits``.
    ``providers`` overrides keys per provider (``{"alias": {"base_url": …}}``); values are
    written as TOML literals through json.dumps."""
    sched = {"interval_seconds": 1, "retry_base_seconds": 1, "retry_max_seconds": 2,
             **(scheduler or {})}
    creds: dict[str, dict[str, Any]] = {
        "stockx": {"api_key": "k", "client_id": "c", "client_secret": "s", "refresh_token": "r"},
        "alias": {"api_token": "goatapi_t"},
        "ebay": {"client_id": "c", "client_secret": "s"},
    }
    lines = [f"[server]\nport = {port}", f"[database]\npath = {json.dumps(str(db))}",
             "[scheduler]", *(f"{k} = {json.dumps(v)}" for k, v in sched.items()),
             "[security]", *(f"{k} = {json.dumps(v)}" for k, v in (security or {}).items()),
             '[logging]\nformat = "json"']
    for name in PROVIDER_NAMES:
        values: dict[str, Any] = {"base_url": sim_url, "timeout_s": 10}
        if name == "stockx":
            values["auth_url"] = sim_url
        if secrets_in_file:
            values.update(creds[name])
        values.update((providers or {}).get(name, {}))
        lines.append(f"[providers.{name}]\nlimits = {limits}")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in values.items())
    return write_config(path, "\n".join(lines) + "\n")


def start_daemon(config: Path, log: Path, env: dict[str, str] | None = None
                 ) -> tuple[subprocess.Popen[str], str]:
    """``marketd serve -c CONFIG``, waited on until /healthz answers 200."""
    port = _config_port(config)
    url = f"http://127.0.0.1:{port}"
    proc = start_logged("serve", "-c", str(config), log=log, env=env)
    _wait_alive(proc, lambda: http("GET", f"{url}/healthz", timeout=2)[0] == 200,
                "daemon ready", log)
    return proc, url


def _config_port(config: Path) -> int:
    import tomllib

    return int(tomllib.loads(config.read_text())["server"]["port"])


def sim_stats(sim_url: str) -> dict[str, Any]:
    status, body = http("GET", f"{sim_url}/_sim/stats")
    assert status == 200, body
    providers: dict[str, Any] = body["providers"]
    return providers


def limit_violations(stats: dict[str, Any], forced_429: dict[str, int] | None = None
                     ) -> list[str]:
    """Every limit window the simulator saw over its count (``max_seen`` counts arrivals,
    refused ones too), and every 429 beyond the ``forced_429`` a test asked for."""
    bad = []
    for name, s in stats.items():
        for window in s["limits"]:
            if window["max_seen"] > window["count"]:
                bad.append(f"{name} {window['limit']}: max_seen {window['max_seen']} > "
                           f"{window['count']}")
        if s["rate_limited"] > (forced_429 or {}).get(name, 0):
            bad.append(f"{name}: {s['rate_limited']} answers 429")
    return bad


def log_events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a daemon's output, parsed (other lines skipped)."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def log_problems(text: str, allowed_exception_events: tuple[str, ...] = ()) -> list[str]:
    """What a clean daemon log must not hold: a Traceback outside the ``exception`` field of
    an allowed event, a crash event, or a plain-text line (stdlib logging, a stray print)
    that carries a Traceback or an ERROR/CRITICAL level. (Plain WARNING lines, such as
    APScheduler's "skipped: maximum number of running instances", are tolerated.)"""
    problems = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith("{"):
            if "Traceback" in line or line.startswith(("ERROR:", "CRITICAL:")):
                problems.append(f"plain-text error: {line[:200]}")
            continue
        try:
            event = json.loads(line)
        except ValueError:
            problems.append(f"bad JSON log line: {line[:200]}")
            continue
        name = str(event.get("event"))
        if name in CRASH_EVENTS:
            problems.append(f"crash event {name}: {line[:300]}")
        rest = {k: v for k, v in event.items() if k != "exception"}
        if "Traceback" in json.dumps(rest):
            problems.append(f"Traceback outside `exception`: {line[:300]}")
        if "exception" in event and name not in allowed_exception_events:
            problems.append(f"unexpected exception in {name}: {str(event['exception'])[-300:]}")
    return problems


def db_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the daemon's SQLite file directly (read-only, so a live daemon is not disturbed)."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


class ProcRig:
    """A simulator and a daemon as processes, their logs in files under ``tmp``."""

    def __init__(self, tmp: Path, sim: subprocess.Popen[str], sim_url: str, config: Path,
                 db: Path, env: dict[str, str] | None = None) -> None:
        self.tmp, self.sim, self.sim_url, self.config, self.db = tmp, sim, sim_url, config, db
        self.env = env
        self.daemon: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def log(self) -> Path:
        return self.tmp / "daemon.log"

    def start(self) -> None:
        self.daemon, self.url = start_daemon(self.config, self.log, self.env)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM the daemon and wait for it; its exit status."""
        import signal

        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGTERM)
        try:
            return self.daemon.wait(timeout)
        finally:
            end_process(self.daemon)

    def close(self) -> None:
        if self.daemon is not None:
            end_process(self.daemon)
        end_process(self.sim)

    def daemon_log(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def enqueue(self, body: Any, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        status, answer = http("POST", f"{self.url}/enqueue", body, headers=headers)
        assert status == 202, answer
        jobs: list[dict[str, Any]] = answer["jobs"]
        return jobs

    def status(self) -> dict[str, Any]:
        status, body = http("GET", f"{self.url}/status")
        assert status == 200, body
        return dict(body)

    def jobs(self, provider: str | None = None) -> list[dict[str, Any]]:
        query = f"?limit=1000&provider={provider}" if provider else "?limit=1000"
        status, body = http("GET", f"{self.url}/jobs{query}")
        assert status == 200, body
        return list(body["jobs"])

    def settled(self, provider: str) -> list[dict[str, Any]] | None:
        """The provider's jobs once none is pending or running, else None (for wait_until)."""
        jobs = self.jobs(provider)
        return jobs if jobs and all(j["status"] in ("completed", "failed") for j in jobs) \
            else None

    def force(self, provider: str, status: int, count: int = 1) -> None:
        code, body = http("POST", f"{self.sim_url}/_sim/force",
                          {"provider": provider, "status": status, "count": count})
        assert code == 200, body


def make_proc_rig(tmp: Path, *, sim_args: tuple[str, ...] = (),
                  custom_sim: dict[str, Any] | None = None, limits: str = '["20/10s"]',
                  env: dict[str, str] | None = None, start: bool = True,
                  **config: Any) -> ProcRig:
    """A simulator enforcing ``limits`` for every provider (the daemon is configured with the
    same ones), then the daemon. ``custom_sim`` runs :func:`start_custom_simulator` with these
    provider options instead of the command-line simulator."""
    texts = [t.strip() for t in limits.strip("[]").replace('"', "").split(",")]
    if custom_sim is not None:
        opts = {name: {"limits": texts, **custom_sim.get(name, {})} for name in PROVIDER_NAMES}
        sim, sim_url = start_custom_simulator(tmp / "sim.log", {"providers": opts})
    else:
        args = [a for name in PROVIDER_NAMES for t in texts for a in ("--limit", f"{name}={t}")]
        sim, sim_url = start_simulator(tmp / "sim.log", *args, *sim_args)
    db = tmp / "marketd.db"
    cfg = daemon_config(tmp / "marketd.toml", port=free_port(), db=db, sim_url=sim_url,
                        limits=limits, **config)
    rig = ProcRig(tmp, sim, sim_url, cfg, db, env=env)
    if start:
        try:
            rig.start()
        except BaseException:
            rig.close()
            raise
    return rig
