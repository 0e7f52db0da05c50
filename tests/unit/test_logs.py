"""Journald priorities: under systemd each log line starts with its syslog priority, so
``journalctl -p warning`` filters; elsewhere lines are unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import logging, structlog
from marketd.logs import configure_logging
configure_logging("debug", "json")
log = structlog.get_logger("t")
log.debug("d_event"); log.info("i_event"); log.warning("w_event"); log.error("e_event")
logging.getLogger("aiohttp.access").warning("stdlib_event")
"""


def _run(journal: bool) -> list[str]:
    """The script with stderr on a file; JOURNAL_STREAM names that file when ``journal``."""
    import tempfile

    with tempfile.TemporaryFile() as err:
        st = os.fstat(err.fileno())
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("JOURNAL_STREAM", None)
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=err, env=env, check=True,
                       timeout=60)
        err.seek(0)
        return err.read().decode().splitlines()


def test_priorities_under_journald() -> None:
    lines = _run(journal=True)
    prefix = {line.split(">", 1)[1].split('"event": "')[1].split('"')[0]: line[:3]
              for line in lines}
    assert prefix == {"d_event": "<7>", "i_event": "<6>", "w_event": "<4>", "e_event": "<3>",
                      "stdlib_event": "<4>"}, lines


def test_no_prefix_elsewhere() -> None:
    """Not under journald (or JOURNAL_STREAM inherited for another stream): plain JSON."""
    lines = _run(journal=False)
    assert len(lines) == 5 and all(line.startswith("{") for line in lines), lines
