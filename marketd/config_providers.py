"""Each provider's default settings and what it documents of its own limits (config.py loads
them; check-config compares a configuration with them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from marketd.ratelimit import Limit, parse_limit

# Common provider keys and their defaults, then each provider's own.
PROVIDER_COMMON: dict[str, dict[str, Any]] = {
    # StockX documents 1 request/second and 25,000/day (providers.md §1); 100/hour is the
    # user's own plan. All hold at once, so a first look-up's three calls never meet a 429.
    "stockx": {"limits": ["1/second", "25000/day", "100/hour"], "delay_ms": 0.0,
               "timeout_s": 30.0,
               "base_url": "https://api.stockx.com"},
    "alias": {"limits": ["200/hour"], "delay_ms": 0.0, "timeout_s": 60.0,
              "base_url": "https://api.alias.org"},
    "ebay": {"limits": ["150/hour"], "delay_ms": 0.0, "timeout_s": 30.0,
             "base_url": "https://api.ebay.com"},
}
PROVIDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "stockx": {"auth_url": "https://accounts.stockx.com", "currency": "GBP", "api_key": "",
               "client_id": "", "client_secret": "", "refresh_token": ""},
    "alias": {"region": "UK", "consigned": "any", "api_token": ""},
    "ebay": {"marketplace": "EBAY_GB", "category_ids": "", "size_aspect": "auto",
             "delivery_country": "", "delivery_postcode": "", "client_id": "",
             "client_secret": ""},
}
# What each provider itself documents (providers.md §1-§3), for check-config: a configured
# limit list that lacks one of these will meet 429s the daemon could have avoided.
DOCUMENTED_LIMITS: dict[str, tuple[str, ...]] = {
    "stockx": ("1/second", "25000/day"),  # [3P] quoting developer.stockx.com api-introduction
    "alias": (),  # no numeric limit is published [DOC]
    "ebay": (),  # Browse's 5,000/day comes from getRateLimits at run time [DOC]
}
LIMITS_SOURCE: dict[str, str] = {
    "stockx": "StockX documents 1/second and 25000/day; the hourly limit is your plan",
    "alias": "Alias publishes no limit; this is your own pace",
    "ebay": "eBay Browse allows 5000/day by default, read from getRateLimits hourly",
}


def missing_documented_limits(name: str, limits: Sequence[Limit]) -> list[str]:
    """The provider's documented limits that ``limits`` does not hold at least as strictly
    (a limit of the same window with a count no higher)."""
    missing = []
    for text in DOCUMENTED_LIMITS.get(name, ()):
        documented = parse_limit(text)
        if not any(lim.window_s == documented.window_s and lim.count <= documented.count
                   for lim in limits):
            missing.append(text)
    return missing
