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
WHERE (:provider::text IS NULL OR p.provider = :provider::text)
  AND (:skus::text[] IS NULL OR p.sku = ANY (:skus::text[]))
  AND (:size::text IS NULL OR p.size = :size::text)
  AND (:user_id::text IS NULL OR p.provider || '|' || p.sku || '|' || p.size IN (
       SELECT dedupe_key FROM market_user_keys WHERE user_id = :user_id::text))
  AND (:after_sku::text IS NULL
       OR (p.sku COLLATE "C", p.provider COLLATE "C", p.size COLLATE "C")
          > (:after_sku::text, :after_provider::text, :after_size::text))
ORDER BY p.sku COLLATE "C", p.provider COLLATE "C", p.size COLLATE "C"
LIMIT :limit::integer;

-- name: remember_user_keys
-- the keys of an enqueue that name a user, for /prices?user_id=
INSERT INTO market_user_keys (user_id, dedupe_key, asked_at)
SELECT DISTINCT u, k, :now::timestamptz
FROM unnest(:user_ids::text[], :dedupe_keys::text[]) AS x (u, k) WHERE u IS NOT NULL
ON CONFLICT (user_id, dedupe_key) DO UPDATE SET asked_at = excluded.asked_at;

-- name: portfolio_prices
-- (byte order, as on SQLite: COLLATE "C")
WITH keys AS (
    SELECT DISTINCT w.sku COLLATE "C" AS sku, w.size_key COLLATE "C" AS size_key
    FROM market_wanted w
    WHERE (w.sku COLLATE "C" > :after_sku::text
           OR (w.sku = :after_sku::text AND w.size_key COLLATE "C" > :after_size::text))
      AND EXISTS (SELECT 1 FROM market_prices p
                  WHERE p.provider IN ('stockx', 'alias', 'ebay') AND p.sku = w.sku
                    AND p.size = w.size_key)
    ORDER BY 1, 2 LIMIT :limit::integer
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
ORDER BY p.sku COLLATE "C", p.size COLLATE "C", p.provider COLLATE "C";

-- name: enrich_candidates
SELECT w.provider, w.sku, w.size, w.size_system FROM market_wanted w
WHERE w.provider IN ('stockx', 'alias')
  AND NOT EXISTS (SELECT 1 FROM market_catalog c
                  WHERE c.sku = w.sku AND coalesce(c.title, '') != '')
  AND EXISTS (SELECT 1 FROM market_catalog c
              WHERE c.provider = w.provider AND c.sku = w.sku
                AND c.fetched_at <= :recent::timestamptz)
ORDER BY w.sku COLLATE "C", w.provider COLLATE "C", w.size_key COLLATE "C"
LIMIT :limit::integer;
