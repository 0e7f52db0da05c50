"""README's install, timer, upgrade and uninstall blocks, run as written in a throwaway root
(issue 17), so the README cannot drift from what works.

Each block is taken from README.md (the fenced ``bash`` block after its ``<!-- install: ...``
marker) and run by bash with ``set -eu``; the only changes are the root: ``/opt``, ``/etc``,
``/usr/local/bin``, ``/var/backups`` and ``/var/lib`` become folders under ``tmp_path``. ``sudo``
runs its command as this user, ``systemctl`` is a stub that records its arguments. Installing
needs no network: the fresh venv sees this interpreter's packages through a ``.pth`` file
(the dependencies, and setuptools for the build, which runs without build isolation); marketd
itself is built from a copy of the checkout and installed into the fresh venv for real.

What it proves: ``python3 -m venv`` + ``pip install .`` gives ``/opt/marketd/bin/marketd``;
the unit the README installs runs exactly that (and ``systemd-analyze verify`` accepts it and
the timer units, where systemd-analyze exists); its ``Documentation=`` exists; the config is
0644 and the secrets file 0600 with a CRON_SECRET; the upgrade backs up and reinstalls; the
uninstall leaves no unit, link or venv.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# what a checkout holds that `pip install .` reads
SOURCE = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "config.example.toml",
          "marketd", "systemd")
PREFIXES = ("/opt/", "/etc/", "/usr/local/bin", "/var/backups", "/var/lib/")


def readme_block(marker: str) -> str:
    """The fenced bash block right after ``<!-- MARKER: ...-->`` in README.md."""
    text = README.read_text()
    m = re.search(rf"<!-- {marker}:[^>]*-->\s*```bash\n(.*?)```", text, re.S)
    assert m, f"README.md has no <!-- {marker}: --> block"
    return m.group(1)


def rooted(block: str, root: Path) -> str:
    for prefix in PREFIXES:
        block = re.sub(rf"(?<![\w/.]){re.escape(prefix)}", f"{root}{prefix}", block)
    return block


PREAMBLE = r"""
set -eu
sudo() { "$@"; }
systemctl() { echo "systemctl $*" >> "$ROOT/systemctl.log"; }
python3() {
    command "$REAL_PYTHON" "$@"
    if [ "${1:-}" = -m ] && [ "${2:-}" = venv ]; then
        # offline: the new venv sees the test interpreter's packages (dependencies, and a
        # setuptools new enough for the build) instead of its own bundled setuptools
        site=$("$3/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        rm -rf "$site"/setuptools "$site"/setuptools-* "$site"/pkg_resources \
               "$site"/_distutils_hack "$site"/distutils-precedence.pth
        echo "$DEV_SITE" > "$site/_test_dependencies.pth"
    fi
}
"""


def run_block(block: str, root: Path, src: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MARKETD_", "PIP_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(ROOT=str(root), REAL_PYTHON=sys.executable,
               DEV_SITE=sysconfig.get_paths()["purelib"], PIP_NO_INDEX="1",
               PIP_NO_BUILD_ISOLATION="0",  # pip's inverted "no-" variables: "0" turns it off
               PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_CACHE_DIR="1", PATH=f"{root}/usr/local/bin:{env.get('PATH', '')}")
    script = PREAMBLE + rooted(block, root)
    out = subprocess.run(["bash", "-c", script], cwd=src, env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def unit_directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_readme_install_upgrade_uninstall(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for folder in ("etc/systemd/system", "usr/local/bin", "opt", "var/lib", "var/backups"):
        (root / folder).mkdir(parents=True)
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCE:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)

    install = readme_block("install")
    assert "/opt/marketd/bin/pip install" in install
    run_block(install, root, src)
    venv = root / "opt" / "marketd"
    script = venv / "bin" / "marketd"
    assert script.exists() and (root / "usr/local/bin/marketd").resolve() == script.resolve()
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import marketd; print(marketd.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, check=True)
    assert probe.stdout.startswith(str(venv)), probe.stdout  # the wheel, not the checkout

    # the unit runs what was installed, and names documentation that exists
    unit = root / "etc/systemd/system/marketd.service"
    d = unit_directives(unit)
    assert d["ExecStart"] == [f"{script} serve -c /etc/marketd/config.toml"]
    assert d["ExecStartPre"][0].startswith(f"{script} check-config")
    doc = d["Documentation"][0]
    assert doc.startswith("file://") and Path(doc.removeprefix("file://")).is_file(), doc
    # the shipped unit says the same for /opt/marketd, which is what the README installs into
    shipped = unit_directives(ROOT / "systemd/marketd.service")
    assert shipped["ExecStart"] == ["/opt/marketd/bin/marketd serve -c /etc/marketd/config.toml"]
    assert shipped["Documentation"] == ["file:///opt/marketd/share/doc/marketd/README.md"]
    assert "/opt/marketd/share/doc/marketd/README.md" in install

    config = root / "etc/marketd/config.toml"
    secrets = root / "etc/marketd/secrets.env"
    assert stat.S_IMODE(config.stat().st_mode) == 0o644
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert re.fullmatch(r"CRON_SECRET=[0-9a-f]{48}\n", secrets.read_text())
    assert config.read_text() == (ROOT / "config.example.toml").read_text()
    assert "systemctl enable --now marketd" in (root / "systemctl.log").read_text()

    run_block(readme_block("timer"), root, src)
    timer_service = root / "etc/systemd/system/marketd-trigger.service"
    assert unit_directives(timer_service)["ExecStart"][0].startswith(f"{script} trigger")
    _verify([unit, timer_service, root / "etc/systemd/system/marketd-trigger.timer"])

    # the service's first start would have made the database: here, migrate makes it
    db = root / "var/lib/marketd/marketd.db"
    config.write_text(config.read_text().replace('"/var/lib/marketd/marketd.db"', f'"{db}"'))
    subprocess.run([str(script), "migrate", "-c", str(config)], check=True,
                   capture_output=True, timeout=60)
    run_block(readme_block("upgrade"), root, src)
    backups = list((root / "var/backups/marketd").glob("before-upgrade-*.db"))
    assert len(backups) == 1 and backups[0].stat().st_size > 0
    assert "systemctl restart marketd" in (root / "systemctl.log").read_text()

    run_block(readme_block("uninstall"), root, src)
    assert not venv.exists() and not unit.exists() and not timer_service.exists()
    assert not (root / "usr/local/bin/marketd").exists()
    assert config.exists() and secrets.exists()  # kept: the data and secrets are the user's


def _verify(units: list[Path]) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("the README's blocks ran; systemd-analyze is not installed, so the "
                    "installed units were not verified (apt-get install systemd)")
    out = subprocess.run([tool, "verify", *map(str, units)], capture_output=True, text=True,
                         timeout=60, check=False)
    text = (out.stdout + out.stderr).strip()
    mine = [line for line in text.splitlines() if "marketd" in line]
    assert out.returncode == 0 and not mine, text
