"""Size charts, as StockX's per-variant data shows them (providers.md §5).

One :class:`SizeRow` per variant: the StockX ``variantValue`` with its scale suffix, the number
Alias takes as ``size``, and the prefixed ``availableConversions`` labels. A label that two
variants share gets a disambiguator the way StockX writes it: Nike UK 6 becomes
``"UK 6 (EU 39)"`` and ``"UK 6 (EU 40)"``, a shared centimetre size ``"CM 23.5 (US M 4.5)"``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class SizeRow:
    value: str  # StockX variantValue: "10", "8.5W", "5.5Y"
    number: float  # the size in the product's own US scale: Alias `size`
    scale: str  # StockX defaultConversion.type: "us m", "us w" or "us"
    us_m: float
    us_w: float
    uk: float
    eu: str  # "44", "42 2/3"
    cm: float
    conversions: tuple[tuple[str, str], ...] = ()  # (label, type), StockX availableConversions


def num(x: float) -> str:
    """10.0 -> "10", 10.5 -> "10.5"."""
    return str(int(x)) if x == int(x) else f"{x:g}"


# Nike/Jordan men's, from StockX's Dunk Low DD1391-100 variants: US M -> (UK, EU, CM)
_NIKE_M: dict[float, tuple[float, float, float]] = {
    3.5: (3, 35.5, 22.5), 4: (3.5, 36, 23), 4.5: (4, 36.5, 23.5), 5: (4.5, 37.5, 23.5),
    5.5: (5, 38, 24), 6: (5.5, 38.5, 24), 6.5: (6, 39, 24.5), 7: (6, 40, 25),
    7.5: (6.5, 40.5, 25.5), 8: (7, 41, 26), 8.5: (7.5, 42, 26.5), 9: (8, 42.5, 27),
    9.5: (8.5, 43, 27.5), 10: (9, 44, 28), 10.5: (9.5, 44.5, 28.5), 11: (10, 45, 29),
    11.5: (10.5, 45.5, 29.5), 12: (11, 46, 30), 12.5: (11.5, 47, 30.5), 13: (12, 47.5, 31),
    14: (13, 48.5, 32), 15: (14, 49.5, 33),
}  # fmt: skip
# New Balance men's EU by US M (UK = US - 0.5)
_NB_EU: dict[float, float] = {
    4: 36, 4.5: 37, 5: 37.5, 5.5: 38, 6: 38.5, 6.5: 39.5, 7: 40, 7.5: 40.5, 8: 41.5, 8.5: 42,
    9: 42.5, 9.5: 43, 10: 44, 10.5: 44.5, 11: 45, 11.5: 45.5, 12: 46.5, 12.5: 47, 13: 47.5,
    14: 49,
}  # fmt: skip
# ASICS men's EU by US M (UK = US - 1)
_ASICS_EU: dict[float, float] = {
    6: 39, 6.5: 39.5, 7: 40, 7.5: 40.5, 8: 41.5, 8.5: 42, 9: 42.5, 9.5: 43.5, 10: 44,
    10.5: 44.5, 11: 45, 11.5: 46, 12: 46.5, 12.5: 47, 13: 48, 14: 49.5,
}  # fmt: skip


def _halves(lo: float, hi: float, *, skip: tuple[float, ...] = ()) -> list[float]:
    return [lo + i / 2 for i in range(int((hi - lo) * 2) + 1) if lo + i / 2 not in skip]


def _adidas_eu(uk: float) -> str:
    thirds = 108 + int((uk - 3.5) * 4)  # UK 3.5 = EU 36; every half UK size is 2/3 EU
    whole, rest = divmod(thirds, 3)
    return f"{whole} {rest}/3" if rest else str(whole)


def _row(value: str, number: float, scale: str, us_m: float, us_w: float, uk: float,
         eu: float | str, cm: float) -> SizeRow:
    return SizeRow(value, number, scale, us_m, us_w, uk, eu if isinstance(eu, str) else num(eu),
                   cm)


def _nike_m(lo: float, hi: float) -> list[SizeRow]:
    return [_row(num(us), us, "us m", us, us + 1.5, *_NIKE_M[us])
            for us in _NIKE_M if lo <= us <= hi]


def _nike_w(lo: float, hi: float) -> list[SizeRow]:
    # US W = US M + 1.5, UK = US W - 2.5 (8.5W = UK 6 = EU 40); EU follows the men's chart
    return [_row(f"{num(w)}W", w, "us w", w - 1.5, w, w - 2.5, _NIKE_M[w - 1.5][1], w + 17)
            for w in _halves(lo, hi)]


def _nike_gs(lo: float, hi: float) -> list[SizeRow]:
    # 3.5Y-7Y are the men's UK/EU sizes (7Y = UK 6 (EU 40))
    return [_row(f"{num(y)}Y", y, "us", y, y + 1.5, *_NIKE_M[y]) for y in _halves(lo, hi)]


def _adidas(lo: float, hi: float) -> list[SizeRow]:
    # UK = US M - 0.5, US W = US M + 1, EU in thirds
    return [_row(num(us), us, "us m", us, us + 1, us - 0.5, _adidas_eu(us - 0.5), us + 18)
            for us in _halves(lo, hi, skip=(13.5,))]


def _adidas_whole(lo: float, hi: float) -> list[SizeRow]:
    """Slides come in whole sizes only."""
    return [row for row in _adidas(lo, hi) if row.us_m == int(row.us_m)]


def _new_balance(lo: float, hi: float) -> list[SizeRow]:
    return [_row(num(us), us, "us m", us, us + 1.5, us - 0.5, eu, us + 18)
            for us, eu in _NB_EU.items() if lo <= us <= hi]


def _asics(lo: float, hi: float) -> list[SizeRow]:
    return [_row(num(us), us, "us m", us, us + 1.5, us - 1, eu, us + 18)
            for us, eu in _ASICS_EU.items() if lo <= us <= hi]


CHARTS: dict[str, Callable[[float, float], list[SizeRow]]] = {
    "nike_m": _nike_m,
    "nike_w": _nike_w,
    "nike_gs": _nike_gs,
    "adidas": _adidas,
    "adidas_whole": _adidas_whole,
    "new_balance": _new_balance,
    "asics": _asics,
}


def _labels(row: SizeRow) -> list[tuple[str, str]]:
    own = {"us m": f"US M {num(row.us_m)}", "us w": f"US W {num(row.us_w)}",
           "us": f"US {row.value}"}
    labels = [(own[row.scale], row.scale)]
    if row.scale != "us m":
        labels.append((f"US M {num(row.us_m)}", "us m"))
    labels += [(f"UK {num(row.uk)}", "uk"), (f"CM {num(row.cm)}", "cm"),
               (f"KR {num(row.cm * 10)}", "kr"), (f"EU {row.eu}", "eu")]
    if row.scale != "us w":
        labels.append((f"US W {num(row.us_w)}", "us w"))
    return labels


def chart(name: str, lo: float, hi: float) -> tuple[SizeRow, ...]:
    """The sizes ``lo``..``hi`` (in the chart's own scale) with their conversion labels."""
    rows = CHARTS[name](lo, hi)
    labelled = [_labels(row) for row in rows]
    shared = Counter(label for labels in labelled for label in labels)
    out = []
    for row, labels in zip(rows, labelled, strict=True):
        conversions = []
        for label, kind in labels:
            if shared[(label, kind)] > 1:
                label += f" (EU {row.eu})" if kind == "uk" else f" (US M {num(row.us_m)})"
            conversions.append((label, kind))
        out.append(replace(row, conversions=tuple(conversions)))
    return tuple(out)
