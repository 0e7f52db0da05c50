"""SQLite rows to models and back, in one place: times are ISO-8601 UTC text in the file and
epoch seconds in the models."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from marketd.clock import iso, parse_iso
from marketd.models import Job, JobStatus, Price


def job_from_row(row: sqlite3.Row | Mapping[str, Any]) -> Job:
    return Job(
        id=row["id"], user_id=row["user_id"], provider=row["provider"], sku=row["sku"],
        size=row["size"], size_system=row["size_system"], priority=row["priority"],
        status=JobStatus(row["status"]), error_message=row["error_message"],
        retry_count=row["retry_count"], started_at=parse_iso(row["started_at"]),
        completed_at=parse_iso(row["completed_at"]), dedupe_key=row["dedupe_key"],
        created_at=parse_iso(row["created_at"]) or 0.0,
        next_attempt_at=parse_iso(row["next_attempt_at"]),
    )


def price_row(p: Price) -> tuple[Any, ...]:
    """A price as upsert_price and insert_price_history take it (no size is '')."""
    return (p.provider, p.sku, p.size or "", p.currency, p.lowest_ask, p.highest_bid,
            p.last_sale, iso(p.fetched_at), extra_json(p))


def extra_json(p: Price) -> str | None:
    """A price's other amounts as market_prices.extra keeps them (None: none)."""
    return json.dumps(dict(p.extra), sort_keys=True) if p.extra else None


def price_dict(row: sqlite3.Row) -> dict[str, Any]:
    return dict(row) | {"size": row["size"] or None}

