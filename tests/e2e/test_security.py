"""Security and hostile input, with the daemon as a real process (INTERFACE.md §2-§4, issue 6):

- secrets given in the environment never appear in the logs, the error bodies, /status, the
  page, /jobs, /prices, /metrics, or the output of ``check-config``, ``status --json``,
  ``prices --json`` and ``trigger``; nor do the access tokens the providers issue;
- secrets are compared in constant time (no ``==`` on a secret anywhere in marketd);
- a non-loopback ``server.host`` is refused without both secrets (exit 2, naming the key);
- a body over 1 MiB gets 413 long before the server has read what the client declared;
- the database file (and its WAL and shared-memory files) is created with mode 0600 even
  under a permissive umask;
- bad configuration and bad command-line input: one line naming the key or flag, exit 2.
"""

from __future__ import annotations

import ast
import os
import select
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import marketd
from tests.e2e.helpers import (
    ProcRig,
    http,
    log_problems,
    make_proc_rig,
    sim_stats,
    wait_until,
    write_config,
)
from tests.e2e.helpers import (
    marketd as run_marketd,
)

SECRETS = {
    "CRON_SECRET": "cron-S3CRET-7d1a9-5f0e2c44b8a1d3e6",  # 32+ characters: 0.0.0.0 wants them
    "MARKETD_API_TOKEN": "api-S3CRET-4be20-9c7d1e3fa2b6480c",
    "STOCKX_API_KEY": "sxkey-S3CRET-91c3f",
    "STOCKX_CLIENT_ID": "sxid-S3CRET-0a7e2",
    "STOCKX_CLIENT_SECRET": "sxcs-S3CRET-58f1d",
    "STOCKX_REFRESH_TOKEN": "sxrt-S3CRET-c64b7",
    "ALIAS_API_TOKEN": "goatapi_S3CRET-e2d90",
    "EBAY_CLIENT_ID": "ebid-S3CRET-3f8c6",
    "EBAY_CLIENT_SECRET": "ebcs-S3CRET-b7a45",
}
# the access tokens the simulator mints start like this: they must not be logged either
ISSUED_TOKEN_PREFIXES = ("sim-stockx-", "v^1.1#i^1#p^1#r^0#I^3#f^0#t^sim")
MIB = 1024 * 1024
BEARER = {"Authorization": f"Bearer {SECRETS['MARKETD_API_TOKEN']}"}
CRON = {"x-cron-secret": SECRETS["CRON_SECRET"]}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[ProcRig]:
    """Daemon and simulator with every secret from the environment (none in the file)."""
    made = make_proc_rig(tmp_path, env=dict(SECRETS), secrets_in_file=False,
                         scheduler={"auth_pause_seconds": 2, "max_retries": 1})
    yield made
    made.close()


def leaks(text: str) -> list[str]:
    found = [f"{name} ({value})" for name, value in SECRETS.items() if value in text]
    found += [f"issued token {p}…" for p in ISSUED_TOKEN_PREFIXES if p in text]
    # a secret cut short is still a leak: look for its distinctive middle too
    found += [f"part of {name}" for name, value in SECRETS.items()
              if value not in text and value[:-3] in text]
    return found


def test_secrets_never_leak(rig: ProcRig, tmp_path: Path) -> None:
    """Traffic that touches every secret (good and bad API tokens and cron secrets, page sign-in,
    provider credentials refused and renewed), then every output a user or log reader sees is
    searched for every secret: none appears."""
    seen: list[str] = []

    def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             want: int | None = None) -> Any:
        status, answer = http(method, f"{rig.url}{path}", body, headers=headers)
        seen.append(f"{method} {path} -> {status} {answer}")
        if want is not None:
            assert status == want, (path, status, answer)
        return answer

    job = {"provider": "stockx", "sku": "DD1391-100", "size": "10", "priority": "manual"}
    call("POST", "/enqueue", job, want=401)  # no token
    call("POST", "/enqueue", job, {"Authorization": "Bearer wrong"}, want=401)
    call("POST", "/enqueue", job, {"Authorization": f"Bearer {SECRETS['CRON_SECRET']}"},
         want=401)
    call("POST", "/enqueue", job, {"Authorization": SECRETS["MARKETD_API_TOKEN"]}, want=401)
    call("POST", "/trigger", None, {"x-cron-secret": SECRETS["MARKETD_API_TOKEN"]}, want=401)
    call("POST", "/reset-failed", {}, {"x-cron-secret": "nope"}, want=401)
    call("POST", "/enqueue", {"provider": SECRETS["ALIAS_API_TOKEN"], "sku": "X"}, BEARER,
         want=400)
    call("POST", "/enqueue", {"sku": SECRETS["STOCKX_CLIENT_SECRET"], "provider": "ebay",
                              "size": SECRETS["EBAY_CLIENT_SECRET"]}, BEARER, want=400)
    # providers refuse credentials: renewal (StockX, eBay), then pauses naming the credential
    rig.force("stockx", 401, 2)
    rig.force("ebay", 401, 1)
    rig.force("alias", 403, 1)
    for provider in ("stockx", "alias", "ebay"):
        call("POST", "/enqueue", {"jobs": [{**job, "provider": provider},
                                           {**job, "provider": provider, "size": "9"}]},
             BEARER, want=202)
    wait_until(lambda: rig.status()["budgets"]["stockx"]["paused"], timeout=20,
               what="stockx paused for its credentials")
    call("POST", "/trigger", None, CRON, want=200)
    wait_until(lambda: all(rig.settled(p) for p in ("stockx", "alias", "ebay")), timeout=40,
               what="all jobs done after the auth pauses")
    _page_sign_in(rig.url, seen)

    config = str(rig.config)
    env = dict(SECRETS)
    outputs = {f"GET {p}": str(call("GET", p, want=200))
               for p in ("/status", "/jobs", "/prices", "/metrics", "/", "/healthz")}
    for args in (("check-config",), ("status", "--json"), ("status",), ("prices", "--json"),
                 ("trigger",)):
        out = run_marketd(*args, "-c", config, env=env)
        assert out.returncode == 0, (args, out.stderr)
        outputs[" ".join(args)] = out.stdout + out.stderr
    assert rig.terminate() == 0
    log = rig.daemon_log()
    assert log_problems(log) == [], log_problems(log)[:3]
    outputs["daemon log"] = log
    outputs["error bodies"] = "\n".join(seen)
    outputs["simulator log"] = (tmp_path / "sim.log").read_text()
    found = {where: leaks(text) for where, text in outputs.items() if leaks(text)}
    assert found == {}
    # the traffic did reach the paths that handle secrets
    assert "provider_auth_failed" in log and "page_sign_in_refused" in log
    assert sim_stats(rig.sim_url)["stockx"]["token_requests"] >= 2


def _page_sign_in(url: str, seen: list[str]) -> None:
    """Sign in on the page with a wrong, then the right cron secret (form posts, CSRF)."""
    import re
    import urllib.error
    import urllib.parse
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    page = opener.open(f"{url}/", timeout=10).read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    for secret in ("wrong-secret", SECRETS["CRON_SECRET"]):
        form = urllib.parse.urlencode({"csrf": csrf.group(1), "secret": secret}).encode()
        try:
            with opener.open(f"{url}/signin", data=form, timeout=10) as resp:
                seen.append(f"POST /signin -> {resp.status} {resp.read().decode()}")
        except urllib.error.HTTPError as exc:
            seen.append(f"POST /signin -> {exc.code} {exc.read().decode()}")
    assert any(" -> 403 " in s for s in seen)


def test_secrets_compared_in_constant_time() -> None:
    """No ``==``/``!=`` touches a secret anywhere in marketd; the API and the page compare
    with hmac.compare_digest."""
    # what holds our secrets (session and provider access tokens are looked up, not checked)
    names = {"cron_secret", "api_token", "secret", "expected", "client_secret", "api_key"}
    offenders = []
    root = Path(marketd.__file__).parent
    for path in sorted(root.rglob("*.py")):
        if "simulator" in path.parts:
            continue  # the simulator imitates providers; it guards no secret of ours
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare) or \
                    not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value in (None, "") for o in operands):
                continue
            touched = {n.attr if isinstance(n, ast.Attribute) else n.id
                       for o in operands for n in ast.walk(o)
                       if isinstance(n, ast.Attribute | ast.Name)}
            if touched & names:
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
    web = (root / "web.py").read_text()
    page = (root / "page.py").read_text()
    guard = (root / "guard.py").read_text()  # one comparison, throttled per client
    assert "hmac.compare_digest" in guard
    assert "check_secret(" in web and "check_secret(" in page


@pytest.mark.parametrize("security", [{}, {"cron_secret": "c"}, {"api_token": "t"}])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org"])
def test_non_loopback_bind_refused_without_both_secrets(tmp_path: Path, host: str,
                                                        security: dict[str, str]) -> None:
    """serve and check-config refuse a non-loopback host unless cron_secret and api_token are
    both set: exit 2, one line naming server.host, and nothing listens."""
    sec = "".join(f'{k} = "{v}"\n' for k, v in security.items())
    cfg = write_config(tmp_path / "c.toml", f'[server]\nhost = "{host}"\nport = 1\n'
                                            f'[database]\npath = "{tmp_path / "m.db"}"\n'
                                            f"[security]\n{sec}")
    for command in ("serve", "check-config"):
        out = run_marketd(command, "-c", str(cfg), timeout=30)
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "server.host" in lines[0], out.stderr
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "m.db").exists()  # refused before touching anything


def test_non_loopback_allowed_with_both_secrets(tmp_path: Path) -> None:
    """With both secrets (here from the environment) the same host passes check-config."""
    cfg = write_config(tmp_path / "c.toml", '[server]\nhost = "0.0.0.0"\n'
                                            f'[database]\npath = "{tmp_path / "m.db"}"\n')
    out = run_marketd("check-config", "-c", str(cfg), env=dict(SECRETS))
    assert out.returncode == 0, out.stderr
    assert leaks(out.stdout + out.stderr) == []


def _raw_post(url: str, declared: int | None, limit: int, headers: str = ""
              ) -> tuple[bytes, int]:
    """POST /enqueue declaring ``declared`` bytes (None: chunked, no length) and streaming up
    to ``limit`` bytes, but stopping as soon as the server answers; (answer, bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sent = 0
    length = "Transfer-Encoding: chunked" if declared is None else f"Content-Length: {declared}"
    try:
        sock.sendall(f"POST /enqueue HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
                     f"\r\n{length}\r\n{headers}\r\n".encode())
        chunk = b"[" * 65536
        if declared is None:  # one chunk of the chunked encoding per send
            chunk = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sent < limit else [], [], 1)
            if readable:
                break
            if writable:
                try:
                    sent += sock.send(chunk[: limit - sent])
                except OSError:  # the server closed its side: its answer is waiting
                    break
        answer = sock.recv(65536) if select.select([sock], [], [], 5)[0] else b""
        return answer, sent
    finally:
        sock.close()


def test_oversized_body_refused_before_it_is_read_whole(rig: ProcRig) -> None:
    """A request declaring 32 MiB gets 413 (JSON error) while the client is still sending: the
    server stops after about 1 MiB instead of reading the whole body; so does a chunked body
    with no declared length; a body just under 1 MiB is read and judged on its content (400),
    and the daemon still serves afterwards."""
    auth = f"Authorization: Bearer {SECRETS['MARKETD_API_TOKEN']}\r\n"
    answer, sent = _raw_post(rig.url, 32 * MIB, 32 * MIB, auth)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"error"' in answer
    assert sent < 8 * MIB, f"the server read {sent} bytes before answering"
    under, sent = _raw_post(rig.url, MIB - 10, MIB - 10, auth)
    assert under.startswith(b"HTTP/1.1 400"), under[:200]
    assert sent == MIB - 10
    # no Content-Length at all (chunked): refused as the stream passes 1 MiB
    chunked, sent = _raw_post(rig.url, None, 32 * MIB, auth)
    assert chunked.startswith(b"HTTP/1.1 413"), chunked[:200]
    assert sent < 16 * MIB, f"the server read {sent} bytes before answering"
    # without the token the body is not even looked at: refused by its declared size
    unauth, sent = _raw_post(rig.url, 32 * MIB, 32 * MIB)
    assert unauth.startswith((b"HTTP/1.1 413", b"HTTP/1.1 401")), unauth[:200]
    assert sent < 8 * MIB
    assert http("GET", f"{rig.url}/healthz")[0] == 200
    assert rig.terminate() == 0
    assert log_problems(rig.daemon_log()) == []


def test_database_files_are_private(rig: ProcRig) -> None:
    """Under umask 022 the database and its -wal/-shm files are created 0600."""
    old = os.umask(0o022)
    os.umask(old)
    assert old & 0o077 != 0o077  # the test's own umask would not explain 0600
    rig.enqueue({"provider": "alias", "sku": "B75806", "size": "9.5"}, headers=BEARER)
    files = sorted(rig.db.parent.glob(rig.db.name + "*"))
    assert rig.db in files
    modes = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files}
    assert set(modes.values()) == {"0o600"}, modes


# ---- bad configuration and command-line input: one line naming the key or flag, exit 2 ----


BAD_CONFIGS = [
    ("[server]\nport = 70000\n", "server.port"),
    ("[server]\nport = true\n", "server.port"),
    ("[scheduler]\ninterval_seconds = \"fast\"\n", "scheduler.interval_seconds"),
    ("[scheduler]\nmax_retries = -1\n", "scheduler.max_retries"),
    ("[bogus]\nx = 1\n", "bogus"),
    ("server = 5\n", "server"),
    ("[server\nport = 1\n", "not valid TOML"),
    ("[providers.goat]\nlimits = [\"1/hour\"]\n", "providers.goat"),
    ("[providers.stockx]\nlimits = \"100/hour\"\n", "providers.stockx.limits"),
    ("[providers.ebay]\nlimits = []\n", "providers.ebay.limits"),
    ("[providers.stockx]\nlimits = [\"0/hour\"]\n", "providers.stockx.limits[0]"),
    ("[providers.stockx]\nlimits = [\"1/second\", \"2/second\"]\n",
     "providers.stockx.limits[1]"),
    ("[providers.alias]\nbase_url = \"ftp://x\"\n", "providers.alias.base_url"),
    ("[providers.alias]\nregion = \"MARS\"\n", "providers.alias.region"),
    ("[providers.stockx]\nenabled = \"yes\"\n", "providers.stockx.enabled"),
    ("[providers.stockx]\nenabled = true\n[providers.stockx]\nenabled = false\n",
     "not valid TOML"),
    ("[logging]\nlevel = \"loud\"\n", "logging.level"),
    ("[database]\npath = 5\n", "database.path"),
    ("[scheduler]\nretry_base_seconds = 60\nretry_max_seconds = 30\n",
     "scheduler.retry_max_seconds"),
]


@pytest.mark.parametrize(("text", "key"), BAD_CONFIGS, ids=[k for _, k in BAD_CONFIGS])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    """check-config and serve both refuse it: exit 2, one line per problem naming the key."""
    cfg = write_config(tmp_path / "bad.toml", text)
    for args in (("check-config", "-c", str(cfg)), ("serve", "-c", str(cfg))):
        out = run_marketd(*args, timeout=30)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and key in lines[0], out.stderr
        assert lines[0].startswith("marketd: config: ")


def test_missing_config_from_environment_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    out = run_marketd("check-config", env={"MARKETD_CONFIG": str(missing)})
    assert out.returncode == 2 and str(missing) in out.stderr and "no such file" in out.stderr


@pytest.mark.parametrize("text", ["[providers.stockx]\ntimeout_s = 2.5\n",
                                  "[scheduler]\nretry_base_seconds = 0.5\n",
                                  "[scheduler]\nshutdown_grace_seconds = 1.5\n"])
def test_fractional_seconds_are_accepted(tmp_path: Path, text: str) -> None:
    cfg = write_config(tmp_path / "c.toml", text)
    out = run_marketd("check-config", "-c", str(cfg))
    assert out.returncode == 0, out.stderr


def test_empty_database_path_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", '[database]\npath = ""\n')
    out = run_marketd("check-config", "-c", str(cfg))
    assert out.returncode == 2 and "database.path" in out.stderr, out.stdout


BAD_FLAGS = [
    (("enqueue", "--provider", "stockx", "--sku", "X", "--priority", "5000"), "priority"),
    (("enqueue", "--provider", "stockx", "--sku", "X", "--size-system", "JP"), "size_system"),
    (("enqueue", "--provider", "stockx", "--sku", "X" * 65), "sku"),
    (("enqueue", "--provider", "stockx", "--sku", "X", "--size", "10.25"), "size"),
    (("prices", "--provider", "goat"), "--provider"),
    (("prices", "--sku", "bad\tsku!"), "--sku"),
    (("reset-failed", "--provider", "goat"), "--provider"),
    (("simulator", "--limit", "stockx"), "--limit"),
    (("simulator", "--limit", "goat=1/second"), "--limit"),
    (("simulator", "--latency-ms", "alias=slow"), "--latency-ms"),
    (("simulator", "--fault-rate", "alias=2"), "fault_rate"),
]


@pytest.mark.parametrize(("args", "name"), BAD_FLAGS, ids=[" ".join(a[:3]) for a, _ in BAD_FLAGS])
def test_bad_flag_values_are_one_line_naming_them(tmp_path: Path, args: tuple[str, ...],
                                                  name: str) -> None:
    """Flag values marketd checks itself: exit 2, one line naming the flag or field, and no
    database is created for a refused enqueue."""
    cfg = write_config(tmp_path / "c.toml", f'[database]\npath = "{tmp_path / "m.db"}"\n'
                                            "[server]\nport = 1\n")
    extra = ("-c", str(cfg)) if args[0] in ("enqueue", "prices", "reset-failed") else ()
    out = run_marketd(*args, *extra, timeout=30)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and lines[0].startswith("marketd: "), out.stderr
    if args[0] == "enqueue":
        assert not (tmp_path / "m.db").exists()


ARGPARSE_ERRORS = [
    (("enqueue", "--provider", "stockx"), "--sku"),
    (("demo", "--port", "abc"), "--port"),
    (("serve", "--bogus"), "--bogus"),
    (("frobnicate",), "frobnicate"),
]


@pytest.mark.parametrize(("args", "name"), ARGPARSE_ERRORS,
                         ids=[" ".join(a) for a, _ in ARGPARSE_ERRORS])
def test_usage_errors_exit_2_naming_the_flag(args: tuple[str, ...], name: str) -> None:
    """Flags argparse rejects: exit 2 and an error line naming the flag, no Traceback."""
    out = run_marketd(*args, timeout=30)
    assert out.returncode == 2
    assert any(name in line and "error" in line for line in out.stderr.splitlines()), out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(("args", "name"), ARGPARSE_ERRORS,
                         ids=[" ".join(a) for a, _ in ARGPARSE_ERRORS])
def test_usage_errors_are_one_line(args: tuple[str, ...], name: str) -> None:
    out = run_marketd(*args, timeout=30)
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
