"""Enqueue over HTTP, one durable job per request, against a bare aiohttp handler.

Both servers run in this process, each an aiohttp AppRunner on loopback; the load comes from a
separate process: ``wrk`` (Debian's package) with a Lua script that posts a new job per
request, or, when wrk is not installed, ``python -m bench._loadgen`` (an aiohttp client).

- marketd: the real daemon app (``Daemon.create`` + ``web.create_app``) on a real SQLite file;
  every answer is a 202 after the job's transaction committed.
- baseline: a handler that reads the body, ``json.loads`` it and answers a 202 JSON of the
  same shape, without storing anything.
- ceiling (reported, not judged): marketd with bench/prototypes.py's NoWriteStore, the same
  app whose enqueue answers without the database: the most any store change could reach.

Rounds alternate the servers; the ratio is of the medians. Goal: >= 0.8x. A pyinstrument
profile of one marketd round is written beside the JSON (enqueue_single.profile.txt).

Each run also records the bench process's CPU time per request (every thread: the event loop
and the SQLite threads; the load process is another process): on a shared machine it moves
less than requests/s, and it says where the time goes (marketd's handler alone is the no-db
row minus the bare row; its store is the marketd row minus the no-db row). For reading only.

    python -m bench.enqueue_single [--quick] [--conns 32] [--seconds 5] [--loadgen wrk|python]
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    ROOT,
    Report,
    instant_provider_factory,
    make_config,
    median,
    open_daemon,
    parser,
    quiet_logging,
)

LUA = """
local counter = 0
local tag = "W"
init = function(args) tag = args[1] end
request = function()
  counter = counter + 1
  local body = string.format(
    '{"provider":"stockx","sku":"%s-%d","size":"10","priority":100}', tag, counter)
  return wrk.format("POST", "/enqueue", {["Content-Type"] = "application/json"}, body)
end
"""


async def bare_enqueue(request: Any) -> Any:
    from aiohttp import web

    body = json.loads(await request.read())
    key = f"{body['provider']}|{body['sku']}|{body.get('size') or ''}"
    return web.json_response({"jobs": [{"id": None, "dedupe_key": key, "status": "pending",
                                        "priority": body.get("priority", 100),
                                        "deduplicated": False}]}, status=202)


async def serve(app: Any) -> tuple[Any, str]:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/enqueue"


async def load(url: str, tool: str, conns: int, seconds: float, tag: str,
               lua: Path) -> dict[str, float]:
    """Run the load process against ``url``; requests per second of 202 answers."""
    if tool == "wrk":
        proc = await asyncio.create_subprocess_exec(
            "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "-s", str(lua), url,
            "--", tag, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out = (await proc.communicate())[0].decode()
        m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
        if proc.returncode != 0 or not m:
            raise RuntimeError(f"wrk failed: {out}")
        secs = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = int(bad.group(1)) if bad else 0
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                         out)
        errors += sum(int(x) for x in sock.groups()) if sock else 0
        total = int(m.group(1))
        return {"rps": (total - errors) / secs, "requests": total, "errors": errors}
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench._loadgen", "--url", url, "--conns", str(conns),
        "--seconds", str(seconds), "--tag", tag, stdout=asyncio.subprocess.PIPE, env=env)
    res = json.loads((await proc.communicate())[0])
    return {"rps": res["requests"] / res["seconds"], "requests": res["requests"],
            "errors": res["errors"]}


async def marketd_server(tmp: Path, name: str, store_cls: Any = None) -> tuple[Any, Any, str]:
    from marketd.web import create_app

    config = make_config(tmp / f"{name}.db", providers={"stockx": {}})
    daemon = await open_daemon(config, {"stockx": instant_provider_factory()}, store_cls)
    runner, url = await serve(create_app(daemon))
    return daemon, runner, url


PROTOTYPES = {"ceiling_no_db": "NoWriteStore"}


async def run(args: Any) -> Report:
    from aiohttp import web

    from bench import prototypes

    tool = args.loadgen or ("wrk" if shutil.which("wrk") else "python")
    rounds = 1 if args.quick else args.rounds
    seconds = 1.0 if args.quick else args.seconds
    report = Report("enqueue_single", args.quick, params={
        "load_process": tool, "connections": args.conns, "seconds_per_run": seconds,
        "rounds": rounds})
    quiet_logging()
    names = ["bare", "marketd", *PROTOTYPES]
    out: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}  # CPU µs per request, this process
    with tempfile.TemporaryDirectory(prefix="marketd-bench-") as tmpdir:
        tmp = Path(tmpdir)
        lua = tmp / "post.lua"
        lua.write_text(LUA)
        bare = web.Application()
        bare.router.add_post("/enqueue", bare_enqueue)
        bare_runner, bare_url = await serve(bare)
        servers = {"bare": bare_url}
        runners, daemons = [bare_runner], {}
        for name in names[1:]:
            cls = getattr(prototypes, PROTOTYPES[name]) if name in PROTOTYPES else None
            daemons[name], rn, servers[name] = await marketd_server(tmp, name, cls)
            runners.append(rn)
        try:
            for name, u in servers.items():  # warm-up
                if not args.quick:
                    await load(u, tool, args.conns, 1, f"warm{name}", lua)
            for r in range(rounds):
                row: dict[str, Any] = {"round": r + 1}
                for name, u in servers.items():
                    cpu0 = time.process_time()
                    res = await load(u, tool, args.conns, seconds, f"{name}{r}", lua)
                    cpu_s = time.process_time() - cpu0
                    if res["errors"]:
                        raise RuntimeError(f"{name}: {res['errors']} failed requests")
                    out[name].append(res["rps"])
                    cpu[name].append(cpu_s / max(1, res["requests"]) * 1e6)
                    row[f"{name}_req_s"] = res["rps"]
                row["ratio"] = row["marketd_req_s"] / row["bare_req_s"]
                report.add(**row)
            if args.profile:
                report.extra["profile"] = await profile(servers["marketd"], tool, args, lua,
                                                        seconds)
        finally:
            for rn in runners:
                await rn.cleanup()
            for d in daemons.values():
                await d.close()
    med = {n: median(v) for n, v in out.items()}
    report.add(round="median", **{f"{n}_req_s": v for n, v in med.items()},
               ratio=med["marketd"] / med["bare"])
    report.extra["baseline_req_s"] = med["bare"]
    cpu_med = {n: median(v) for n, v in cpu.items()}
    report.extra["cpu_us_per_request"] = {
        n: {"median": round(cpu_med[n], 1), "runs": [round(x, 1) for x in cpu[n]]}
        for n in names}
    report.extra["marketd_req_s"] = med["marketd"]
    report.goal("HTTP 1 job/request vs bare handler (req/s)", med["marketd"] / med["bare"], 0.8,
                higher_is_better=True)
    report.extra["prototypes"] = {}
    print("\nCPU per request, bench process (median, us): " + ", ".join(
        f"{n} {cpu_med[n]:.0f}" for n in names))
    print()
    for name, cls in PROTOTYPES.items():
        report.extra["prototypes"][name] = {
            "class": f"bench/prototypes.py {cls}", "req_s": med[name],
            "ratio_vs_bare": med[name] / med["bare"],
            "ratio_vs_marketd": med[name] / med["marketd"]}
        print(f"prototype {cls}: {med[name]:,.0f} req/s = {med[name] / med['bare']:.2f}x the "
              f"bare handler, {med[name] / med['marketd']:.1f}x marketd today")
    if args.profile:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "enqueue_single.profile.txt").write_text(report.extra["profile"]["text"])
        report.extra["profile"] = {k: v for k, v in report.extra["profile"].items()
                                   if k != "text"}
    return report


async def profile(url: str, tool: str, args: Any, lua: Path, seconds: float) -> dict[str, Any]:
    """One more marketd round under pyinstrument; the share of loop time per part."""
    from pyinstrument import Profiler

    prof = Profiler(interval=0.0005, async_mode="disabled")
    prof.start()
    res = await load(url, tool, args.conns, seconds, "prof", lua)
    prof.stop()
    text = prof.output_text(unicode=False, show_all=False)
    session = prof.last_session
    total = session.duration if session else 0.0
    frames = _self_times(prof)
    return {"req_s_under_profiler": res["rps"], "duration_s": total, "top": frames, "text": text}


def _self_times(prof: Any) -> dict[str, float]:
    """Seconds spent under a few named frames (inclusive), from the profile's call tree; a
    name is ``function`` for a module's function, ``Class.method`` for a method."""
    wanted = {"EpollSelector.select": "waiting (epoll: SQLite thread, network)",
              "Store.enqueue": "Store.enqueue on the loop (incl. awaits)",
              "_errors": "web._errors middleware (incl. the handler)",
              "read_json": "read_json (body read and decoded)",
              "parse_enqueue_body": "parse_enqueue_body",
              "enqueue_json": "enqueue_json (the 202 body)",
              "enqueue": "web.enqueue handler",
              "Daemon.enqueue": "Daemon.enqueue", "uuid4": "uuid4"}
    found: dict[str, float] = {}
    root = prof.last_session.root_frame() if prof.last_session else None

    def walk(frame: Any, seen: frozenset[str]) -> None:
        name = frame.function
        cls = getattr(frame, "class_name", None)  # pyinstrument keeps the class apart
        qual = f"{cls}.{name}" if cls else name
        for key, label in wanted.items():
            if qual == key and key not in seen:
                found[label] = found.get(label, 0.0) + frame.time
                seen = seen | {key}
        for child in frame.children:
            walk(child, seen)

    if root is not None:
        walk(root, frozenset())
    return {k: round(v, 3) for k, v in found.items()}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--loadgen", choices=("wrk", "python"), default=None)
    p.add_argument("--no-profile", dest="profile", action="store_false")
    args = p.parse_args(argv)
    if args.quick:
        args.profile = False
    report = asyncio.run(run(args))
    report.finish(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
