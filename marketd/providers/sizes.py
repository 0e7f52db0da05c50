"""Shoe-size conversion from real conversion data, without I/O.

A job names a UK, US or EU size; Alias (and others) want a US size in the product's own scale
(US M for a men's item, US W for a women's, US youth for grade school). A US size's W/Y/C suffix
names the scale it is written in, so US 8.5W asked of a men's item is US M 7, never men's 8.5
(providers.md §2, corrected); under UK and EU the number is matched in the product's own chart.
Sizes are converted through data, never a formula (INTERFACE §6), from two sources in order:

1. a StockX catalog entry's per-variant conversions (StockX's own data, providers.md §1/§5):
   :func:`options_from_stockx`;
2. the brand charts below, copied from providers.md §5 (themselves StockX captures):
   :func:`options_from_chart`.

Each source answers with the :class:`SizeOption` s that carry the requested size. :func:`choose`
turns none into a SizeError and two or more into a SizeError naming every EU option (Nike UK 6
is US 6.5 / EU 39 *and* US 7 / EU 40), so the user can enqueue the EU size instead.

Sizes are compared as exact fractions (``"42 2/3"`` is 128/3, ``"10.0"`` equals ``"10"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from marketd.errors import SizeError

SUFFIXES = "WYC"  # US women's, youth (grade school), child

_SIZE_RE = re.compile(r"^\s*(\d{1,2}(?:\.\d+)?)(?:\s*([12])/3)?\s*$")
_SUFFIX_RE = re.compile(rf"^(.*?)\s*([{SUFFIXES}])\s*$", re.IGNORECASE)
# "US M 10", "UK 6 (EU 39)", "EU 42 2/3", "CM 23.5 (US M 4.5)": a prefix of letters, the number,
# and an optional disambiguator in parentheses
_CONVERSION_RE = re.compile(r"^\s*(?:[A-Za-z]+\s+)*?([\d][\d./ ]*?)\s*(?:\(([^)]*)\))?\s*$")


def split_suffix(size: str) -> tuple[str, str]:
    """``"8.5W"`` -> ``("8.5", "W")``; ``"10"`` -> ``("10", "")``."""
    m = _SUFFIX_RE.match(size)
    if m:
        return m.group(1).strip(), m.group(2).upper()
    return size.strip(), ""


def size_value(text: str | float | None) -> Fraction | None:
    """A size as an exact number (suffix ignored): ``"42 2/3"`` -> 128/3; unreadable -> None."""
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return Fraction(text).limit_denominator(12)
    number, _ = split_suffix(text)
    m = _SIZE_RE.match(number)
    if not m:
        return None
    value = Fraction(m.group(1))
    if m.group(2):
        value += Fraction(int(m.group(2)), 3)
    return value


def format_size(value: Fraction) -> str:
    """The inverse of :func:`size_value`: 10 -> ``"10"``, 21/2 -> ``"10.5"``, 128/3 ->
    ``"42 2/3"``."""
    whole, rest = divmod(value, 1)
    if rest == 0:
        return str(whole)
    if rest.denominator == 3:
        return f"{whole} {rest.numerator}/3"
    return f"{float(value):g}"


def parse_conversion(label: str) -> tuple[Fraction | None, str | None]:
    """A StockX conversion label to (size, disambiguator): ``"UK 6 (EU 39)"`` -> (6, ``"EU 39"``),
    ``"US W 11.5"`` -> (23/2, None)."""
    m = _CONVERSION_RE.match(label)
    if not m:
        return None, None
    return size_value(m.group(1).strip()), (m.group(2).strip() if m.group(2) else None)


@dataclass(frozen=True, slots=True)
class SizeOption:
    """One variant that carries the requested size: its US size in the product's own scale
    (what Alias calls ``size``; no suffix) and, when known, its UK and EU labels."""

    us: Fraction
    uk: str | None = None
    eu: str | None = None


# ---- source 1: StockX per-variant conversions ------------------------------------------------

_SYSTEM_TYPES = {"UK": "uk", "EU": "eu"}
# a US scale (suffix letter, "M" for none) -> StockX's conversion type ("us" labels keep the
# suffix: "US 5.5Y")
_PAREN_RE = re.compile(r"\([^)]*\)")
_SCALE_TYPES = {"M": "us m", "W": "us w", "Y": "us", "C": "us"}
SCALE_NAMES = {"M": "men's", "W": "women's", "Y": "youth (grade school)", "C": "child"}


def product_scale(gender: str | None) -> str | None:
    """The US scale a catalog's gender prices in: ``"M"``, ``"W"``, ``"Y"``; None when no
    chart has it (toddler, infant, preschool, or a gender nobody has seen yet). StockX calls
    grade school ``child``, Alias ``youth``."""
    g = (gender or "").strip().lower()
    if g in _MEN:
        return "M"
    if g in ("women", "womens", "woman", "female"):
        return "W"
    if g in _YOUTH:
        return "Y"
    return None


def variant_scale(value: str | None) -> str:
    """The scale of a StockX variantValue: ``"8.5W"`` -> W, ``"5.5Y"`` -> Y, ``"10"`` -> M."""
    return split_suffix(value or "")[1] or "M"


def _scale_size(value: str | None, conversions: Mapping[str, list[str]],
                scale: str) -> Fraction | None:
    """A StockX variant's size in one US scale: its own value when that is the scale, else
    its conversion label of the scale's type (a youth/child label must carry the suffix)."""
    if value is not None and variant_scale(value) == scale:
        return size_value(value)
    for label in conversions.get(_SCALE_TYPES[scale], ()):
        text = re.sub(r"^\s*US\s+[MW]?\s*", "", _PAREN_RE.sub("", label), flags=re.I)
        number, suffix = split_suffix(text)
        if suffix == ("" if scale in "MW" else scale):
            return size_value(number)
    return None


def options_from_stockx(variants: Iterable[Any], system: str, size: str,
                        target: str | None = None) -> list[SizeOption]:
    """The StockX variants that carry ``size`` in ``system`` (UK, EU, or US, where a W/Y/C
    suffix names the scale), as sizes in the US scale ``target`` (M, W or Y; None: each
    variant's own value). A variant with no label in ``target`` is skipped.

    A variant may come in either of two shapes (malformed ones are skipped):

    - the API's ProductVariant: ``{"variantValue": "10", "sizeChart": {"defaultConversion":
      {...}, "availableConversions": [{"size": "UK 9", "type": "uk"}, ...]}}``;
    - the StockX client's cache: ``{"id", "value": "10", "conversions": [["uk", "UK 9"], ...]}``.

    The US size is the variant value without its W/Y suffix (providers.md §5)."""
    want = size_value(size)
    kind = _SYSTEM_TYPES.get(system)
    scale = (split_suffix(size)[1] or "M") if system == "US" else None
    if want is None or (kind is None and scale is None):
        return []
    found: list[SizeOption] = []
    for variant in variants:
        value, conversions = _stockx_variant(variant)
        by_type: dict[str, list[str]] = {}
        labels: dict[str, tuple[Fraction | None, str | None]] = {}
        for conv_type, label in conversions:
            by_type.setdefault(conv_type, []).append(label)
            labels.setdefault(conv_type, parse_conversion(label))
        if scale is not None:
            if _scale_size(value, by_type, scale) != want:
                continue
            note = None
        else:
            assert kind is not None
            if labels.get(kind, (None, None))[0] != want:
                continue
            note = labels.get(kind, (None, None))[1]
        us = size_value(value) if target is None else _scale_size(value, by_type, target)
        if us is None:
            continue
        uk, eu = labels.get("uk", (None, None))[0], labels.get("eu", (None, None))[0]
        if eu is None and note and note.upper().startswith("EU"):
            eu = parse_conversion(note)[0]  # "UK 6 (EU 39)" names its EU size
        found.append(SizeOption(us=us, uk=_fmt(uk), eu=_fmt(eu)))
    return _dedupe(found)


def _stockx_variant(variant: Any) -> tuple[str | None, list[tuple[str, str]]]:
    """(variant value, [(conversion type, label)]) of either variant shape."""
    if not isinstance(variant, Mapping):
        return None, []
    conversions: list[tuple[str, str]] = []
    if "conversions" in variant:  # the StockX client's cache
        for pair in variant.get("conversions") or ():
            if isinstance(pair, Sequence) and len(pair) == 2 \
                    and all(isinstance(x, str) for x in pair):
                conversions.append((pair[0].lower(), pair[1]))
        value = variant.get("value")
        return (value if isinstance(value, str) else None), conversions
    chart = variant.get("sizeChart")
    chart = chart if isinstance(chart, Mapping) else {}
    for conv in chart.get("availableConversions") or ():
        if isinstance(conv, Mapping) and isinstance(conv.get("size"), str) \
                and isinstance(conv.get("type"), str):
            conversions.append((conv["type"].lower(), conv["size"]))
    value = variant.get("variantValue")
    if not isinstance(value, str) or not value:
        default = chart.get("defaultConversion")
        value = default.get("size") if isinstance(default, Mapping) else None
    return (value if isinstance(value, str) else None), conversions


# ---- source 2: brand charts (providers.md §5) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    us_m: str
    uk: str
    eu: str | None
    us_w: str | None


def _rows(table: str) -> tuple[_Row, ...]:
    """Rows of ``US M | UK | EU | US W`` text, ``-`` for unknown."""
    out = []
    for line in table.strip().splitlines():
        us_m, uk, eu, us_w = (c.strip() for c in line.split("|"))
        out.append(_Row(us_m, uk, None if eu == "-" else eu, None if us_w == "-" else us_w))
    return tuple(out)


# Nike/Jordan men's, verbatim from StockX's per-variant data for DD1391-100 (providers.md §5:
# archvd's captures of StockX /v2/catalog/products/{id}/variants). Its US W column is Nike's
# US W = US M + 1.5 and its men's rows up to US 7 double as Nike grade school (3.5Y-7Y match
# men's UK/EU, §5). Women's UK is NOT this UK column: see NIKE_WOMEN.
NIKE = _rows("""
3.5 | 3 | 35.5 | 5
4 | 3.5 | 36 | 5.5
4.5 | 4 | 36.5 | 6
5 | 4.5 | 37.5 | 6.5
5.5 | 5 | 38 | 7
6 | 5.5 | 38.5 | 7.5
6.5 | 6 | 39 | 8
7 | 6 | 40 | 8.5
7.5 | 6.5 | 40.5 | 9
8 | 7 | 41 | 9.5
8.5 | 7.5 | 42 | 10
9 | 8 | 42.5 | 10.5
9.5 | 8.5 | 43 | 11
10 | 9 | 44 | 11.5
10.5 | 9.5 | 44.5 | 12
11 | 10 | 45 | 12.5
11.5 | 10.5 | 45.5 | 13
12 | 11 | 46 | 13.5
12.5 | 11.5 | 47 | 14
13 | 12 | 47.5 | 14.5
14 | 13 | 48.5 | 15.5
15 | 14 | 49.5 | 16.5
""")

# Nike/Jordan women's (providers.md §5 [OBS], StockX's women's variants in archvd's logs, e.g.
# 8.5W = UK 6 = EU 40): US W = US M + 1.5, UK = US W - 2.5, EU as the men's row of the same
# foot. Reusing the men's UK column here put women's UK half a size off below US W 8.5 (UK 5.5
# read as 7.5W instead of 8W); every row below follows UK = US W - 2.5.
NIKE_WOMEN = _rows("""
3.5 | 2.5 | 35.5 | 5
4 | 3 | 36 | 5.5
4.5 | 3.5 | 36.5 | 6
5 | 4 | 37.5 | 6.5
5.5 | 4.5 | 38 | 7
6 | 5 | 38.5 | 7.5
6.5 | 5.5 | 39 | 8
7 | 6 | 40 | 8.5
7.5 | 6.5 | 40.5 | 9
8 | 7 | 41 | 9.5
8.5 | 7.5 | 42 | 10
9 | 8 | 42.5 | 10.5
9.5 | 8.5 | 43 | 11
10 | 9 | 44 | 11.5
10.5 | 9.5 | 44.5 | 12
11 | 10 | 45 | 12.5
11.5 | 10.5 | 45.5 | 13
12 | 11 | 46 | 13.5
""")

# adidas (StockX Samba/Handball data, §5): UK = US M - 0.5, US W = US M + 1, EU in thirds.
# Rows US M 7-12 are the §5 examples; the others continue adidas's published chart (each half
# size is 2/3 of an EU size), corroborated by solereview.com [3P].
ADIDAS = _rows("""
4 | 3.5 | 36 | 5
4.5 | 4 | 36 2/3 | 5.5
5 | 4.5 | 37 1/3 | 6
5.5 | 5 | 38 | 6.5
6 | 5.5 | 38 2/3 | 7
6.5 | 6 | 39 1/3 | 7.5
7 | 6.5 | 40 | 8
7.5 | 7 | 40 2/3 | 8.5
8 | 7.5 | 41 1/3 | 9
8.5 | 8 | 42 | 9.5
9 | 8.5 | 42 2/3 | 10
9.5 | 9 | 43 1/3 | 10.5
10 | 9.5 | 44 | 11
10.5 | 10 | 44 2/3 | 11.5
11 | 10.5 | 45 1/3 | 12
11.5 | 11 | 46 | 12.5
12 | 11.5 | 46 2/3 | 13
12.5 | 12 | 47 1/3 | 13.5
13 | 12.5 | 48 | 14
""")

# ASICS men's (§5): UK = US - 1; EU is known only for US 9, 10 and 11. No women's data.
ASICS = _rows("""
6 | 5 | - | -
6.5 | 5.5 | - | -
7 | 6 | - | -
7.5 | 6.5 | - | -
8 | 7 | - | -
8.5 | 7.5 | - | -
9 | 8 | 42.5 | -
9.5 | 8.5 | - | -
10 | 9 | 44 | -
10.5 | 9.5 | - | -
11 | 10 | 45 | -
11.5 | 10.5 | - | -
12 | 11 | - | -
13 | 12 | - | -
""")

# New Balance men's (§5, from a third-party table, unverified): UK = US - 0.5. No EU data.
NEW_BALANCE = _rows("""
6 | 5.5 | - | -
6.5 | 6 | - | -
7 | 6.5 | - | -
7.5 | 7 | - | -
8 | 7.5 | - | -
8.5 | 8 | - | -
9 | 8.5 | - | -
9.5 | 9 | - | -
10 | 9.5 | - | -
10.5 | 10 | - | -
11 | 10.5 | - | -
11.5 | 11 | - | -
12 | 11.5 | - | -
13 | 12.5 | - | -
""")

_MEN = ("men", "mens", "unisex", "")
_YOUTH = ("youth", "kids", "grade school", "gs", "child")


def chart_for(brand: str | None, gender: str | None = None) -> tuple[_Row, ...] | None:
    """The chart of a brand name as catalogs write it (``"Jordan"``, ``"adidas Originals"``),
    women's where the brand has its own women's chart."""
    b = (brand or "").strip().lower()
    if "nike" in b or "jordan" in b:
        return NIKE_WOMEN if product_scale(gender) == "W" else NIKE
    if "adidas" in b or "yeezy" in b:
        return ADIDAS
    if "asics" in b:
        return ASICS
    if "new balance" in b:
        return NEW_BALANCE
    return None


def _column(rows: tuple[_Row, ...], scale: str) -> tuple[tuple[_Row, ...], str] | None:
    """The rows and the column of one US scale in a chart; None where the chart lacks it
    (grade school is known for Nike only, up to 7Y; child sizes for no brand)."""
    if scale == "M":
        return rows, "us_m"
    if scale == "W":
        return (rows, "us_w") if any(r.us_w for r in rows) else None
    if scale == "Y" and rows in (NIKE, NIKE_WOMEN):
        return tuple(r for r in NIKE if Fraction(r.us_m) <= 7), "us_m"
    return None


def options_from_chart(brand: str | None, gender: str | None, system: str,
                       size: str) -> list[SizeOption] | None:
    """The chart rows carrying ``size`` in ``system`` (UK or EU in the product's own chart; US
    in the scale its suffix names), as US sizes in the scale of ``gender`` (men's US M,
    women's US W, Nike grade school). None: no chart for that brand, gender or scale, so
    nothing can be said."""
    rows = chart_for(brand, gender)
    want = size_value(size)
    target = product_scale(gender)
    if rows is None or want is None or target is None:
        return None
    out = _column(rows, target)
    if out is None:
        return None
    rows, column = out
    if system == "US":
        scale = split_suffix(size)[1] or "M"
        source = _column(rows, scale)
        if source is None:
            return None
        match_column = source[1]
        if scale == "Y":  # grade school sizes stop at 7Y
            rows = tuple(r for r in rows if Fraction(r.us_m) <= 7)
    elif system in _SYSTEM_TYPES:
        match_column = system.lower()
    else:
        return None
    found = []
    for row in rows:
        us = getattr(row, column)
        label = getattr(row, match_column)
        if us is not None and label is not None and size_value(label) == want:
            found.append(SizeOption(us=Fraction(us), uk=row.uk, eu=row.eu))
    return _dedupe(found)


# ---- choosing ----------------------------------------------------------------------------------


def choose(options: Sequence[SizeOption], *, provider: str, system: str,
           size: str) -> SizeOption:
    """The one option, or a SizeError: none matched, or several did (naming each EU size)."""
    if not options:
        raise SizeError(provider, f"{system} {size} matches no size of this product")
    if len(options) > 1:
        named = " and ".join(
            f"EU {o.eu} (US {format_size(o.us)})" if o.eu else f"US {format_size(o.us)}"
            for o in options
        )
        raise SizeError(
            provider,
            f"{system} {size} is ambiguous: it matches {named}; enqueue the EU size to choose",
        )
    return options[0]


def _fmt(value: Fraction | None) -> str | None:
    return None if value is None else format_size(value)


def _dedupe(options: Iterable[SizeOption]) -> list[SizeOption]:
    seen: dict[Fraction, SizeOption] = {}
    for o in options:
        seen.setdefault(o.us, o)
    return list(seen.values())
