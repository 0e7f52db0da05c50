"""A simulator of the StockX, Alias and eBay HTTP APIs, for ``marketd demo``, tests and benchmarks.

One aiohttp app serves all three on loopback, with no keys and no network: StockX under ``/v2/``
and ``/oauth/token``, Alias under ``/api/v1/``, eBay under ``/buy/browse/v1/`` and
``/identity/v1/oauth2/token``. It imitates what providers.md records of the real APIs (shapes,
auth, errors, sizes, fuzzy search) and enforces rate limits per provider, counted at arrival.

    app = create_simulator_app(SimulatorOptions(seed=1), clock=FakeClock())
    app[SIM_STATE].force("alias", 503, count=2)
    app[SIM_STATE].stats()["providers"]["stockx"]["limits"][0]["max_seen"]
"""

from marketd.simulator.app import create_simulator_app, run_simulator
from marketd.simulator.catalog import NO_MARKET_SKU, product_id
from marketd.simulator.options import ProviderOptions, SimulatorOptions
from marketd.simulator.state import SIM_STATE, SimState

__all__ = [
    "NO_MARKET_SKU",
    "SIM_STATE",
    "ProviderOptions",
    "SimState",
    "SimulatorOptions",
    "create_simulator_app",
    "product_id",
    "run_simulator",
]
