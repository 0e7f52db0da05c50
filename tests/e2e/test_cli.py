"""The command line as a user runs it: exit codes, one-line errors, real database files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.e2e.helpers import marketd, write_config


def cfg(tmp_path: Path, extra: str = "") -> Path:
    return write_config(tmp_path / "c.toml",
                        f'[database]\npath = "{tmp_path / "m.db"}"\n[server]\nport = 1\n{extra}')


def test_help_and_version() -> None:
    """--help lists the commands and exits 0; a bad command exits 2."""
    out = marketd("--help")
    assert out.returncode == 0 and "check-config" in out.stdout and "enqueue" in out.stdout
    assert marketd("frobnicate").returncode == 2
    assert marketd("--version").stdout.startswith("marketd ")


def test_check_config_reports_every_problem(tmp_path: Path) -> None:
    """check-config prints each bad key on its own line and exits 2."""
    bad = write_config(tmp_path / "bad.toml",
                       '[scheduler]\nmax_batch_size = 0\nbogus = 1\n'
                       '[providers.stockx]\nlimits = ["100/hr"]\n')
    out = marketd("check-config", "-c", str(bad))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 3
    assert any("scheduler.max_batch_size" in line for line in lines)
    assert any("scheduler.bogus: unknown key" in line for line in lines)
    assert any("providers.stockx.limits[0]" in line for line in lines)
    assert "Traceback" not in out.stderr


def test_check_config_ok_and_missing_file(tmp_path: Path) -> None:
    """A good file exits 0 with a summary; a missing one exits 2 naming it."""
    ok = marketd("check-config", "-c", str(cfg(tmp_path)))
    assert ok.returncode == 0 and ok.stdout.startswith("ok:")
    missing = marketd("check-config", "-c", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_migrate_twice(tmp_path: Path) -> None:
    """migrate creates the schema, and a second run changes nothing."""
    c = str(cfg(tmp_path))
    first = marketd("migrate", "-c", c)
    assert first.returncode == 0 and "applied migrations 1" in first.stdout
    second = marketd("migrate", "-c", c)
    assert second.returncode == 0 and "up to date" in second.stdout


def test_enqueue_without_daemon_writes_the_database(tmp_path: Path) -> None:
    """With no daemon listening, enqueue stores the job directly (in a database migrate made:
    enqueue creates none); status and prices read it."""
    c = str(cfg(tmp_path))
    assert marketd("migrate", "-c", c).returncode == 0
    out = marketd("enqueue", "-c", c, "--provider", "StockX", "--sku", "dd1391-100",
                  "--size", "10", "--priority", "manual")
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert (job["dedupe_key"], job["priority"], job["via"]) == \
        ("stockx|DD1391-100|10", 200, "database")
    st = marketd("status", "-c", c, "--json")
    assert json.loads(st.stdout)["jobs"]["by_provider"]["stockx"]["pending"] == 1
    text = marketd("status", "-c", c)
    assert "stockx" in text.stdout and text.returncode == 0
    assert marketd("prices", "-c", c).stdout.strip() == "no prices stored yet"


def test_enqueue_bad_input_exits_2(tmp_path: Path) -> None:
    """Bad job input is a one-line error, exit 2, and nothing stored."""
    c = str(cfg(tmp_path))
    out = marketd("enqueue", "-c", c, "--provider", "goat", "--sku", "X")
    assert out.returncode == 2 and "provider" in out.stderr
    out = marketd("enqueue", "-c", c, "--provider", "ebay", "--sku", "X", "--size", "huge")
    assert out.returncode == 2 and "size" in out.stderr
    assert not (tmp_path / "m.db").exists() or sqlite3.connect(tmp_path / "m.db").execute(
        "SELECT count(*) FROM market_jobs").fetchone()[0] == 0


def test_trigger_without_daemon_says_what_to_do(tmp_path: Path) -> None:
    """trigger with no daemon is a one-line error naming the address, exit 1."""
    out = marketd("trigger", "-c", str(cfg(tmp_path)))
    assert out.returncode == 1
    assert "cannot reach marketd" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_reset_failed_and_backup(tmp_path: Path) -> None:
    """reset-failed moves failed jobs back; backup writes a copy and refuses to overwrite."""
    c = str(cfg(tmp_path))
    marketd("migrate", "-c", c)
    marketd("enqueue", "-c", c, "--provider", "alias", "--sku", "X-1")
    con = sqlite3.connect(tmp_path / "m.db")
    con.execute("UPDATE market_jobs SET status = 'failed'")
    con.commit()
    con.close()
    out = marketd("reset-failed", "-c", c, "--provider", "alias")
    assert out.returncode == 0 and out.stdout.startswith("1 ")
    assert marketd("backup", "-c", c, str(tmp_path / "b.db")).returncode == 0
    again = marketd("backup", "-c", c, str(tmp_path / "b.db"))
    assert again.returncode == 1 and "exists" in again.stderr


def test_unwritable_database_is_a_clear_error(tmp_path: Path) -> None:
    """A database path that cannot be created is one line naming it, exit 1."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    c = write_config(tmp_path / "c.toml", f'[database]\npath = "{blocker / "sub" / "m.db"}"\n')
    out = marketd("status", "-c", str(c))
    assert out.returncode == 1 and "cannot open database" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    """serve on a port something else holds: one line naming the address, exit 1."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        c = write_config(tmp_path / "c.toml", f'[database]\npath = "{tmp_path / "m.db"}"\n'
                                              f"[server]\nport = {port}\n")
        out = marketd("serve", "-c", str(c))
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("marketd:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0]
    assert "Traceback" not in out.stderr


async def test_migrate_to_postgresql(tmp_path: Path) -> None:
    """migrate --to copies the SQLite database into an empty PostgreSQL one and says what it
    copied (exit 0); a second copy into it is refused (exit 2), as is a missing SQLite file
    (never created) and a URL that is not PostgreSQL's; --help says how."""
    from tests.conftest import postgres_database

    databases = postgres_database()
    url = await anext(databases)
    try:
        c = str(cfg(tmp_path))
        assert marketd("migrate", "-c", c).returncode == 0  # enqueue creates no database
        for sku in ("DD1391-100", "CW2288-111"):
            assert marketd("enqueue", "-c", c, "--provider", "stockx", "--sku", sku,
                           "--size", "10").returncode == 0
        out = marketd("migrate", "-c", c, "--to", url)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert any(line.split()[:2] == ["market_jobs", "2"] for line in lines), out.stdout
        assert lines[-1].split()[:2] == ["total", "2"] and "counts checked" in lines[-1]
        again = marketd("migrate", "-c", c, "--to", url)
        assert again.returncode == 2 and "not empty" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
        missing = tmp_path / "none.db"
        c2 = write_config(tmp_path / "c2.toml", f'[database]\npath = "{missing}"\n')
        gone = marketd("migrate", "-c", str(c2), "--to", url)
        assert gone.returncode == 2 and "no SQLite database" in gone.stderr
        assert not missing.exists()
        bad = marketd("migrate", "-c", c, "--to", "mysql://x@y/z")
        assert bad.returncode == 2 and "postgresql://" in bad.stderr
        assert "--to URL" in marketd("migrate", "--help").stdout
    finally:
        await databases.aclose()
