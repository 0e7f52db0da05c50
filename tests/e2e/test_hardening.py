"""Issue 16 from outside: a real ``marketd serve`` against idle and slow connections beyond
its cap, browsers and rebinding pages, bad header and form bytes, a queue flood past
max_pending_jobs, and a read-only database directory."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import free_port, http, marketd, start, wait_until, write_config

CRON = "c" * 40
TOKEN = "t" * 40
_DIRS: dict[str, Path] = {}  # a daemon's URL -> its folder (config, database, socket)


def _config(tmp: Path, port: int, extra: str = "") -> Path:
    return write_config(tmp / "c.toml", f"""
[server]
host = "127.0.0.1"
port = {port}
max_connections = 20
header_timeout_seconds = 2
keepalive_seconds = 2
socket = "{tmp / 'marketd.sock'}"
[database]
path = "{tmp / 'm.db'}"
[scheduler]
interval_seconds = 3600
max_pending_jobs = 5
[security]
cron_secret = "{CRON}"
api_token = "{TOKEN}"
[providers.stockx]
base_url = "http://127.0.0.1:9"
[providers.alias]
enabled = false
[providers.ebay]
enabled = false
{extra}""")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("hardening")
    port = free_port()
    cfg = _config(tmp, port)
    proc = start("serve", "-c", str(cfg))
    url = f"http://127.0.0.1:{port}"
    _DIRS[url] = tmp
    try:
        wait_until(lambda: _status(url + "/healthz") == 200, timeout=30, what="the daemon up")
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def _status(url: str, timeout: float = 3) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def _raw(url: str, request: bytes, timeout: float = 5) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and len(out) > 200:
                break
        return out


def test_idle_and_slow_connections_beyond_the_cap_leave_healthz_answered(daemon: str) -> None:
    """Three times the cap of idle sockets plus slow-header ones: /healthz still answers at
    once (the oldest idle are shed), and slow headers are cut after header_timeout."""
    host, port = daemon.removeprefix("http://").split(":")
    held = []
    try:
        for i in range(60):
            s = socket.create_connection((host, int(port)), timeout=5)
            if i % 10 == 0:
                s.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            held.append(s)
        for _ in range(5):
            started = time.monotonic()
            assert _status(daemon + "/healthz", timeout=3) == 200
            assert time.monotonic() - started < 2
        slow = held[-10]  # a slow-header client, recent enough not to have been shed
        slow.settimeout(6)
        assert slow.recv(100) in (b"",)  # closed by the header timeout (2 s)
    finally:
        for s in held:
            s.close()


def test_browsers_cannot_drive_the_api(daemon: str) -> None:
    job = {"provider": "stockx", "sku": "DD1391-100"}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    # DNS rebinding: a Host the daemon does not answer to
    assert http("GET", daemon + "/jobs", headers={"Host": "attacker.example"})[0] == 421
    assert http("GET", daemon + "/", headers={"Host": "attacker.example:8787"})[0] == 421
    # a page elsewhere posting: foreign Origin, or a type a form or no-cors fetch can send
    status, _ = http("POST", daemon + "/enqueue", job,
                     headers={**bearer, "Origin": "https://evil.example"})
    assert status == 403
    # a sandboxed or file: page sends "Origin: null"; the page's own forms do too (its
    # Referrer-Policy is no-referrer), with the browser's own Sec-Fetch-Site: same-origin
    assert http("POST", daemon + "/enqueue", job,
                headers={**bearer, "Origin": "null"})[0] == 403
    status, _ = http("POST", daemon + "/enqueue", job, headers={
        **bearer, "Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert status == 202
    assert http("POST", daemon + "/enqueue", job, headers={
        **bearer, "Origin": "null", "Sec-Fetch-Site": "cross-site"})[0] == 403
    status, _ = http("POST", daemon + "/enqueue", job,
                     headers={**bearer, "Content-Type": "text/plain"})
    assert status == 415
    req = urllib.request.Request(daemon + "/trigger", data=b"", method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "x-cron-secret": CRON})
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("an empty form reached /trigger")
    except urllib.error.HTTPError as exc:
        assert exc.code == 415
    # the server names no version
    with urllib.request.urlopen(daemon + "/healthz", timeout=5) as resp:
        assert resp.headers["Server"] == "marketd"


def test_bad_header_bytes_and_form_encodings_are_4xx(daemon: str) -> None:
    for header in (b"x-cron-secret: \xff\xfe\x80", b"Authorization: Bearer \xff\xfe"):
        path = b"/trigger" if header.startswith(b"x-cron") else b"/enqueue"
        out = _raw(daemon, b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header +
                   b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                   b"Connection: close\r\n\r\n{}")
        assert out.split(b"\r\n", 1)[0].split(b" ")[1] in (b"400", b"401"), out[:200]
    for ctype, body in (("application/x-www-form-urlencoded", b"secret=\xff&csrf=x"),
                        ("application/x-www-form-urlencoded; charset=bogus", b"secret=a")):
        out = _raw(daemon, b"POST /signin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " +
                   ctype.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
                   b"\r\nConnection: close\r\n\r\n" + body)
        assert out.split(b"\r\n", 1)[0].split(b" ")[1] in (b"400", b"403"), out[:200]
        assert b" 500 " not in out.split(b"\r\n", 1)[0]


def test_wrong_secrets_slow_the_client_down(daemon: str) -> None:
    statuses = [http("POST", daemon + "/trigger", None, headers={"x-cron-secret": f"guess{i}"})[0]
                for i in range(8)]
    # five wrong ones are free (the earlier tests' bad bytes counted too); then it must wait
    assert statuses[0] == 401 and statuses[-1] == 429 and set(statuses) == {401, 429}
    time.sleep(1.1)  # the first wait is half a second: the right secret goes through after it
    wait_until(lambda: http("POST", daemon + "/trigger", None,
                            headers={"x-cron-secret": CRON})[0] == 200, timeout=10,
               what="the right secret accepted after the wait")


def test_a_flood_past_max_pending_jobs_gets_503_with_retry_after(daemon: str) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    jobs = {"jobs": [{"provider": "stockx", "sku": f"CAP-{i}"} for i in range(6)]}
    req = urllib.request.Request(daemon + "/enqueue", data=json.dumps(jobs).encode(),
                                 method="POST",
                                 headers={**bearer, "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("six jobs over a cap of five were taken")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
        assert exc.headers["Retry-After"]
        assert "max_pending_jobs" in exc.read().decode()


def test_cli_talks_over_the_unix_socket(daemon: str) -> None:
    """server.socket is 0600 and the CLI's trigger goes over it."""
    sock = _DIRS[daemon] / "marketd.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    cfg = _DIRS[daemon] / "c.toml"
    out = marketd("trigger", "-c", str(cfg), timeout=30)
    assert out.returncode == 0, out.stderr
    # doctor asks /healthz the same way (before, it went to TCP port 80 when a socket was set)
    doc = marketd("doctor", "-c", str(cfg), "--offline", "--json", timeout=60)
    [check] = [c for c in json.loads(doc.stdout)["checks"] if c["name"] == "daemon"]
    assert check["status"] == "ok" and "server.socket" in check["detail"], check


def test_read_only_database_directory_every_command_exits_clearly(tmp_path: Path) -> None:
    """A database folder marketd cannot write: serve, status and enqueue each exit within
    seconds with a one-line error naming the database (no hang, no traceback)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    cfg = write_config(tmp_path / "c.toml", f'[database]\npath = "{folder / "m.db"}"\n'
                       f'[server]\nport = {free_port()}\n')
    assert marketd("migrate", "-c", str(cfg)).returncode == 0
    for p in (folder / "m.db-wal", folder / "m.db-shm"):
        p.unlink(missing_ok=True)
    mounted = False
    if os.geteuid() == 0:  # root ignores permissions: a read-only bind mount instead
        done = subprocess.run(["mount", "--bind", str(folder), str(folder)], check=False,
                              capture_output=True)
        mounted = done.returncode == 0 and subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(folder)], check=False,
            capture_output=True).returncode == 0
        if not mounted:
            if done.returncode == 0:
                subprocess.run(["umount", str(folder)], check=False)
            pytest.skip("running as root without mount: cannot make a folder read-only")
    else:
        folder.chmod(0o555)
    try:
        for args in (("status",), ("enqueue", "--provider", "stockx", "--sku", "DD1391-100"),
                     ("serve",)):
            started = time.monotonic()
            out = marketd(*args, "-c", str(cfg), timeout=30)
            assert time.monotonic() - started < 15, args
            assert out.returncode in (1, 2), (args, out.stdout, out.stderr)
            assert "Traceback" not in out.stderr, out.stderr
            assert "m.db" in out.stderr, out.stderr
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
        else:
            folder.chmod(0o755)
