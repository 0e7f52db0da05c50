"""The schema versions a database records against the ones this marketd knows: a database
from a newer marketd is refused (its new tables and columns would be silently ignored, or a
downgrade's schema half-applied), never migrated or read."""

from __future__ import annotations

from collections.abc import Iterable

from marketd.errors import StoreError


def refuse_newer(done: Iterable[int], known: Iterable[int], where: str) -> None:
    newer = set(done) - set(known)
    if newer:
        raise StoreError(f"{where} was written by a newer marketd (schema {max(newer)}; this "
                         f"one knows up to {max(known, default=0)}): upgrade marketd, or "
                         "restore the backup taken before that upgrade")
