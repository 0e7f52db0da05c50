-- Named queries of the prices going out: history, export, the current rows a write compares.

-- name: current_prices
-- the stored prices of the keys a write brings ([[provider, sku, size], ...]), in one statement
SELECT p.provider, p.sku, p.size, p.currency, p.lowest_ask, p.highest_bid, p.last_sale,
       p.fetched_at
FROM json_each(:keys) AS k
JOIN market_prices p ON p.provider = json_extract(k.value, '$[0]')
                    AND p.sku = json_extract(k.value, '$[1]')
                    AND p.size = json_extract(k.value, '$[2]');

-- name: price_history
-- one key's points, oldest first (one per change)
SELECT fetched_at, currency, lowest_ask, highest_bid, last_sale FROM market_price_history
WHERE provider = :provider AND sku = :sku AND size = :size
  AND (:since IS NULL OR fetched_at >= :since)
ORDER BY fetched_at, id;

-- name: list_prices
-- the export: filters, then pages in (sku, provider, size) order after a cursor; the
-- product's title, brand, colourway and image from its provider's catalog, else any's
SELECT p.provider, p.sku, p.size, p.currency, p.lowest_ask, p.highest_bid, p.last_sale,
       p.fetched_at, p.extra,
       coalesce(own.title, (SELECT min(c.title) FROM market_catalog c
                            WHERE c.sku = p.sku)) AS title,
       coalesce(own.brand, (SELECT min(c.brand) FROM market_catalog c
                            WHERE c.sku = p.sku)) AS brand,
       coalesce(own.colourway, (SELECT min(c.colourway) FROM market_catalog c
                                WHERE c.sku = p.sku)) AS colourway,
       coalesce(nullif(own.image_url, ''), (SELECT min(nullif(c.image_url, ''))
                                            FROM market_catalog c
                                            WHERE c.sku = p.sku)) AS image_url
FROM market_prices p
LEFT JOIN market_catalog own ON own.provider = p.provider AND own.sku = p.sku
WHERE (:provider IS NULL OR p.provider = :provider)
  AND (:skus IS NULL OR p.sku IN (SELECT value FROM json_each(:skus)))
  AND (:size IS NULL OR p.size = :size)
  AND (:user_id IS NULL OR p.provider || '|' || p.sku || '|' || p.size IN (
       SELECT dedupe_key FROM market_user_keys WHERE user_id = :user_id))
  AND (:after_sku IS NULL OR (p.sku, p.provider, p.size) > (:after_sku, :after_provider,
                                                            :after_size))
ORDER BY p.sku, p.provider, p.size
LIMIT :limit;

-- name: remember_user_keys
-- the keys of an enqueue that name a user (its staging rows), for /prices?user_id=
INSERT INTO market_user_keys (user_id, dedupe_key, asked_at)
SELECT user_id, dedupe_key, :now FROM temp.enqueue_staging WHERE user_id IS NOT NULL
ON CONFLICT (user_id, dedupe_key) DO UPDATE SET asked_at = excluded.asked_at;

-- name: portfolio_prices
-- every provider's price of the (sku, size) keys users asked for (market_wanted), with the
-- title and image any provider's catalog gave (its own first); the first :limit keys with a
-- price after the key (:after_sku, :after_size), in byte order (('', ''): from the start)
WITH keys AS (
    SELECT DISTINCT w.sku, w.size_key FROM market_wanted w
    WHERE (w.sku > :after_sku OR (w.sku = :after_sku AND w.size_key > :after_size))
      AND EXISTS (SELECT 1 FROM market_prices p
                  WHERE p.provider IN ('stockx', 'alias', 'ebay') AND p.sku = w.sku
                    AND p.size = w.size_key)
    ORDER BY w.sku, w.size_key LIMIT :limit
)
SELECT p.provider, p.sku, p.size, p.currency, p.lowest_ask, p.highest_bid, p.last_sale,
       p.fetched_at,
       coalesce(own.title, (SELECT min(c.title) FROM market_catalog c
                            WHERE c.sku = p.sku)) AS title,
       coalesce(nullif(own.image_url, ''), (SELECT min(nullif(c.image_url, ''))
                                            FROM market_catalog c
                                            WHERE c.sku = p.sku)) AS image_url
FROM keys JOIN market_prices p ON p.sku = keys.sku AND p.size = keys.size_key
LEFT JOIN market_catalog own ON own.provider = p.provider AND own.sku = p.sku
ORDER BY p.sku, p.size, p.provider;

-- name: enrich_candidates
-- keys users asked for of SKUs no catalog has a title for, on providers whose catalog gives
-- titles and whose cached look-up (without one) is older than :recent
SELECT w.provider, w.sku, w.size, w.size_system FROM market_wanted w
WHERE w.provider IN ('stockx', 'alias')
  AND NOT EXISTS (SELECT 1 FROM market_catalog c
                  WHERE c.sku = w.sku AND coalesce(c.title, '') != '')
  AND EXISTS (SELECT 1 FROM market_catalog c
              WHERE c.provider = w.provider AND c.sku = w.sku AND c.fetched_at <= :recent)
ORDER BY w.sku, w.provider, w.size_key
LIMIT :limit;
