"""Which stored prices are changes: the rule both backends apply inside the write transaction
that stores a group's prices.

A price row is ``(provider, sku, size, currency, lowest_ask, highest_bid, last_sale,
fetched_at)`` (``fetched_at`` in the backend's own comparable type). A new row is a change when
no price is stored for its key, or the stored one differs in currency or any amount; a row
older than the stored one is never a change (the store keeps the newer). Several rows of one
key in one write count once, the newest. Changes get a history row and, where price-change
webhooks are on, an outbox row (:func:`price_event`); an unchanged price only moves
``market_prices.fetched_at``, which says when it was last confirmed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from marketd.models import format_minor

PriceRow = Sequence[Any]
Key = tuple[str, str, str]


def key_of(row: PriceRow) -> Key:
    return (row[0], row[1], row[2])


def newest_per_key(rows: Iterable[PriceRow]) -> dict[Key, PriceRow]:
    out: dict[Key, PriceRow] = {}
    for row in rows:
        k = key_of(row)
        old = out.get(k)
        if old is None or row[7] >= old[7]:
            out[k] = row
    return out


def same_price(a: PriceRow, b: PriceRow) -> bool:
    return tuple(a[3:7]) == tuple(b[3:7])


def changes(rows: Iterable[PriceRow],
            current: Mapping[Key, PriceRow]) -> list[tuple[PriceRow | None, PriceRow]]:
    """``(stored row or None, new row)`` for every key whose newest row changes its price."""
    out: list[tuple[PriceRow | None, PriceRow]] = []
    for k, new in newest_per_key(rows).items():
        old = current.get(k)
        if old is not None and (old[7] > new[7] or same_price(old, new)):
            continue
        out.append((old, new))
    return out


def sku_list(sku: str | None, skus: Sequence[str] | None) -> list[str] | None:
    """list_prices' ``sku`` and ``skus`` as one list (None: every SKU)."""
    if sku is None and skus is None:
        return None
    return [*([sku] if sku is not None else []), *(skus or ())]


def significant(old: PriceRow | None, new: PriceRow, min_percent: float) -> bool:
    """Whether a change is worth an event: a first price, another currency, an amount that
    appears or goes, or one that moved by at least ``min_percent`` of its old value (any
    move when 0)."""
    if old is None or min_percent <= 0 or old[3] != new[3]:
        return True
    for before, after in zip(old[4:7], new[4:7], strict=True):
        if (before is None) != (after is None):
            return True
        if before is not None and after is not None and before != after and (
                before == 0 or abs(after - before) * 100 >= min_percent * abs(before)):
            return True
    return False


def price_event(old: PriceRow | None, new: PriceRow, when: Callable[[Any], str | None]) -> str:
    """The ``price_changed`` body (the exact bytes signed and sent): amounts as /prices shows
    them, times as ISO-8601 UTC text (``when`` turns the backend's time into it)."""

    def side(row: PriceRow) -> dict[str, Any]:
        return {"currency": row[3], "lowest_ask": format_minor(row[4]),
                "highest_bid": format_minor(row[5]), "last_sale": format_minor(row[6]),
                "fetched_at": when(row[7])}

    return json.dumps({"event": "price_changed", "provider": new[0], "sku": new[1],
                       "size": new[2] or None, "currency": new[3],
                       "old": side(old) if old is not None else None, "new": side(new),
                       "fetched_at": when(new[7])}, separators=(",", ":"))
