"""What every ``marketd`` command shares: exit codes, usage errors, the config it reads (with
``--env-file``), and JSON output. :mod:`marketd.cli` parses and dispatches;
:mod:`marketd.cli_ops` holds the commands an operator runs against a database or a daemon."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from marketd.config import Config, load_config

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")
# what the systemd unit passes with -c; read when neither -c nor $MARKETD_CONFIG names a file
DEFAULT_CONFIG = "/etc/marketd/config.toml"


class UsageError(Exception):
    """Bad flags or arguments (exit 2)."""


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE",
                   help=f"config file (default: $MARKETD_CONFIG, else {DEFAULT_CONFIG} if it "
                        "exists, else built-in defaults)")
    p.add_argument("--env-file", metavar="FILE",
                   help="read environment variables (secrets) from this file first, in "
                        "systemd's EnvironmentFile= format, e.g. /etc/marketd/secrets.env; "
                        "its values win over the environment's")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def config_of(args: argparse.Namespace) -> Config:
    """The config ``-c`` names, else $MARKETD_CONFIG's, else /etc/marketd/config.toml if it
    exists, else the built-in defaults."""
    path = getattr(args, "config", None)
    if path is None and not os.environ.get("MARKETD_CONFIG") and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    return load_config(path)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# ---- --env-file ------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_env_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's EnvironmentFile= reads them: blank lines and lines
    starting with ``#`` or ``;`` are skipped, a value may be in single or double quotes, a
    trailing backslash continues the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--env-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--env-file {path}: cannot read it ({exc}); run as root "
                         "(sudo) for the service's secrets file") from None
    out: dict[str, str] = {}
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = pending + raw
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            raise UsageError(f"--env-file {path}: line {number} is not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def apply_env_file(path: str | None) -> None:
    if path:
        os.environ.update(read_env_file(path))
