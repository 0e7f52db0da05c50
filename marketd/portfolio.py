"""The portfolio view: for the items users asked for, one row per SKU and size with each
provider's lowest ask, highest bid and last sale side by side, the best of each marked.

Every price stays in its own currency. Amounts of different currencies are compared only
through ``[fx]`` (``USD = 0.79``: one USD is 0.79 of the home currency, StockX's configured
currency), and a converted amount is always labelled as such; a price whose currency has no
rate is shown but takes no part in choosing the best."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from marketd.clock import parse_iso
from marketd.config import Config
from marketd.models import PROVIDERS, format_minor

FIELDS = ("lowest_ask", "highest_bid", "last_sale")


def home_currency(config: Config) -> str:
    stockx = config.providers.get("stockx")
    currency = str(stockx.options.get("currency", "GBP")) if stockx is not None else "GBP"
    return currency.upper() or "GBP"


def convert(amount: int | None, currency: str, home: str,
            rates: Mapping[str, float]) -> int | None:
    """``amount`` (minor units of ``currency``) in the home currency's minor units, or None
    when there is no amount or no rate."""
    if amount is None:
        return None
    if currency == home:
        return amount
    rate = rates.get(currency)
    return None if rate is None else round(amount * rate)


def portfolio_rows(prices: Iterable[Mapping[str, Any]], config: Config,
                   now: float) -> dict[str, Any]:
    """``{"home", "rates", "rows": [{"sku", "size", "title", "image_url", "cells":
    {provider: cell or None}, "best": {field: provider}}]}``; a cell holds the amounts in
    their own currency, the converted ones (``converted``: true where a rate was used) and
    the price's age."""
    home, rates = home_currency(config), dict(config.fx)
    grouped: dict[tuple[str, str | None], dict[str, Any]] = {}
    for p in prices:
        key = (str(p["sku"]), p["size"] or None)
        row = grouped.setdefault(key, {"sku": key[0], "size": key[1], "title": None,
                                       "image_url": None,
                                       "cells": dict.fromkeys(PROVIDERS), "best": {}})
        row["title"] = row["title"] or p.get("title")
        row["image_url"] = row["image_url"] or p.get("image_url")
        currency = str(p["currency"])
        cell: dict[str, Any] = {"currency": currency,
                                "age_s": now - (parse_iso(p["fetched_at"]) or now),
                                "fetched_at": p["fetched_at"],
                                "converted": currency != home and currency in rates}
        for f in FIELDS:
            amount = p[f]
            cell[f] = format_minor(amount)
            cell[f"{f}_home"] = convert(amount, currency, home, rates)
            cell[f"{f}_home_text"] = format_minor(cell[f"{f}_home"])
        row["cells"][p["provider"]] = cell
    for row in grouped.values():
        cells = {name: c for name, c in row["cells"].items() if c is not None}
        for f, pick in (("lowest_ask", min), ("highest_bid", max), ("last_sale", max)):
            known = {name: c[f"{f}_home"] for name, c in cells.items()
                     if c[f"{f}_home"] is not None}
            if len(known) > 1 or (known and len(cells) == 1):
                row["best"][f] = pick(known, key=lambda n: (known[n], n))
    rows = sorted(grouped.values(), key=lambda r: (r["sku"], r["size"] or ""))
    return {"home": home, "rates": rates, "rows": rows}


Fx = tuple[str, Mapping[str, float]]  # (home currency, rates) where [fx] has rates


def fx_of(config: Config) -> Fx | None:
    """The home currency and the rates, or None when ``[fx]`` has none (no conversion)."""
    return (home_currency(config), dict(config.fx)) if config.fx else None


def fx_view(row: Mapping[str, Any], fx: Fx) -> dict[str, Any]:
    """A price's amounts in the home currency for an export, labelled: ``converted`` true
    where a rate was used; amounts null where its currency has no rate."""
    home, rates = fx
    currency = str(row["currency"])
    return {"currency": home, "converted": currency != home and currency in rates,
            **{f: format_minor(convert(row[f], currency, home, rates)) for f in FIELDS}}
