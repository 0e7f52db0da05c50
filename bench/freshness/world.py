"""The simulated market: the portfolio's SKUs (the simulator's products, aliased past the 39
with a market), their prices (the simulator's ``quote``), and an in-process StockX client that
spends the real budget and meets the simulator's own limit meter."""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from bench.freshness.params import SEED, Params


@functools.cache
def max_items_per_sku() -> int:
    """The most items a SKU can hold: the usable sizes (the ends have no asks) of the
    simulator's smallest product with a market."""
    from marketd.simulator.catalog import catalog

    return min(len(_sizes(p)) for p in catalog().products if p.has_market)


def _variants(product: Any) -> dict[str, Any]:
    from marketd.simulator.sizes import num

    variants: dict[str, Any] = {}
    for v in product.variants:
        variants.setdefault(num(v.size.uk), v)  # one variant per UK size
    return variants


def _sizes(product: Any) -> list[str]:
    return list(_variants(product))[1:-1]  # the ends have no asks


@dataclass
class Item:
    sku: str
    size: str
    added_at: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.sku, self.size)


@dataclass
class World:
    """The simulated market and its provider-side meter."""

    clock: Any
    meter: Any
    skus: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)  # sku -> base, sizes
    calls: list[float] = field(default_factory=list)
    rejected: int = 0
    seed: int = SEED

    def prices(self, sku: str, now: float) -> dict[str, Any]:
        from marketd.models import Price
        from marketd.simulator.catalog import convert, quote

        base, variants = self.skus[sku]

        def minor(usd: float | None) -> int | None:
            return None if usd is None else round(convert(usd, "GBP") * 100)

        out = {}
        for size, v in variants.items():
            q = quote(self.seed, base, v, now)
            out[size] = Price("stockx", sku, size, "GBP", minor(q.lowest_ask),
                              minor(q.highest_bid), minor(q.last_sale), now)
        return out


def build_world(clock: Any, rng: random.Random, p: Params) -> tuple[World, list[Item]]:
    from marketd.ratelimit import parse_limit
    from marketd.simulator.catalog import catalog
    from marketd.simulator.limits import ProviderMeter

    meter = ProviderMeter([parse_limit(f"{p.limit_per_hour}/hour")], None, UTC)  # no daily limit
    world = World(clock, meter, seed=p.seed)
    products = [prod for prod in catalog().products if prod.has_market]
    per_sku, extra = divmod(p.items, p.skus)  # the first `extra` SKUs hold one more item
    items: list[Item] = []
    for k in range(p.skus):
        base = products[k % len(products)]
        sku = base.sku if k < len(products) else f"SIM{k:03d}-{base.sku}"
        variants = _variants(base)
        world.skus[sku] = (base, variants)
        sizes = list(variants)[1:-1]  # the ends have no asks
        n = per_sku + 1 if k < extra else per_sku
        for size in rng.sample(sizes, n):
            items.append(Item(sku, size, 0.0))
    return world, items


def provider_factory(world: World) -> Any:
    from marketd.errors import RateLimited, SizeError
    from marketd.models import Job
    from marketd.providers.base import FetchResult, Provider, ProviderContext

    class SimCatalogProvider(Provider):
        name = "stockx"

        async def _request(self) -> None:
            await self.ctx.budget.spend()
            now = self.ctx.clock.now()
            world.calls.append(now)
            if world.meter.arrive(now) is not None:
                world.rejected += 1
                world.meter.answered(429)
                raise RateLimited("stockx")
            world.meter.answered(200)

        async def fetch_group(self, sku: str, jobs: Sequence[Job]) -> FetchResult:
            if await self.ctx.store.get_catalog("stockx", sku) is None:
                await self._request()  # search
                await self._request()  # variants
                await self.ctx.store.put_catalog("stockx", sku, product_id=sku)
            await self._request()  # product-level market data: every size at once
            prices = world.prices(sku, self.ctx.clock.now())
            wanted = {j.size_key for j in jobs}
            outcomes: dict[str, Any] = {
                j.id: prices.get(j.size_key or "") or SizeError("stockx", "no such size")
                for j in jobs}
            return FetchResult(outcomes, [p for s, p in prices.items() if s not in wanted])

    def make(ctx: ProviderContext) -> Provider:
        return SimCatalogProvider(ctx)

    return make
