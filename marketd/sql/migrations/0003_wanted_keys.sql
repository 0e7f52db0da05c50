-- 0003: the keys users asked for (a job at background priority or above that completed), so
-- that budget no queued job needs refreshes their oldest prices (scheduler.idle_refresh_seconds)
CREATE TABLE IF NOT EXISTS market_wanted (
    provider    TEXT NOT NULL,
    sku         TEXT NOT NULL,
    size_key    TEXT NOT NULL DEFAULT '',          -- market_prices.size: '10', 'EU 40', ''
    size        TEXT,
    size_system TEXT NOT NULL DEFAULT 'UK',
    asked_at    TEXT NOT NULL,                     -- the last completion of a user's job
    PRIMARY KEY (provider, sku, size_key)
);
