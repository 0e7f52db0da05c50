-- Named queries of the prices going out: history, export, the current rows a write compares.

-- name: current_prices
-- the stored prices of the keys a write brings, which the new fetches are compared with
SELECT p.provider, p.sku, p.size, p.currency, p.lowest_ask, p.highest_bid, p.last_sale,
       p.fetched_at
FROM market_prices p
JOIN unnest(:providers::text[], :skus::text[], :sizes::text[]) AS k (provider, sku, size)
  ON p.provider = k.provider AND p.sku = k.sku AND p.size = k.size;

-- name: price_history
SELECT fetched_at, currency, lowest_ask, highest_bid, last_sale FROM market_price_history
WHERE provider = :provider::text AND sku = :sku::text AND size = :size::text
  AND (:since::timestamptz IS NULL OR fetched_at >= :since::timestamptz)
ORDER BY fetched_at, id;
