"""Start-up to ready against importing the same libraries; idle RSS; RSS with 1M jobs queued.

- ready: spawn ``python -m marketd serve -c cfg`` and time until ``GET /healthz`` answers 200
  (providers enabled, pointed at the built-in simulator, run as its own process).
- baseline: spawn ``python -c "import ..."`` of every module a serving marketd has loaded
  except marketd's own (found by a probe process: aiohttp, aiosqlite, apscheduler, structlog,
  jinja2, prometheus_client and the standard library modules they and marketd use), and time
  until it exits.
- RSS: VmRSS (and the peak, VmHWM) from /proc/PID/status once the first scheduler run is done:
  on an empty database, and on one with 1,000,000 pending jobs (built with raw sqlite3 into
  the real schema), also after a ``GET /status`` and ``GET /``.

Goals: ready within 1.3x the import time; idle RSS <= 60 MB; RSS with 1M jobs <= 120 MB.

    python -m bench.startup_rss [--quick] [--starts 7]
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench._common import ROOT, Report, build_jobs_db, median, parser, rss_kb

PROBE = """
import json, sys
import marketd.cli, marketd.app, marketd.web, marketd.page, marketd.config, marketd.logs
from marketd.providers import client_class
for name in ("stockx", "alias", "ebay"):
    client_class(name)
print(json.dumps([m for m in sys.modules if m.split(".")[0] not in ("marketd", "__main__")
                  and not m.startswith("_frozen")]))
"""


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("MARKETD_", "STOCKX_", "ALIAS_", "EBAY_"))}
    e.pop("CRON_SECRET", None)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError):
        return 0


def write_config(tmp: Path, db: Path, port: int, sim_url: str) -> Path:
    providers = ""
    creds = {"stockx": f'api_key = "k"\nclient_id = "c"\nclient_secret = "s"\n'
                       f'refresh_token = "r"\nauth_url = "{sim_url}"\n',
             "alias": 'api_token = "goatapi_t"\n', "ebay": 'client_id = "c"\nclient_secret = "s"\n'}
    for name, c in creds.items():
        providers += f'[providers.{name}]\nbase_url = "{sim_url}"\nlimits = ["100/hour"]\n{c}'
    path = tmp / f"c{port}.toml"
    path.write_text(f"""
[server]
port = {port}
[database]
path = "{db}"
[logging]
format = "json"
{providers}""")
    return path


def start_ready(cfg: Path, port: int, timeout: float = 60) -> tuple[subprocess.Popen[bytes], float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "marketd", "serve", "-c", str(cfg)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/healthz"
    while time.perf_counter() - t0 < timeout:
        if get(url, timeout=1) == 200:
            return proc, time.perf_counter() - t0
        if proc.poll() is not None:
            raise RuntimeError(f"marketd serve exited with {proc.returncode}")
        time.sleep(0.002)
    proc.kill()
    raise RuntimeError("marketd did not get ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def import_time(modules: list[str]) -> float:
    code = (f"import importlib\nfor m in {modules!r}:\n    try:\n"
            "        importlib.import_module(m)\n    except Exception:\n        pass\n")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env(), check=True)
    return time.perf_counter() - t0


def wait_first_run(port: int, timeout: float = 30) -> None:
    """Until /status shows a finished run (the interval job runs once at start)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status",
                                        timeout=10) as resp:
                data = json.loads(resp.read())
            runs = data.get("runs") or data.get("recent_runs") or []
            if any(r.get("finished_at") for r in runs):
                return
        except (OSError, ValueError, urllib.error.URLError):
            pass
        time.sleep(0.1)


def run(args: Any) -> Report:
    starts = 2 if args.quick else args.starts
    queued = 20_000 if args.quick else 1_000_000
    report = Report("startup_rss", args.quick, params={"starts": starts, "queued_jobs": queued})
    probe = subprocess.run([sys.executable, "-c", PROBE], env=env(), check=True,
                           capture_output=True, text=True)
    modules = [m for m in json.loads(probe.stdout) if m not in sys.builtin_module_names
               and m not in ("__mp_main__", "site") and not m.startswith("_sysconfigdata")]
    report.extra["baseline_modules"] = len(modules)
    sim_port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "marketd", "simulator", "--port",
                            str(sim_port)], env=env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    sim_url = f"http://127.0.0.1:{sim_port}"
    try:
        t0 = time.perf_counter()
        while get(f"{sim_url}/_sim/stats") != 200:
            if time.perf_counter() - t0 > 30:
                raise RuntimeError("the simulator did not start")
            time.sleep(0.05)
        with tempfile.TemporaryDirectory(prefix="marketd-bench-") as tmpdir:
            tmp = Path(tmpdir)
            import_time(modules)  # warm the page cache for both
            ready_s, import_s, idle_rss, idle_hwm = [], [], [], []
            for i in range(starts):
                import_s.append(import_time(modules))
                port = free_port()
                cfg = write_config(tmp, tmp / f"idle{i}.db", port, sim_url)
                proc, ready = start_ready(cfg, port)
                ready_s.append(ready)
                try:
                    wait_first_run(port)
                    time.sleep(0.5)
                    mem = rss_kb(proc.pid)
                finally:
                    stop(proc)
                idle_rss.append(mem["VmRSS"] / 1024)
                idle_hwm.append(mem["VmHWM"] / 1024)
                report.add(case=f"start {i + 1}", ready_s=ready, import_s=import_s[-1],
                           ratio=ready / import_s[-1], rss_mb=idle_rss[-1],
                           peak_rss_mb=idle_hwm[-1])
            big_db = tmp / "big.db"
            build_s = build_jobs_db(big_db, queued)
            port = free_port()
            cfg = write_config(tmp, big_db, port, sim_url)
            proc, ready_big = start_ready(cfg, port, timeout=120)
            try:
                wait_first_run(port, timeout=120)
                time.sleep(0.5)
                mem_big = rss_kb(proc.pid)
                get(f"http://127.0.0.1:{port}/status", timeout=60)
                get(f"http://127.0.0.1:{port}/", timeout=60)
                mem_page = rss_kb(proc.pid)
            finally:
                stop(proc)
    finally:
        sim.terminate()
        sim.wait(10)
    r_med, i_med = median(ready_s), median(import_s)
    report.add(case="median (empty db)", ready_s=r_med, import_s=i_med, ratio=r_med / i_med,
               rss_mb=median(idle_rss), peak_rss_mb=median(idle_hwm))
    big_rss = mem_big["VmRSS"] / 1024
    page_rss = mem_page["VmRSS"] / 1024
    report.add(case=f"{queued:,} jobs queued", ready_s=ready_big, rss_mb=big_rss,
               peak_rss_mb=mem_big["VmHWM"] / 1024)
    report.add(case=f"{queued:,} jobs, after GET /status and /", rss_mb=page_rss,
               peak_rss_mb=mem_page["VmHWM"] / 1024)
    report.extra["build_s"] = build_s
    report.goal("start-up to ready / import of the same libraries", r_med / i_med, 1.3,
                higher_is_better=False)
    report.goal("idle RSS (MB)", median(idle_rss), 60, higher_is_better=False, unit=" MB")
    label = "1M" if queued == 1_000_000 else f"{queued // 1000}k"
    report.goal(f"RSS with {label} jobs queued (MB)", big_rss, 120, higher_is_better=False,
                unit=" MB")
    report.extra["rss_after_pages_mb"] = page_rss
    return report


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--starts", type=int, default=7)
    args = p.parse_args(argv)
    report = run(args)
    report.finish(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
