-- Named queries of the price-change webhook outbox (as sql/webhooks.sql).

-- name: outbox_insert
INSERT INTO market_webhook_outbox (event, body, created_at, next_attempt_at)
VALUES ('price_changed', $1, $2, $2);

-- name: outbox_claim
-- due deliveries, leased until :lease; rows another daemon is claiming are skipped
UPDATE market_webhook_outbox SET next_attempt_at = :lease::timestamptz
WHERE id IN (SELECT id FROM market_webhook_outbox
             WHERE status = 'pending' AND next_attempt_at <= :now::timestamptz
             ORDER BY next_attempt_at, id LIMIT :limit::integer
             FOR UPDATE SKIP LOCKED)
RETURNING id, event, body, attempts, created_at;

-- name: outbox_delivered
UPDATE market_webhook_outbox
SET status = 'delivered', delivered_at = :now::timestamptz, attempts = attempts + 1,
    last_error = NULL
WHERE id = :id::bigint;

-- name: outbox_failed
UPDATE market_webhook_outbox
SET status = CASE WHEN :give_up::boolean THEN 'dead' ELSE 'pending' END,
    attempts = attempts + 1, last_error = :error::text,
    next_attempt_at = :next_attempt_at::timestamptz
WHERE id = :id::bigint;

-- name: outbox_counts
SELECT status, count(*) AS n, count(*) FILTER (WHERE attempts > 0) AS failing
FROM market_webhook_outbox GROUP BY status;

-- name: outbox_failing
SELECT id, event, status, attempts, created_at, next_attempt_at, last_error
FROM market_webhook_outbox
WHERE status != 'delivered' AND attempts > 0
ORDER BY id DESC LIMIT :limit::integer;

-- name: prune_webhooks
DELETE FROM market_webhook_outbox WHERE id IN (
    SELECT id FROM market_webhook_outbox
    WHERE created_at < :before::timestamptz AND status IN ('delivered', 'dead')
    ORDER BY created_at LIMIT :limit::integer);

-- name: count_prune_webhooks
SELECT count(*) FROM market_webhook_outbox
WHERE created_at < :before::timestamptz AND status IN ('delivered', 'dead');
