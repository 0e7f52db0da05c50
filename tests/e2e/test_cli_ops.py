"""The command line an operator runs against a server (issue 17): it never invents a database,
a closed pipe is no traceback, every command that prints has --json, trigger waits for a long
run and says so, --env-file reads the unit's secrets, check-config warns for credentials, and
the files the wheel ships print."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from marketd.cli_base import UsageError, read_env_file
from tests.e2e.helpers import (
    _env,
    daemon_config,
    end_process,
    free_port,
    http,
    marketd,
    sim_stats,
    start_daemon,
    start_simulator,
    write_config,
)

ROOT = Path(__file__).resolve().parents[2]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def cfg(tmp_path: Path, extra: str = "", port: int = 1) -> Path:
    return write_config(tmp_path / "c.toml", f'[database]\npath = "{tmp_path / "db" / "m.db"}"'
                                             f"\n[server]\nport = {port}\n{extra}")


READ_COMMANDS = [("status",), ("status", "--json"), ("prices",), ("prices", "--json"),
                 ("reset-failed",), ("backup", "b.db"), ("doctor", "--offline"),
                 ("enqueue", "--provider", "stockx", "--sku", "X"),
                 ("auth", "stockx")]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=[" ".join(a) for a in READ_COMMANDS])
def test_read_commands_never_create_a_database(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Against a missing database: exit 1, one line naming the file and `marketd migrate`,
    and no file or folder appears (not the database, its folder, nor a backup)."""
    c = cfg(tmp_path, '[providers.stockx]\nclient_id = "i"\nclient_secret = "s"\n')
    before = files_under(tmp_path)
    out = marketd(*args, "-c", str(c), cwd=tmp_path)
    assert out.returncode == 1, (out.stdout, out.stderr)
    if args[0] == "doctor":  # a report on stdout, the database's line among its failures
        lines = [line for line in out.stdout.splitlines() if line.startswith("FAIL  database")]
    else:
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("marketd: "), out.stderr
    assert str(tmp_path / "db" / "m.db") in lines[0] and "marketd migrate" in lines[0]
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("command", ["status", "prices", "backup", "trigger", "doctor"])
def test_a_missing_config_is_exit_2_and_creates_nothing(tmp_path: Path, command: str) -> None:
    extra = ("b.db",) if command == "backup" else ()
    out = marketd(command, *extra, "-c", str(tmp_path / "typo.toml"), cwd=tmp_path)
    assert out.returncode == 2 and "typo.toml: no such file" in out.stderr, out.stderr
    assert files_under(tmp_path) == set()


def test_read_commands_refuse_a_database_from_a_newer_marketd(tmp_path: Path) -> None:
    c = str(cfg(tmp_path))
    assert marketd("migrate", "-c", c).returncode == 0
    con = sqlite3.connect(tmp_path / "db" / "m.db")
    con.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                "VALUES (99, 'future', '2030-01-01T00:00:00.000Z')")
    con.commit()
    con.close()
    out = marketd("status", "-c", c)
    assert out.returncode == 1 and "newer marketd" in out.stderr and "99" in out.stderr


def test_backup_refuses_a_missing_folder(tmp_path: Path) -> None:
    c = str(cfg(tmp_path))
    assert marketd("migrate", "-c", c).returncode == 0
    out = marketd("backup", "-c", c, str(tmp_path / "nope" / "b.db"))
    assert out.returncode == 2 and "nope" in out.stderr
    assert not (tmp_path / "nope").exists()


def test_a_closed_pipe_is_no_traceback(tmp_path: Path) -> None:
    """`marketd prices | head -n 1` with the reader gone before marketd writes: exit 0, quiet."""
    c = str(cfg(tmp_path))
    assert marketd("migrate", "-c", c).returncode == 0
    for args in (("prices", "-c", c), ("status", "-c", c), ("status", "--json", "-c", c),
                 ("print", "readme")):
        proc = subprocess.Popen([sys.executable, "-m", "marketd", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(None))
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the first write
        err = proc.stderr.read().decode()
        assert proc.wait(60) == 0, err
        assert "Traceback" not in err and "BrokenPipe" not in err, err
    shell = subprocess.run(  # noqa: S602 - the shell's pipe is the point
        f"{sys.executable} -m marketd print readme | head -n 1", shell=True,
        capture_output=True, text=True, env=_env(None), timeout=60, check=False)
    assert shell.stdout.startswith("# marketd") and shell.stderr == ""


def test_every_printing_command_has_json(tmp_path: Path) -> None:
    c = str(cfg(tmp_path))
    outputs: dict[str, Any] = {}
    for args in (("migrate",), ("check-config",), ("status",), ("prices",), ("reset-failed",),
                 ("backup", str(tmp_path / "b.db")), ("doctor", "--offline"),
                 ("enqueue", "--provider", "alias", "--sku", "X-1")):
        out = marketd(*args, "-c", c, "--json")
        assert out.returncode in (0, 1), (args, out.stderr)  # doctor fails: no daemon
        outputs[args[0]] = json.loads(out.stdout)
    assert outputs["migrate"]["applied"][0] == 1
    assert outputs["check-config"]["ok"] is True
    assert outputs["status"]["jobs"]["by_provider"] == {} or "jobs" in outputs["status"]
    assert outputs["prices"] == {"prices": []}
    assert outputs["reset-failed"] == {"reset": 0, "provider": None}
    assert outputs["backup"]["bytes"] > 0
    assert {c["name"] for c in outputs["doctor"]["checks"]} >= {"config", "database", "daemon"}
    assert outputs["enqueue"]["via"] == "database"
    assert "--json" in marketd("trigger", "--help").stdout


def test_check_config_warns_for_missing_credentials_and_strict_fails(tmp_path: Path) -> None:
    """The shipped example enables all three providers without credentials: three warnings;
    --strict makes them errors (exit 2); the environment's credentials silence them."""
    example = str(ROOT / "config.example.toml")
    out = marketd("check-config", "-c", example)
    assert out.returncode == 0
    for name, var in (("stockx", "STOCKX_API_KEY"), ("alias", "ALIAS_API_TOKEN"),
                      ("ebay", "EBAY_CLIENT_ID")):
        assert any(line.startswith(f"warning: providers.{name}:") and var in line
                   for line in out.stdout.splitlines()), out.stdout
    strict = marketd("check-config", "-c", example, "--strict")
    assert strict.returncode == 2 and "ALIAS_API_TOKEN" in strict.stderr
    secrets = {"STOCKX_API_KEY": "k", "STOCKX_CLIENT_ID": "i", "STOCKX_CLIENT_SECRET": "s",
               "ALIAS_API_TOKEN": "t", "EBAY_CLIENT_ID": "i", "EBAY_CLIENT_SECRET": "s"}
    env_file = tmp_path / "secrets.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    quiet = marketd("check-config", "-c", example, "--env-file", str(env_file), "--json")
    assert quiet.returncode == 0, quiet.stderr
    assert [w for w in json.loads(quiet.stdout)["warnings"] if "enabled without" in
            w["message"]] == []


def test_env_file_format(tmp_path: Path) -> None:
    f = tmp_path / "s.env"
    f.write_text("# comment\n; also\n\nCRON_SECRET=abc\nA = 'quoted value'\nB=\"x y\"\n"
                 "C=con\\\ntinued\n")
    assert read_env_file(str(f)) == {"CRON_SECRET": "abc", "A": "quoted value", "B": "x y",
                                     "C": "continued"}
    f.write_text("not a line\n")
    with pytest.raises(UsageError, match="line 1"):
        read_env_file(str(f))


# ---- trigger against a daemon that takes its time (a stand-in HTTP server) -----------------


class _FakeDaemon(BaseHTTPRequestHandler):
    run_s = 1.5
    drop = False
    seen_secrets: list[str | None] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._answer(200, {"jobs": {"by_provider": {"stockx": {
            "pending": 7, "running": 2, "completed": 1, "failed": 0}}}})

    def do_POST(self) -> None:
        secret = self.headers.get("x-cron-secret")
        type(self).seen_secrets.append(secret)
        if secret != "from-the-env-file":
            self._answer(401, {"error": "missing or wrong x-cron-secret header", "field": None})
            return
        time.sleep(self.run_s)
        if self.drop:
            self.connection.close()
            return
        self._answer(200, {"selected": 9, "succeeded": 9})


@pytest.fixture
def fake_daemon(tmp_path: Path) -> Iterator[tuple[Path, type[_FakeDaemon]]]:
    handler = type("Handler", (_FakeDaemon,), {"seen_secrets": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield cfg(tmp_path, port=server.server_address[1]), handler
    finally:
        server.shutdown()
        server.server_close()


def test_trigger_waits_for_a_long_run_with_progress(
        tmp_path: Path, fake_daemon: tuple[Path, type[_FakeDaemon]]) -> None:
    """A run that outlasts the progress interval is waited for, with the queue on stderr;
    the secret comes from --env-file (the unit's EnvironmentFile)."""
    c, handler = fake_daemon
    env_file = tmp_path / "secrets.env"
    env_file.write_text("CRON_SECRET=from-the-env-file\n")
    refused = marketd("trigger", "-c", str(c))
    assert refused.returncode == 1 and "401" in refused.stderr
    assert "--env-file" in refused.stderr
    out = marketd("trigger", "-c", str(c), "--env-file", str(env_file), "--progress", "0.3")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"selected": 9, "succeeded": 9}
    progress = [line for line in out.stderr.splitlines() if "run in progress" in line]
    assert progress and "stockx 2 running, 7 pending" in progress[0], out.stderr
    assert handler.seen_secrets[-1] == "from-the-env-file"


def test_trigger_tells_a_slow_or_dropped_run_from_an_absent_daemon(
        tmp_path: Path, fake_daemon: tuple[Path, type[_FakeDaemon]]) -> None:
    c, handler = fake_daemon
    env_file = tmp_path / "secrets.env"
    env_file.write_text("CRON_SECRET=from-the-env-file\n")
    slow = marketd("trigger", "-c", str(c), "--env-file", str(env_file), "--timeout", "0.5")
    assert slow.returncode == 1 and "had not finished" in slow.stderr
    assert "cannot reach" not in slow.stderr
    handler.drop = True
    dropped = marketd("trigger", "-c", str(c), "--env-file", str(env_file))
    assert dropped.returncode == 1 and "connection dropped" in dropped.stderr, dropped.stderr
    (tmp_path / "x").mkdir()
    absent = marketd("trigger", "-c", str(cfg(tmp_path / "x")))
    assert absent.returncode == 1 and "cannot reach marketd" in absent.stderr


# ---- the files the wheel ships ----------------------------------------------------------


def _installed(text: str) -> str:
    """What `print` makes of a unit for the marketd that runs it (here: this venv)."""
    prefix = sys.prefix
    if prefix == "/opt/marketd" or not (Path(prefix) / "bin" / "marketd").exists():
        return text
    return text.replace("/opt/marketd/bin/", f"{prefix}/bin/").replace(
        "file:///opt/marketd/", f"file://{prefix}/")


def test_print_shows_the_shipped_files() -> None:
    for name, path in (("unit", "systemd/marketd.service"), ("config", "config.example.toml"),
                       ("trigger-service", "systemd/marketd-trigger.service"),
                       ("trigger-timer", "systemd/marketd-trigger.timer"),
                       ("readme", "README.md")):
        out = marketd("print", name)
        assert out.returncode == 0, out.stderr
        want = (ROOT / path).read_text()
        assert out.stdout == (want if name in ("readme", "config") else _installed(want)), name
    assert marketd("print-unit").stdout == _installed(
        (ROOT / "systemd/marketd.service").read_text())
    assert marketd("print-config").stdout == (ROOT / "config.example.toml").read_text()


# ---- doctor against the simulator and a daemon --------------------------------------------


def test_doctor_against_the_simulator_and_a_daemon(tmp_path: Path) -> None:
    """Each provider's credentials checked with one counted call (the simulator sees one
    request each, the budget one call each); refused credentials and a missing one are
    failures naming them; the daemon's health decides the last line and the exit status."""
    sim, sim_url = start_simulator(tmp_path / "sim.log")
    daemon = None
    try:
        c = daemon_config(tmp_path / "c.toml", port=free_port(), db=tmp_path / "m.db",
                          sim_url=sim_url, providers={"ebay": {"client_secret": ""}})
        assert marketd("migrate", "-c", str(c)).returncode == 0
        before = {n: s["requests"] for n, s in sim_stats(sim_url).items()}
        out = marketd("doctor", "-c", str(c), "--json")
        assert out.returncode == 1, out.stderr  # no daemon yet, and eBay lacks its secret
        checks = {ch["name"]: ch for ch in json.loads(out.stdout)["checks"]}
        assert checks["database"]["status"] == "ok" and checks["disk"]["status"] == "ok"
        assert checks["provider stockx"]["status"] == "ok", checks
        assert checks["provider alias"]["status"] == "ok", checks
        assert checks["provider ebay"]["status"] == "fail"
        assert "EBAY_CLIENT_SECRET" in checks["provider ebay"]["detail"]
        assert checks["daemon"]["status"] == "fail" and "systemctl" in checks["daemon"]["fix"]
        after = {n: s["requests"] for n, s in sim_stats(sim_url).items()}
        assert {n: after[n] - before[n] for n in after} == {"stockx": 1, "alias": 1, "ebay": 0}
        con = sqlite3.connect(tmp_path / "m.db")
        spent = dict(con.execute("SELECT provider, sum(used) FROM market_budgets "
                                 "GROUP BY provider").fetchall())
        con.close()
        assert spent.get("stockx") == 1 and spent.get("alias") == 1, spent

        c = daemon_config(tmp_path / "c.toml", port=free_port(), db=tmp_path / "m.db",
                          sim_url=sim_url)
        daemon, url = start_daemon(c, tmp_path / "daemon.log")
        assert http("POST", f"{sim_url}/_sim/force",
                    {"provider": "alias", "status": 401, "count": 1})[0] == 200
        out = marketd("doctor", "-c", str(c))
        assert out.returncode == 1, out.stdout
        alias = next(line for line in out.stdout.splitlines() if "provider alias" in line)
        assert alias.startswith("FAIL") and "refused" in alias, out.stdout
        assert "ALIAS_API_TOKEN" in out.stdout
        ok = marketd("doctor", "-c", str(c))
        assert ok.returncode == 0, ok.stdout
        assert "OK    daemon" in ok.stdout and "nothing failed" in ok.stdout
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(20)
        end_process(sim)
