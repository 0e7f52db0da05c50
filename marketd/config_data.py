"""The configuration of what marketd keeps and sends out: ``[retention]``, ``[webhooks]`` and
``[fx]``, and the path it is served under (``server.base_path``). :mod:`marketd.config` parses
these with the others (same rules, same one-problem-per-key reports); what is particular to
them is here."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

Problem = Callable[[str, str], None]

WEBHOOK_SECRET_ENV = "MARKETD_WEBHOOK_SECRET"  # noqa: S105 - a variable name

# the first path segment of each of marketd's own routes (marketd.web.create_app; a test keeps
# them equal): a base_path starting with one would shadow that route, or be shadowed by it
ROUTE_ROOTS = frozenset({"enqueue", "trigger", "api", "reset-failed", "status", "jobs", "prices",
                         "prices.csv", "healthz", "openapi.json", "signin", "signout", "actions",
                         "metrics"})


def check_base_path(value: str) -> tuple[str, str | None]:
    """``server.base_path`` as routes and links use it ("" or "/a/b", no trailing slash), and
    the problem with ``value`` if it is not one (the default, "", then)."""
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)*/?", value):
        return "", f"must be a path such as \"/marketd\", not {value!r}"
    path = value.rstrip("/")
    first = path.split("/")[1] if path else ""
    if first in ROUTE_ROOTS:
        return "", f"{value!r} starts with /{first}, one of marketd's own routes: choose another"
    return path, None


@dataclass(frozen=True)
class RetentionConfig:
    """Days to keep each kind of row (0: forever); pruned daily in small transactions."""

    jobs_days: float = 30.0        # completed and failed jobs, after they finished
    history_days: float = 365.0    # price history points (each key keeps its newest)
    runs_days: float = 30.0        # scheduler runs (those whose batches' metrics are gone)
    metrics_days: float = 30.0     # per-batch metrics
    webhooks_days: float = 7.0     # price-change deliveries delivered or given up
    batch_rows: int = 2000         # rows deleted per transaction
    every_hours: float = 24.0      # how often the daemon prunes (0: only `marketd prune`)


@dataclass(frozen=True)
class WebhooksConfig:
    price_changed_url: str = ""    # POST price_changed events here (empty: none)
    secret: str = ""               # HMAC-SHA256 key of X-Marketd-Signature (or the env)
    min_change_percent: float = 0.0  # a change smaller than this (of every amount) is quiet
    timeout_s: float = 10.0
    retry_base_seconds: float = 5.0    # backoff: base * 2^attempt, with jitter, capped
    retry_max_seconds: float = 3600.0
    give_up_hours: float = 72.0    # a delivery failing this long is given up (shown)


DATA_SECTIONS: dict[str, type] = {"retention": RetentionConfig, "webhooks": WebhooksConfig}
DATA_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "retention.jobs_days": (0, 36500),
    "retention.history_days": (0, 36500),
    "retention.runs_days": (0, 36500),
    "retention.metrics_days": (0, 36500),
    "retention.webhooks_days": (0, 36500),
    "retention.batch_rows": (1, 1_000_000),
    "retention.every_hours": (0, 8760),
    "webhooks.min_change_percent": (0, 100),
    "webhooks.timeout_s": (0.1, 600),
    "webhooks.retry_base_seconds": (0.1, 86400),
    "webhooks.retry_max_seconds": (0.1, 604800),
    "webhooks.give_up_hours": (0, 8760),
}
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def parse_fx(raw: Any, problem: Problem) -> dict[str, float]:
    """``[fx]``: ``CUR = rate``, how many of the home currency one unit of CUR is worth
    (``USD = 0.79`` when the home currency is GBP). The home currency is StockX's configured
    currency; its own rate is 1 whether given or not."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problem("fx", "must be a table of currency = rate, e.g. USD = 0.79")
        return {}
    out: dict[str, float] = {}
    for key, value in raw.items():
        if not _CURRENCY.match(str(key)):
            problem(f"fx.{key}", "must be a three-letter ISO 4217 code in capitals, e.g. USD")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or value <= 0:
            problem(f"fx.{key}", f"must be a positive number (the home currency per {key}), "
                                 f"not {value!r}")
            continue
        out[str(key)] = float(value)
    return out


def check_data(sections: dict[str, Any], env: Mapping[str, str], problem: Problem) -> None:
    """Cross-key rules and the environment's secret, in place."""
    hooks: WebhooksConfig = sections["webhooks"]
    if env.get(WEBHOOK_SECRET_ENV):
        hooks = sections["webhooks"] = replace(hooks, secret=env[WEBHOOK_SECRET_ENV])
    url = hooks.price_changed_url
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problem("webhooks.price_changed_url",
                    "must be an http(s) URL such as https://app.example.com/hooks/marketd")
        if not hooks.secret:
            problem("webhooks.secret", f"must be set (or {WEBHOOK_SECRET_ENV}) when "
                    "price_changed_url is: receivers verify X-Marketd-Signature with it")
    if hooks.retry_max_seconds < hooks.retry_base_seconds:
        problem("webhooks.retry_max_seconds", "must not be less than retry_base_seconds")
