-- Named queries of the prices going out: history, export, the current rows a write compares.

-- name: current_price
-- the stored price of one key, which a new fetch is compared with (history records change)
SELECT provider, sku, size, currency, lowest_ask, highest_bid, last_sale, fetched_at
FROM market_prices WHERE provider = ? AND sku = ? AND size = ?;

-- name: price_history
-- one key's points, oldest first (one per change)
SELECT fetched_at, currency, lowest_ask, highest_bid, last_sale FROM market_price_history
WHERE provider = :provider AND sku = :sku AND size = :size
  AND (:since IS NULL OR fetched_at >= :since)
ORDER BY fetched_at, id;
