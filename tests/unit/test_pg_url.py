"""A PostgreSQL URL's password leaves it for a child's environment (no I/O)."""

from __future__ import annotations

import pytest

from marketd.store.postgres import without_password


@pytest.mark.parametrize(("url", "bare", "password"), [
    ("postgresql://u:p%40ss@h:5432/db", "postgresql://u@h:5432/db", "p@ss"),
    ("postgresql://u:@h/db", "postgresql://u@h/db", ""),
    ("postgresql://u@h/db?password=x&sslmode=require", "postgresql://u@h/db?sslmode=require",
     "x"),
    ("postgresql:///db?host=/run/pg&password=s", "postgresql:///db?host=%2Frun%2Fpg", "s"),
    ("postgresql://h/db", "postgresql://h/db", None),
    ("postgresql:///db?host=/run/pg", "postgresql:///db?host=/run/pg", None),
])
def test_without_password(url: str, bare: str, password: str | None) -> None:
    assert without_password(url) == (bare, password)
