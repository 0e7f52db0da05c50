"""What a simulator run is told: seed, limits, latency, faults and credentials.

Defaults imitate the real APIs as providers.md describes them: StockX 1 request per second plus
25,000 per day (resetting at 00:00 UTC), eBay Browse 5,000 per day (resetting at midnight
Pacific), Alias no published limit. Pass ``ProviderOptions()`` for a provider without limits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from marketd.ratelimit import Limit, parse_limit

PROVIDERS = ("stockx", "alias", "ebay")


@dataclass(frozen=True)
class ProviderOptions:
    """How one simulated provider behaves.

    ``limits`` are rolling windows (``"20/10s"``, ``"1/second"``), counted at arrival, rejected
    calls included; ``daily_limit`` is a fixed calendar-day quota in the provider's own reset
    time zone. ``fault_rate`` is the probability that a call answers the provider's usual 5xx;
    ``slow_rate`` the probability that it answers only after ``slow_ms`` more. With
    ``retry_after`` a 429 carries ``Retry-After`` (seconds until a call would fit again); the real
    providers document no such header.
    """

    limits: Sequence[str] = ()
    daily_limit: int | None = None
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fault_rate: float = 0.0
    slow_rate: float = 0.0
    slow_ms: float = 35_000.0
    retry_after: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "limits", tuple(self.limits))
        self.parsed_limits()  # a bad limit fails here, not at the first request
        for name in ("fault_rate", "slow_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1")
        for name in ("latency_ms", "jitter_ms", "slow_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.daily_limit is not None and self.daily_limit < 1:
            raise ValueError("daily_limit must be at least 1 (or None for no daily quota)")

    def parsed_limits(self) -> tuple[Limit, ...]:
        return tuple(parse_limit(text) for text in self.limits)


@dataclass(frozen=True)
class SimulatorOptions:
    """Everything :func:`~marketd.simulator.create_simulator_app` is told.

    Credentials left at ``None`` accept any non-empty value. With ``strict_tokens`` the StockX
    and eBay bearer tokens must be ones this simulator issued and that have not expired (12 h and
    2 h); without it any non-empty bearer token passes. The seed moves prices, eBay listings and
    the fault draws; the catalog itself never changes.

    ``limits`` (``{"stockx": ["20/10s"]}``) is a shorthand for the command line: it replaces the
    rolling limits of the providers it names, and is folded into them at construction.
    """

    seed: int = 0
    stockx: ProviderOptions = field(
        default_factory=lambda: ProviderOptions(limits=("1/second",), daily_limit=25_000)
    )
    alias: ProviderOptions = field(default_factory=ProviderOptions)
    ebay: ProviderOptions = field(default_factory=lambda: ProviderOptions(daily_limit=5_000))
    stockx_api_key: str | None = None
    stockx_refresh_token: str | None = None
    alias_token: str | None = None
    ebay_client_id: str | None = None
    ebay_client_secret: str | None = None
    strict_tokens: bool = True
    limits: Mapping[str, Sequence[str]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name, texts in self.limits.items():
            object.__setattr__(self, name, replace(self.provider(name), limits=tuple(texts)))
        object.__setattr__(self, "limits", {})

    def provider(self, name: str) -> ProviderOptions:
        if name not in PROVIDERS:
            raise ValueError(f"unknown provider {name!r}")
        options: ProviderOptions = getattr(self, name)
        return options
