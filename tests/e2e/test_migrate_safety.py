"""Safe upgrades (issue 17): migrate refuses a database from a newer marketd, writes a
consistent backup before changing an existing schema, and --dry-run lists what would run
without changing or creating anything."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from marketd import sql
from tests.e2e.helpers import marketd, write_config

LATEST = max(v for v, _, _ in sql.migrations())


def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path / "c.toml", f'[database]\npath = "{tmp_path / "m.db"}"\n'
                                             "[server]\nport = 1\n")


def old_database(path: Path) -> None:
    """A database as marketd's first release left it: migration 1 only."""
    con = sqlite3.connect(path)
    first = next(text for v, _, text in sql.migrations() if v == 1)
    con.executescript(first)
    con.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                "VALUES (1, 'initial', '2026-01-01T00:00:00.000Z')")
    con.execute("INSERT INTO market_jobs (provider, sku, size, priority, status, dedupe_key, "
                "created_at) VALUES ('stockx', 'A-1', '10', 100, 'pending', 'stockx|A-1|10', "
                "'2026-01-01T00:00:00.000Z')")
    con.commit()
    con.close()


def versions(path: Path) -> list[int]:
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        con.close()


def test_a_database_from_a_newer_marketd_is_refused(tmp_path: Path) -> None:
    c = str(cfg(tmp_path))
    assert marketd("migrate", "-c", c).returncode == 0
    con = sqlite3.connect(tmp_path / "m.db")
    con.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                "VALUES (99, 'future', '2030-01-01T00:00:00.000Z')")
    con.commit()
    con.close()
    for args in (("migrate",), ("migrate", "--dry-run"), ("serve",)):
        out = marketd(*args, "-c", c, timeout=30)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert "newer marketd" in out.stderr and "schema 99" in out.stderr, out.stderr
        assert "up to date" not in out.stdout
    assert versions(tmp_path / "m.db")[-1] == 99
    assert list(tmp_path.glob("m.db.before-migration-*")) == []


def test_dry_run_changes_and_creates_nothing(tmp_path: Path) -> None:
    c = str(cfg(tmp_path))
    fresh = marketd("migrate", "-c", c, "--dry-run", "--json")
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout)["pending"] == list(range(1, LATEST + 1))
    assert not (tmp_path / "m.db").exists()
    old_database(tmp_path / "m.db")
    out = marketd("migrate", "-c", c, "--dry-run")
    assert out.returncode == 0 and "would apply" in out.stdout, out.stderr
    assert ", ".join(map(str, range(2, LATEST + 1))) in out.stdout
    assert versions(tmp_path / "m.db") == [1]
    assert list(tmp_path.glob("m.db.before-migration-*")) == []


def test_a_backup_is_written_before_the_schema_changes(tmp_path: Path) -> None:
    c = str(cfg(tmp_path))
    old_database(tmp_path / "m.db")
    out = marketd("migrate", "-c", c, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["applied"] == list(range(2, LATEST + 1))
    backup = Path(result["backup"])
    assert backup.name.startswith("m.db.before-migration-1-") and backup.parent == tmp_path
    assert versions(backup) == [1]  # the schema as it was, with its rows
    con = sqlite3.connect(backup)
    assert con.execute("SELECT sku FROM market_jobs").fetchall() == [("A-1",)]
    con.close()
    assert versions(tmp_path / "m.db") == list(range(1, LATEST + 1))
    again = marketd("migrate", "-c", c)
    assert again.returncode == 0 and "up to date" in again.stdout
    assert len(list(tmp_path.glob("m.db.before-migration-*"))) == 1  # none without a change


async def test_postgresql_refuses_a_newer_database_and_dry_runs(tmp_path: Path) -> None:
    """The PostgreSQL store's migrate: --dry-run on an empty database lists every migration
    and creates no table; a database stamped by a newer marketd is refused, dry run or not."""
    import asyncpg

    from tests.conftest import postgres_database

    databases = postgres_database()
    url = await anext(databases)
    try:
        pg = write_config(tmp_path / "pg.toml", f'[database]\nurl = "{url}"\n[server]\nport = 1\n')
        dry = marketd("migrate", "-c", str(pg), "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        pg_latest = max(json.loads(dry.stdout)["pending"])
        con = await asyncpg.connect(url)
        try:
            assert await con.fetchval("SELECT to_regclass('schema_migrations')") is None
            assert marketd("migrate", "-c", str(pg)).returncode == 0
            up = marketd("migrate", "-c", str(pg), "--dry-run", "--json")
            assert json.loads(up.stdout)["pending"] == []
            await con.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                              "VALUES (99, 'future', now())")
        finally:
            await con.close()
        for args in (("migrate",), ("migrate", "--dry-run")):
            out = marketd(*args, "-c", str(pg))
            assert out.returncode == 1 and "newer marketd" in out.stderr, out.stderr
            assert f"knows up to {pg_latest}" in out.stderr
    finally:
        await databases.aclose()
