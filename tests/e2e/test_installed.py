"""The installed package (as `pip install .` leaves it), run from outside the checkout: the
schema, migrations and templates ship inside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import free_port, http, wait_until, write_config

SCRIPT = Path(sys.executable).with_name("marketd")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env


@pytest.fixture
def installed() -> Path:
    probe = subprocess.run([sys.executable, "-c", "import marketd; print(marketd.__file__)"],
                           capture_output=True, text=True, cwd="/", env=_env(), check=False)
    if not SCRIPT.exists() or probe.returncode or "site-packages" not in probe.stdout:
        if os.environ.get("MARKETD_REQUIRE_SERVICES") == "1":
            pytest.fail("marketd is not installed as a package beside this interpreter")
        pytest.skip("marketd is not installed as a package (pip install .)")
    return SCRIPT


def test_installed_package_migrates_and_serves_its_page(installed: Path,
                                                        tmp_path: Path) -> None:
    """From a folder outside the checkout: migrate finds its SQL, serve renders its page."""
    port = free_port()
    cfg = write_config(tmp_path / "c.toml", f'[database]\npath = "{tmp_path / "m.db"}"\n'
                                            f"[server]\nport = {port}\n"
                                            "[providers.stockx]\nenabled = false\n"
                                            "[providers.alias]\nenabled = false\n"
                                            "[providers.ebay]\nenabled = false\n")
    out = subprocess.run([str(installed), "migrate", "-c", str(cfg)], capture_output=True,
                         text=True, cwd=tmp_path, env=_env(), timeout=60, check=False)
    assert out.returncode == 0 and "applied migrations 1, 2" in out.stdout, out.stderr
    proc = subprocess.Popen([str(installed), "serve", "-c", str(cfg)], cwd=tmp_path,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200,
                   what="installed daemon ready")
        status, body = http("GET", f"http://127.0.0.1:{port}/")
        assert status == 200 and "marketd" in body
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
