"""StockX's catalog as marketd keeps it, and size matching through StockX's own conversions.

Pure functions and frozen dataclasses (no I/O): the client (:mod:`marketd.providers.stockx`)
fetches, this module decides. A job's size is matched through each variant's
``sizeChart.availableConversions`` of the job's system, never a formula (providers.md §5).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from marketd.errors import SizeError, ValidationError
from marketd.models import Job, normalize_size, size_key
from marketd.providers.sizes import options_from_chart, size_value, variant_scale

CATALOG_FORMAT = 1

_PAREN_RE = re.compile(r"\([^)]*\)")
_PREFIX_RE = re.compile(r"^(?:US\s+[MW]|[A-Z]{2})\s+", re.IGNORECASE)


def label_size(label: str) -> str | None:
    """A conversion label to a normalised size: ``"UK 6 (EU 39)"`` -> ``"6"``,
    ``"EU 42 2/3"`` -> ``"42 2/3"``, ``"US W 8.5"`` -> ``"8.5"``; None if it is no size."""
    text = _PREFIX_RE.sub("", _PAREN_RE.sub("", label).strip()).strip()
    try:
        return normalize_size(text)
    except ValidationError:
        return None


@dataclass(frozen=True)
class Variant:
    variant_id: str
    value: str  # variantValue: "10" (US M), "8.5W" (US W), "5.5Y" (US youth)
    conversions: tuple[tuple[str, str], ...]  # (type, label): ("uk", "UK 6 (EU 39)")
    gtins: tuple[tuple[str, str], ...] = ()  # (type, identifier): ("UPC", "195238853624")

    def sizes(self, kind: str) -> list[str]:
        """The normalised sizes of one conversion type (``"uk"`` -> ``["6"]``)."""
        return [s for t, label in self.conversions if t == kind and (s := label_size(label))]

    def describe(self) -> str:
        """How a person tells this variant apart: its EU size, else its US size."""
        for kind in ("eu", "us m", "us w", "us"):
            for t, label in self.conversions:
                if t == kind:
                    return _PAREN_RE.sub("", label).strip()
        return f"US {self.value}"


@dataclass(frozen=True)
class Product:
    product_id: str
    title: str | None
    brand: str | None
    image_url: str | None
    url_key: str | None
    variants: tuple[Variant, ...]

    def cache_data(self) -> dict[str, Any]:
        """What ``market_catalog.data`` holds. Other clients read it (alias.py sizes through
        ``sizes.options_from_stockx``), so keep the shape: ``{"format": 1, "url_key",
        "variants": [{"id", "value", "conversions": [[type, label], ...], "gtins":
        [[type, identifier], ...]}]}`` (eBay searches a lone size by its UPC)."""
        return {"format": CATALOG_FORMAT, "url_key": self.url_key,
                "variants": [{"id": v.variant_id, "value": v.value,
                              "conversions": [list(c) for c in v.conversions],
                              "gtins": [list(g) for g in v.gtins]}
                             for v in self.variants]}

    @classmethod
    def from_cache(cls, entry: Mapping[str, Any]) -> Product | None:
        """A cached catalog entry back to a Product; None if it is missing or malformed."""
        data = entry.get("data")
        if not entry.get("product_id") or not isinstance(data, dict) \
                or data.get("format") != CATALOG_FORMAT:
            return None
        try:
            variants = tuple(
                Variant(str(v["id"]), str(v["value"]),
                        tuple((str(t), str(label)) for t, label in v["conversions"]),
                        tuple((str(t), str(g)) for t, g in v.get("gtins") or ()))
                for v in data["variants"])
        except (KeyError, TypeError, ValueError):
            return None
        return cls(str(entry["product_id"]), entry.get("title"), entry.get("brand"),
                   entry.get("image_url"), data.get("url_key"), variants)


def parse_variant(raw: Any) -> Variant | None:
    """One ProductVariant of ``/variants``; None if it has no id."""
    if not isinstance(raw, dict) or not raw.get("variantId"):
        return None
    chart = as_dict(raw.get("sizeChart"))
    conversions = tuple(
        (str(c["type"]).lower(), str(c["size"]))
        for c in (chart.get("availableConversions") or [])
        if isinstance(c, dict) and c.get("type") and c.get("size"))
    gtins = tuple(
        (str(g.get("type") or ""), str(g["identifier"]))
        for g in (raw.get("gtins") or []) if isinstance(g, dict) and g.get("identifier"))
    return Variant(str(raw["variantId"]), str(raw.get("variantValue") or ""), conversions,
                   gtins)


def style_key(text: str) -> str:
    """A styleId compared loosely: case-insensitive, space and hyphen alike."""
    return re.sub(r"[\s\-]+", "-", text.strip().upper())


def match_style(products: Sequence[Any], sku: str) -> dict[str, Any] | None:
    """The search result whose styleId is exactly the SKU (search results are fuzzy [OBS])."""
    want = style_key(sku)
    for p in products:
        # [INF] a few products list several style ids separated by "/"
        if isinstance(p, dict) and p.get("productId") and isinstance(p.get("styleId"), str) \
                and want in {style_key(s) for s in p["styleId"].split("/")}:
            return p
    return None


def _wanted(job: Job) -> tuple[str, str, str, str]:
    """(conversion type, normalised size, scale name, label) for a job with a size.

    The system names the scale; under US the suffix picks it: bare = US M, W = US W,
    Y/C = US youth/child (type "us", whose labels keep the suffix [?]). Under UK and EU a
    suffix only says whose shoe it is: the number is matched in that system."""
    size = job.size or ""
    suffix = size[-1] if size[-1:] in ("W", "Y", "C") else ""
    number = size[:-1] if suffix else size
    if job.size_system == "EU":
        return "eu", number, "EU", f"EU {size}"
    if job.size_system == "US":
        if suffix == "W":
            return "us w", number, "US W", f"US W {number}"
        if suffix:
            return "us", size, "US", f"US {size}"
        return "us m", size, "US M", f"US M {size}"
    return "uk", number, "UK", f"UK {size}"


def _size_sort(value: str) -> tuple[float, str]:
    m = re.match(r"\d+(?:\.\d+)?", value)
    return (float(m.group()) if m else 1e9, value)


def resolve_size(product: Product, job: Job, sku: str) -> Variant | SizeError:
    """The one variant a job's size names, through StockX's own conversions (never a formula)."""
    variants = product.variants
    if job.size is None:
        if len(variants) == 1:
            return variants[0]
        some = ", ".join(v.describe() for v in variants[:6])
        return SizeError("stockx", f"{sku} has {len(variants)} sizes on stockx, the job none: "
                                   f"enqueue a size ({some}…)")
    kind, value, scale, label = _wanted(job)
    found: dict[str, Variant] = {}
    for v in variants:
        sizes = v.sizes(kind)
        hit = value in sizes or (kind == "us" and value[:-1] in sizes)
        if job.size_system == "US":  # variantValue is StockX's own US size with its suffix [OBS]
            hit = hit or label_size(v.value) == job.size
        if hit:
            found[v.variant_id] = v
    if not found and job.size_system == "US" and job.size[-1:] in ("W", "Y", "C"):
        found = _by_chart(product, job.size)
    if len(found) == 1:
        return next(iter(found.values()))
    if found:
        names = " or ".join(v.describe() for v in found.values())
        hint = "enqueue the EU size" if job.size_system != "EU" else "enqueue the US size"
        return SizeError("stockx", f"{label} is ambiguous on stockx: {names}; {hint}")
    available = sorted({s for v in variants for s in v.sizes(kind)}, key=_size_sort)
    if not available:
        available = [v.value for v in variants if v.value]
        scale = "its"
    listed = ", ".join(available[:12]) + (", …" if len(available) > 12 else "")
    where = f"{scale} sizes: {listed}" if available else "it has no sizes: enqueue none"
    return SizeError("stockx", f"{label} not found on stockx for {sku} ({where})")


def _by_chart(product: Product, size: str) -> dict[str, Variant]:
    """The variants a US size of another scale names by the brand's chart, when StockX's own
    labels lack that scale (a men's item has no youth labels: 5.5Y is US M 5.5 by Nike's
    grade-school chart, providers.md §5), so StockX and Alias price the same shoe."""
    scales = {variant_scale(v.value) for v in product.variants}
    if len(scales) != 1:
        return {}
    gender = {"M": "men", "W": "women", "Y": "youth"}.get(scales.pop())
    options = options_from_chart(product.brand, gender, "US", size) or []
    wanted = {o.us for o in options}
    return {v.variant_id: v for v in product.variants if size_value(v.value) in wanted}


def extra_key(variant: Variant, uk_counts: Counter[str]) -> str | None:
    """The size key another variant's price is stored under: its UK size when that names only
    this variant, else ``EU 44``-style, else ``US 10``-style."""
    uk = variant.sizes("uk")
    if len(uk) == 1 and uk_counts[uk[0]] == 1:
        return uk[0]
    eu = variant.sizes("eu")
    if eu:
        return size_key(eu[0], "EU")
    us = label_size(variant.value)
    return size_key(us, "US") if us else None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
