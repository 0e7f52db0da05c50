"""Each benchmark's main entry runs with --quick in a few seconds and writes its JSON.

Speed is measured by ``python -m bench``, never here: this only keeps the scripts working.
Skips when the ``bench`` extra (huey, matplotlib, pyinstrument, procrastinate) is not
installed, or, for bench.postgres, when no PostgreSQL server answers (MARKETD_BENCH_POSTGRES_URL,
default 127.0.0.1:5432), unless MARKETD_REQUIRE_SERVICES=1, where either fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import require_bench_extra

ROOT = Path(__file__).resolve().parents[2]
BENCHES = ("enqueue_batch", "enqueue_single", "selection", "end_to_end", "startup_rss",
           "freshness")


@pytest.fixture(scope="module", autouse=True)
def _bench_extra() -> None:
    require_bench_extra()


def _missing(reason: str) -> None:
    if os.environ.get("MARKETD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (MARKETD_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _postgres_missing() -> str | None:
    """Why bench.postgres cannot run here, or None (its own check, so the two agree)."""
    import asyncio

    try:
        from bench.postgres import missing_service
    except ImportError as exc:
        return f"bench.postgres cannot be imported: {exc}"
    return asyncio.run(missing_service())


@pytest.mark.parametrize("name", [*BENCHES, "postgres"])
def test_bench_quick(name: str, tmp_path: Path) -> None:
    if name == "postgres" and (reason := _postgres_missing()):
        _missing(f"bench.postgres needs a PostgreSQL server and procrastinate: {reason}")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", "--quick", "--out",
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["bench"] == name and data["quick"] is True
    assert data["goals"], "every benchmark judges at least one goal"
    for goal in data["goals"]:
        assert goal["measured"] == goal["measured"], f"{goal['name']} is NaN"
    assert "holds?" in proc.stdout
    if name == "freshness":
        assert (tmp_path / "freshness.png").stat().st_size > 0


def test_ab_compares_two_checkouts(tmp_path: Path) -> None:
    """bench.ab drains each checkout once per round and prints B's median over A's; a folder
    that is no checkout is refused before anything runs."""
    out = subprocess.run([sys.executable, "-m", "bench.ab", str(ROOT), "--rounds", "1",
                          "--jobs", "200"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("A ") and lines[1].startswith("B ") and "jobs/s" in lines[0]
    assert lines[-1].startswith("B/A = ") and float(lines[-1].split("= ")[1]) > 0
    bad = subprocess.run([sys.executable, "-m", "bench.ab", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "holds no marketd/" in bad.stderr
