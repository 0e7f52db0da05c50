-- 0005: price history records change. A fetch that finds the price it already has writes no
-- history row (market_prices.fetched_at says when it was last confirmed); the rows earlier
-- versions wrote for unchanged prices (about nine in ten) are dropped here, keeping the first
-- row of every run of equal prices.
DELETE FROM market_price_history WHERE id IN (
    SELECT id FROM (
        SELECT id, currency, lowest_ask, highest_bid, last_sale,
               lag(currency) OVER w AS p_currency, lag(lowest_ask) OVER w AS p_ask,
               lag(highest_bid) OVER w AS p_bid, lag(last_sale) OVER w AS p_sale,
               row_number() OVER w AS n
        FROM market_price_history
        WINDOW w AS (PARTITION BY provider, sku, size ORDER BY fetched_at, id)
    )
    WHERE n > 1 AND currency IS p_currency AND lowest_ask IS p_ask
      AND highest_bid IS p_bid AND last_sale IS p_sale
);
