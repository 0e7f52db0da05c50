-- 0003: price history records change (the SQLite schema's migration 0005): rows earlier
-- versions wrote for unchanged prices are dropped, keeping the first of every run of equal
-- prices; from now on a fetch writes a history row only when the price differs.
DELETE FROM market_price_history WHERE id IN (
    SELECT id FROM (
        SELECT id, currency, lowest_ask, highest_bid, last_sale,
               lag(currency) OVER w AS p_currency, lag(lowest_ask) OVER w AS p_ask,
               lag(highest_bid) OVER w AS p_bid, lag(last_sale) OVER w AS p_sale,
               row_number() OVER w AS n
        FROM market_price_history
        WINDOW w AS (PARTITION BY provider, sku, size ORDER BY fetched_at, id)
    ) runs
    WHERE n > 1 AND currency IS NOT DISTINCT FROM p_currency
      AND lowest_ask IS NOT DISTINCT FROM p_ask AND highest_bid IS NOT DISTINCT FROM p_bid
      AND last_sale IS NOT DISTINCT FROM p_sale
);
