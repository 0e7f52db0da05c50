"""marketd: a rate-limit-aware market-data fetcher for StockX, Alias and eBay."""

__version__ = "0.1.0"
