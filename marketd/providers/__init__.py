"""Provider clients (StockX, Alias, eBay) behind one seam, :mod:`marketd.providers.base`."""

from __future__ import annotations

from marketd.providers.base import Provider, ProviderContext


def client_class(name: str) -> type[Provider]:
    """The client class for a provider name (imported lazily: each client is optional)."""
    if name == "stockx":
        from marketd.providers.stockx import StockXClient

        return StockXClient
    if name == "alias":
        from marketd.providers.alias import AliasClient

        return AliasClient
    if name == "ebay":
        from marketd.providers.ebay import EbayClient

        return EbayClient
    raise KeyError(name)


__all__ = ["Provider", "ProviderContext", "client_class"]
