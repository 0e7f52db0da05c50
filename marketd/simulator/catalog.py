"""The simulated sneaker catalog and its prices: deterministic, the same in every run.

Forty real-looking products (Nike, Jordan, adidas/Yeezy, New Balance, ASICS; men's, women's and
grade-school size charts). Ids are derived from the SKU: the StockX product id is
:func:`product_id` (uuid5), variant ids are uuid5 of the product id and the variant value, the
Alias ``catalog_id`` is a slug.

Prices are a pure function of ``(seed, sku, size, hour)``: a smooth random walk (value noise with
knots every 6 and 48 hours) around each product's market level, in USD. Two sizes per product
show the empty markets real data has: the smallest size has neither ask nor bid, the largest
has bids but no ask. One product, :data:`NO_MARKET_SKU`, has no market at all.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from functools import cache

from marketd.simulator.sizes import SizeRow, chart

NO_MARKET_SKU = "IB9009-001"

# fixed conversion from the USD base prices (units of currency per USD)
FX_PER_USD: dict[str, float] = {
    "USD": 1.0, "GBP": 0.79, "EUR": 0.92, "AUD": 1.52, "CAD": 1.36, "CHF": 0.88, "HKD": 7.8,
    "JPY": 150.0, "KRW": 1330.0, "MXN": 17.0, "NZD": 1.64, "SGD": 1.34,
}  # fmt: skip

_NAMESPACE = uuid.UUID("9b0f6d3e-5c1a-5b7e-8f44-6d61726b6574")  # "market" in the tail

# sku, brand, StockX title, family, nickname, colorway, chart, lo, hi, retail USD, release,
# market level USD (0 = no market)
_PRODUCTS: tuple[tuple[str, str, str, str, str, str, str, float, float, int, str, int], ...] = (
    ("DD1391-100", "Nike", "Nike Dunk Low Retro White Black Panda", "Nike Dunk Low", "Panda",
     "White/Black", "nike_m", 3.5, 15, 115, "2021-03-10", 120),
    ("DD1391-101", "Nike", "Nike Dunk Low Retro White Pure Platinum", "Nike Dunk Low",
     "Pure Platinum", "White/Pure Platinum", "nike_m", 3.5, 15, 115, "2022-06-01", 105),
    ("DD1390-100", "Nike", "Nike Dunk Low Retro PRM Photon Dust", "Nike Dunk Low",
     "Photon Dust", "White/Photon Dust", "nike_m", 3.5, 15, 120, "2023-02-10", 110),
    ("DD1399-105", "Nike", "Nike Dunk High Retro White Black Panda (2021)", "Nike Dunk High",
     "Panda", "White/Black", "nike_m", 3.5, 15, 125, "2021-06-10", 115),
    ("FD0860-001", "Nike", "Nike SB Dunk Low Jarritos", "Nike SB Dunk Low", "Jarritos",
     "Phantom/Safety Orange", "nike_m", 4, 14, 120, "2023-04-13", 310),
    ("CW2288-111", "Nike", "Nike Air Force 1 Low '07 White", "Nike Air Force 1 Low",
     "Triple White", "White/White", "nike_m", 3.5, 15, 110, "2019-01-01", 105),
    ("884421-001", "Nike", "Nike Air Max 97 OG Silver Bullet (2017)", "Nike Air Max 97",
     "Silver Bullet", "Metallic Silver/Varsity Red", "nike_m", 4, 14, 160, "2017-04-13", 210),
    ("DQ3989-100", "Nike", "Nike Air Max 1 '86 OG Big Bubble Sport Red", "Nike Air Max 1",
     "Big Bubble Red", "White/University Red", "nike_m", 4, 14, 150, "2023-03-26", 165),
    ("555088-134", "Jordan", "Jordan 1 Retro High OG University Blue", "Jordan 1 Retro High OG",
     "University Blue", "White/University Blue/Black", "nike_m", 3.5, 15, 170, "2021-03-06",
     260),
    ("555088-035", "Jordan", "Jordan 1 Retro High OG Shadow 2.0", "Jordan 1 Retro High OG",
     "Shadow 2.0", "Black/White/Light Smoke Grey", "nike_m", 3.5, 15, 170, "2021-05-15", 230),
    ("DZ5485-612", "Jordan", "Jordan 1 Retro High OG Chicago Lost and Found",
     "Jordan 1 Retro High OG", "Lost and Found", "Varsity Red/Black/Sail", "nike_m", 3.5, 15,
     180, "2022-11-19", 380),
    ("DM7866-162", "Jordan", "Jordan 1 Retro Low OG SP Travis Scott Reverse Mocha",
     "Jordan 1 Low", "Travis Scott Reverse Mocha", "Sail/University Red/Ridgerock", "nike_m", 4,
     14, 150, "2022-07-21", 900),
    ("DH6927-111", "Jordan", "Jordan 4 Retro Military Black", "Jordan 4 Retro", "Military Black",
     "White/Black/Neutral Grey", "nike_m", 3.5, 15, 190, "2022-05-21", 280),
    ("840606-192", "Jordan", "Jordan 4 Retro White Cement (2016)", "Jordan 4 Retro",
     "White Cement", "White/Fire Red/Tech Grey", "nike_m", 4, 14, 190, "2016-02-13", 350),
    ("CT8012-005", "Jordan", "Jordan 11 Retro Cool Grey (2021)", "Jordan 11 Retro", "Cool Grey",
     "Medium Grey/White/Cool Grey", "nike_m", 3.5, 15, 225, "2021-12-11", 250),
    ("554724-069", "Jordan", "Jordan 1 Mid Chicago Black Toe", "Jordan 1 Mid",
     "Chicago Black Toe", "Black/Gym Red/White", "nike_m", 4, 14, 125, "2020-09-01", 180),
    ("DD1503-101", "Nike", "Nike Dunk Low White Black (W)", "Nike Dunk Low", "Panda",
     "White/Black", "nike_w", 5, 12, 110, "2021-03-10", 125),
    ("DC0774-101", "Jordan", "Jordan 1 Low White Black (W)", "Jordan 1 Low", "Panda",
     "White/Black", "nike_w", 5, 12, 100, "2021-08-01", 130),
    ("DD1873-102", "Nike", "Nike Dunk Low Next Nature White Black (W)",
     "Nike Dunk Low Next Nature", "Panda", "White/Black", "nike_w", 5, 12, 110, "2022-04-01",
     105),
    ("CW1590-100", "Nike", "Nike Dunk Low Retro White Black (GS)", "Nike Dunk Low", "Panda",
     "White/Black", "nike_gs", 3.5, 7, 85, "2021-03-10", 95),
    ("575441-134", "Jordan", "Jordan 1 Retro High OG University Blue (GS)",
     "Jordan 1 Retro High OG", "University Blue", "White/University Blue/Black", "nike_gs", 3.5,
     7, 140, "2021-03-06", 190),
    ("B75806", "adidas", "adidas Samba OG Cloud White Core Black", "adidas Samba OG",
     "Cloud White", "Cloud White/Core Black/Clear Granite", "adidas", 4, 14, 100, "2018-01-01",
     105),
    ("B75807", "adidas", "adidas Samba OG Core Black Gum", "adidas Samba OG", "Core Black",
     "Core Black/Cloud White/Gum", "adidas", 4, 14, 100, "2018-01-01", 100),
    ("IE0580", "adidas", "adidas Samba Wales Bonner Cream White", "adidas Samba",
     "Wales Bonner Cream White", "Cream White/Core Black/Green", "adidas", 4, 13, 180,
     "2023-06-01", 300),
    ("BB5478", "adidas", "adidas Gazelle Core Black White", "adidas Gazelle", "Core Black",
     "Core Black/White/Gold Metallic", "adidas", 4, 14, 100, "2017-05-01", 95),
    ("BD7633", "adidas", "adidas Handball Spezial Navy Gum", "adidas Handball Spezial",
     "Navy Gum", "Collegiate Navy/Clear Sky/Gum", "adidas", 4, 14, 110, "2018-03-01", 115),
    ("CP9654", "adidas", "adidas Yeezy Boost 350 V2 Zebra", "adidas Yeezy Boost 350 V2", "Zebra",
     "White/Core Black/Red", "adidas", 4, 14, 220, "2017-02-25", 260),
    ("HQ6316", "adidas", "adidas Yeezy Boost 350 V2 Bone", "adidas Yeezy Boost 350 V2", "Bone",
     "Pure Oat/Pure Oat/Pure Oat", "adidas", 4, 14, 230, "2022-03-22", 240),
    ("HQ4540", "adidas", "adidas Yeezy Boost 350 V2 Onyx", "adidas Yeezy Boost 350 V2", "Onyx",
     "Onyx/Onyx/Onyx", "adidas", 4, 14, 230, "2022-04-04", 230),
    ("HQ6448", "adidas", "adidas Yeezy Slide Onyx", "adidas Yeezy Slide", "Onyx",
     "Onyx/Onyx/Onyx", "adidas_whole", 4, 14, 70, "2022-03-07", 110),
    ("B75571", "adidas", "adidas Yeezy Boost 700 Wave Runner", "adidas Yeezy Boost 700",
     "Wave Runner", "Solid Grey/Chalk White/Core Black", "adidas", 4, 14, 300, "2017-11-01",
     330),
    ("BB550WT1", "New Balance", "New Balance 550 White Green", "New Balance 550", "White Green",
     "White/Green", "new_balance", 4, 14, 110, "2020-10-01", 120),
    ("BB550HA1", "New Balance", "New Balance 550 White Grey", "New Balance 550", "White Grey",
     "White/Grey", "new_balance", 4, 14, 110, "2021-03-01", 110),
    ("M2002RDA", "New Balance", "New Balance 2002R Protection Pack Rain Cloud",
     "New Balance 2002R", "Protection Pack Rain Cloud", "Grey/Grey", "new_balance", 4, 14, 150,
     "2021-04-01", 170),
    ("U9060ECA", "New Balance", "New Balance 9060 Sea Salt", "New Balance 9060", "Sea Salt",
     "Sea Salt/Moonbeam", "new_balance", 4, 14, 150, "2023-01-15", 160),
    ("M990GL6", "New Balance", "New Balance 990v6 MiUSA Grey", "New Balance 990v6", "Grey",
     "Grey/Grey", "new_balance", 6, 14, 200, "2022-04-21", 210),
    ("1201A019-107", "ASICS", "ASICS Gel-Kayano 14 White Pure Silver", "ASICS Gel-Kayano 14",
     "White Pure Silver", "White/Pure Silver", "asics", 6, 14, 150, "2023-02-01", 160),
    ("1201A256-110", "ASICS", "ASICS Gel-1130 White Pure Silver", "ASICS Gel-1130",
     "White Pure Silver", "White/Pure Silver", "asics", 6, 14, 110, "2023-03-01", 115),
    ("1203A383-020", "ASICS", "ASICS Gel-NYC Graphite Grey Black", "ASICS Gel-NYC",
     "Graphite Grey", "Graphite Grey/Black", "asics", 6, 14, 140, "2023-05-01", 140),
    (NO_MARKET_SKU, "Nike", "Nike Air Max Plus Unreleased Sample", "Nike Air Max Plus",
     "Unreleased Sample", "Black/Black", "nike_m", 7, 13, 180, "2026-06-01", 0),
)

_GENDER = {"nike_w": "women", "nike_gs": "child"}


def unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from its parts (stable across runs and processes)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def norm(text: str) -> str:
    """Upper-case letters and digits only: ``"dd1391 100"`` -> ``"DD1391100"``."""
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def product_id(sku: str) -> str:
    """The StockX productId of a SKU: uuid5 in the simulator's namespace."""
    return str(uuid.uuid5(_NAMESPACE, sku))


def _upc(*parts: object) -> str:
    body = "19" + f"{int(unit('upc', *parts) * 10**9):09d}"
    odd = sum(int(d) for d in body[0::2])
    even = sum(int(d) for d in body[1::2])
    return body + str((10 - (3 * odd + even) % 10) % 10)


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    product_id: str
    size: SizeRow
    gtin: str
    index: int


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    brand: str
    title: str
    family: str  # "Nike Dunk Low": the model line, for related search results
    nickname: str
    colorway: str
    gender: str  # StockX productAttributes.gender: men, women, child
    retail_usd: int
    release_date: str
    market_usd: int  # 0 = no market at all
    variants: tuple[Variant, ...]

    @property
    def id(self) -> str:
        return self.variants[0].product_id

    @property
    def catalog_id(self) -> str:
        """Alias's stable slug."""
        return slug(f"{self.family} {self.nickname} {self.sku}")

    @property
    def url_key(self) -> str:
        return slug(self.title)

    @property
    def alias_sku(self) -> str:
        """Alias writes the SKU with a space: ``"DD1391 100"``."""
        return self.sku.replace("-", " ")

    @property
    def has_market(self) -> bool:
        return self.market_usd > 0

    @property
    def haystack(self) -> str:
        return norm(" ".join((self.brand, self.title, self.family, self.nickname, self.colorway,
                              self.sku)))

    def variant_for(self, number: float) -> Variant | None:
        """The variant whose own-scale number (Alias ``size``) is ``number``."""
        return next((v for v in self.variants if v.size.number == number), None)


@dataclass(frozen=True, slots=True)
class Quote:
    """One size's market in USD at one instant; ``reference`` exists even without asks."""

    reference: float
    lowest_ask: float | None
    highest_bid: float | None
    last_sale: float | None


def _build(row: tuple[str, str, str, str, str, str, str, float, float, int, str, int]) -> Product:
    sku, brand, title, family, nickname, colorway, chart_name, lo, hi, retail, release, market = row
    pid = product_id(sku)
    variants = tuple(
        Variant(str(uuid.uuid5(uuid.UUID(pid), size.value)), pid, size, _upc(sku, size.value), i)
        for i, size in enumerate(chart(chart_name, lo, hi))
    )
    return Product(sku, brand, title, family, nickname, colorway,
                   _GENDER.get(chart_name, "men"), retail, release, market, variants)


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def near_sku(query: str, sku: str, max_edits: int = 2) -> bool:
    """A SKU-looking query matches SKUs within ``max_edits`` edits, or that it is a part of."""
    q, s = norm(query), norm(sku)
    if len(q) < 5 or not any(c.isdigit() for c in q):
        return False
    return q in s or _levenshtein(q, s) <= max_edits


class Catalog:
    """Every product, with look-ups by SKU, StockX id, Alias catalog id, variant id and GTIN."""

    def __init__(self, products: tuple[Product, ...]) -> None:
        self.products = products
        self.by_sku = {p.sku: p for p in products}
        self.by_id = {p.id: p for p in products}
        self.by_catalog_id = {p.catalog_id: p for p in products}
        self.variants = {v.id: v for p in products for v in p.variants}
        self.by_gtin = {v.gtin: v for p in products for v in p.variants}
        assert len(self.by_gtin) == len(self.variants), "GTINs must be unique"

    def search(self, query: str) -> list[Product]:
        """Fuzzy search as StockX does it: SKU neighbours and the matched line's siblings too.

        The order is a fixed "popularity", not relevance, so an exact SKU match is not
        necessarily first (for ``DD1391-100`` it is not).
        """
        q = norm(query)
        if not q:
            return []
        if q in self.by_gtin:
            return [self.by_id[self.by_gtin[q].product_id]]
        tokens = [norm(t) for t in query.split() if norm(t)]
        hits = [p for p in self.products
                if near_sku(query, p.sku) or all(t in p.haystack for t in tokens)]
        families = {p.family for p in hits if norm(p.sku) == q}
        found = {p.sku for p in hits}
        related = [p for p in self.products if p.family in families and p.sku not in found]
        return sorted(hits, key=_popularity) + sorted(related, key=_popularity)


def _popularity(product: Product) -> float:
    return unit("popularity", product.sku)


@cache
def catalog() -> Catalog:
    """The catalog (built once; it does not depend on the seed)."""
    return Catalog(tuple(_build(row) for row in _PRODUCTS))


def _noise(seed: int, key: str, hour: int) -> float:
    """Smooth value noise in [-1, 1]: knots every 6 h and 48 h, smoothstep between them."""
    total = 0.0
    for span, weight in ((6, 0.35), (48, 0.65)):
        knot, offset = divmod(hour, span)
        a = unit(seed, key, span, knot) * 2 - 1
        b = unit(seed, key, span, knot + 1) * 2 - 1
        t = offset / span
        total += weight * (a + (b - a) * t * t * (3 - 2 * t))
    return total


def quote(seed: int, product: Product, variant: Variant, now: float) -> Quote:
    """The USD market of one size in the clock hour that holds ``now``."""
    hour = int(now // 3600)
    n = len(product.variants)
    spread = (variant.index - (n - 1) / 2) / max(n - 1, 1)  # -0.5 .. 0.5
    size_factor = 1 + spread * spread + (unit(product.sku, variant.size.value) - 0.5) * 0.1
    walk = (1 + 0.10 * _noise(seed, product.sku, hour)
            + 0.04 * _noise(seed, f"{product.sku}|{variant.size.value}", hour))
    ref = max(product.market_usd, product.retail_usd) * size_factor * walk
    if not product.has_market:
        return Quote(ref, None, None, None)
    bid = ref * (0.80 + 0.06 * unit(seed, product.sku, variant.size.value, hour, "bid"))
    last = ref * (0.93 + 0.10 * unit(seed, product.sku, variant.size.value, hour, "sale"))
    first, last_variant = variant.index == 0, variant.index == n - 1
    return Quote(ref, None if first or last_variant else ref, None if first else bid, last)


def convert(usd: float, currency: str) -> float:
    return usd * FX_PER_USD[currency]
