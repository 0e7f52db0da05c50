"""Read models shared by the JSON API, the CLI and the status page: plain dicts built from the
store and the lanes' live state. No provider is ever called from here."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

from marketd.clock import iso, parse_iso
from marketd.instance import DEAD_AFTER_S
from marketd.models import PROVIDERS, EnqueueResult, format_minor
from marketd.store import Store
from marketd.worker import Lane

CATALOG_FIELDS = ("title", "brand", "colourway", "image_url")


def price_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A price as /prices shows it: amounts as decimal strings in major units, the catalog's
    fields where known (null otherwise), ``extra``: the provider's other amounts (StockX's
    flex_lowest_ask, earn_more, sell_faster) in the price's currency."""
    raw = row.get("extra")
    extra = json.loads(raw) if isinstance(raw, str) and raw else {}
    return {
        "provider": row["provider"],
        "sku": row["sku"],
        "size": row["size"],
        "currency": row["currency"],
        "lowest_ask": format_minor(row["lowest_ask"]),
        "highest_bid": format_minor(row["highest_bid"]),
        "last_sale": format_minor(row["last_sale"]),
        "fetched_at": row["fetched_at"],
        **{f: row.get(f) or None for f in CATALOG_FIELDS},
        "extra": {k: format_minor(v) for k, v in sorted(extra.items())
                  if isinstance(v, int)},
    }


def history_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A history point as /prices/history shows it (amounts as /prices does)."""
    return {
        "fetched_at": row["fetched_at"],
        "currency": row["currency"],
        "lowest_ask": format_minor(row["lowest_ask"]),
        "highest_bid": format_minor(row["highest_bid"]),
        "last_sale": format_minor(row["last_sale"]),
    }


_RESULT_JSON = ('{"id": %s, "dedupe_key": %s, "status": %s, "priority": %s, '
                '"deduplicated": %s}')


def enqueue_json(results: Iterable[EnqueueResult]) -> str:
    """The 202 body of ``POST /enqueue``: exactly ``json.dumps({"jobs": [r.as_dict() ...]})``
    (default separators, ASCII escapes), without a dict per job.

    A result whose fields are the usual exact types (str or None id; str key and status; int
    priority; bool flag) is written from a template with json's own string escaper; any other
    goes through ``json.dumps(r.as_dict())``, which writes it as the whole-body dump would.
    """
    enc = encode_basestring_ascii
    parts = []
    for r in results:
        rid, key, status, priority, dup = r.id, r.dedupe_key, r.status, r.priority, r.deduplicated
        if ((rid is None or type(rid) is str) and type(key) is str and type(status) is str
                and type(priority) is int and type(dup) is bool):
            parts.append(_RESULT_JSON % ("null" if rid is None else enc(rid), enc(key),
                                         enc(status), priority, "true" if dup else "false"))
        else:
            parts.append(json.dumps(r.as_dict()))
    return '{"jobs": [' + ", ".join(parts) + "]}"


def budget_view(lanes: Mapping[str, Lane], rows: list[dict[str, Any]],
                now: float) -> dict[str, Any]:
    """This hour's row per provider, every limit's current window, and pauses."""
    by_provider = {r["provider"]: r for r in rows}
    out: dict[str, Any] = {}
    for name, lane in lanes.items():
        row = by_provider.get(name, {})
        paused = lane.paused(now)
        out[name] = {
            "hour_window": row.get("hour_window"),
            "rate_limit": row.get("rate_limit", lane.budget.rate_limit),
            "used": row.get("used", 0),
            "limits": [
                {"limit": lim.text, "window_s": lim.window_s,
                 "used": lane.budget.log.count_in(lim.window_s, now),
                 "remaining": lane.budget.log.remaining(lim, now)}
                for lim in lane.budget.limits
            ],
            "next_free_at": iso(max(now, lane.budget.next_free(now))),
            "paused": paused,
            "paused_until": iso(lane.paused_until) if paused else None,
            "pause_reason": lane.pause_reason if paused else None,
            "check_credential": lane.credential if paused else None,
            "calls": lane.counters.calls,
            "rate_limited": lane.counters.rate_limited,
            "provider_quota": _provider_quota(lane, now),
        }
    return out


def _provider_quota(lane: Lane, now: float) -> dict[str, Any] | None:
    """What the provider itself last said is left of the key's quota (eBay), if it said."""
    left = lane.budget.quota_left(now)
    resets_at = lane.budget.quota_resets_at
    if left is None or resets_at is None:
        return None
    return {"remaining": left, "resets_at": iso(resets_at)}


def instances_view(rows: list[dict[str, Any]], now: float,
                   this: str | None = None) -> list[dict[str, Any]]:
    """The daemons on the database, oldest first: each row with ``alive`` (its heartbeat is
    fresh) and ``this`` (the daemon answering); ``lanes`` are the providers it runs."""
    fresh_since = now - DEAD_AFTER_S
    return [r | {"alive": r["id"] == this or (parse_iso(r["heartbeat_at"]) or 0) >= fresh_since,
                 "this": r["id"] == this}
            for r in rows]


async def status_view(store: Store, lanes: Mapping[str, Lane], now: float,
                      instance_id: str | None = None,
                      counts: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Any]:
    """/status (and the page's head): ``counts`` as :meth:`Store.job_counts` gives them, or
    counted here."""
    if counts is None:
        counts = await store.job_counts()
    statuses = ("pending", "running", "completed", "failed")
    jobs = {p: {s: counts.get(p, {}).get(s, 0) for s in statuses}
            for p in sorted(set(PROVIDERS) | set(counts))}
    totals = {s: sum(v[s] for v in jobs.values()) for s in statuses}
    return {
        "now": iso(now),
        "budgets": budget_view(lanes, await store.budgets(), now),
        "jobs": {"by_provider": jobs, "total": totals},
        "recent_runs": await store.recent_runs(10),
        "recent_batches": await store.recent_metrics(20),
        "instances": instances_view(await store.instances(), now, instance_id),
        "database": await database_view(store),
        "webhooks": await store.webhook_summary(),
    }


_STATS: dict[tuple[int, str], tuple[float, dict[str, Any]]] = {}
STATS_TTL_S = 30.0


async def database_view(store: Store) -> dict[str, Any]:
    """The database's size (and SQLite's WAL) and rows per table; counted at most every
    ``STATS_TTL_S`` per store, since counting a large table is not free."""
    now = time.monotonic()
    key = (id(store), store.path)
    cached = _STATS.get(key)
    if cached is not None and now - cached[0] < STATS_TTL_S:
        return cached[1]
    stats = await store.database_stats()
    _STATS.clear()  # one store per daemon: no entry outlives its store for long
    _STATS[key] = (now, stats)
    return stats
