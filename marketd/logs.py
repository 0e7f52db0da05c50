"""structlog set-up, done once at start-up: JSON lines for journald, or a console renderer.

Under systemd (stderr connected to the journal: ``$JOURNAL_STREAM`` names stderr's device and
inode) every line starts with its syslog priority, ``<3>`` error to ``<7>`` debug, which
journald strips and stores as PRIORITY, so ``journalctl -u marketd -p warning`` filters.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

# syslog priorities (RFC 5424) of structlog's and logging's level names
PRIORITIES: Mapping[str, int] = {"critical": 2, "exception": 3, "error": 3, "warning": 4,
                                 "warn": 4, "info": 6, "debug": 7, "notset": 7}


def under_journald(stream: Any = None) -> bool:
    """Whether ``stream`` (stderr) is the journal's: ``$JOURNAL_STREAM`` is ``dev:inode``."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def with_priority(renderer: structlog.typing.Processor) -> structlog.typing.Processor:
    """``renderer``, with each line prefixed by ``<N>``, its level's syslog priority."""

    def render(logger: Any, name: str, event: MutableMapping[str, Any]) -> Any:
        level = str(event.get("level") or name or "info").lower()
        prefix = f"<{PRIORITIES.get(level, 6)}>"
        out = renderer(logger, name, event)
        return prefix.encode() + out if isinstance(out, bytes) else f"{prefix}{out!s}"

    return render


def configure_logging(level: str = "info", fmt: str = "auto", *, cache: bool = False) -> None:
    """structlog and the standard library's logging in one format. ``cache``: each module's
    logger is built once, on its first use (the daemon: a debug line it filters out then costs
    a call, not a fresh bind each time); off where logging is configured again later in the
    process (tests capturing logs)."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    if under_journald():
        renderer = with_priority(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=cache,
    )
    # libraries that log through the standard library (APScheduler, aiohttp) in the same format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
