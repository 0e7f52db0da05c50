"""Named SQL queries and migrations, shipped as package data."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from functools import cache
from importlib import resources

_NAME_RE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    parts = _NAME_RE.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


@cache
def queries() -> dict[str, str]:
    """Every named query of every ``sql/*.sql`` file (queries.sql, page.sql, ...)."""
    out: dict[str, str] = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, text in parse_queries(entry.read_text("utf-8")).items():
                if name in out:
                    raise ValueError(f"query {name!r} is defined twice")
                out[name] = text
    return out


def schema() -> str:
    return resources.files("marketd").joinpath("schema.sql").read_text("utf-8")


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` for every file in sql/migrations, in order."""
    folder = resources.files(__package__).joinpath("migrations")
    out = []
    for entry in folder.iterdir():
        m = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    return sorted(out)


def statements(script: str) -> Iterator[str]:
    """A script's statements one by one (``executescript`` would commit the caller's
    transaction); comment lines before a statement are dropped."""
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not buf.strip():
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip():
        yield buf.strip()
