-- Named queries of the price-change webhook outbox.

-- name: outbox_insert
INSERT INTO market_webhook_outbox (event, body, created_at, next_attempt_at)
VALUES ('price_changed', :body, :now, :now);

-- name: outbox_claim
-- due deliveries, leased until :lease (a crash mid-delivery: sent again after the lease)
UPDATE market_webhook_outbox SET next_attempt_at = :lease
WHERE id IN (SELECT id FROM market_webhook_outbox
             WHERE status = 'pending' AND next_attempt_at <= :now
             ORDER BY next_attempt_at, id LIMIT :limit)
RETURNING id, event, body, attempts, created_at;

-- name: outbox_delivered
UPDATE market_webhook_outbox
SET status = 'delivered', delivered_at = :now, attempts = attempts + 1, last_error = NULL
WHERE id = :id;

-- name: outbox_failed
UPDATE market_webhook_outbox
SET status = CASE WHEN :give_up THEN 'dead' ELSE 'pending' END, attempts = attempts + 1,
    last_error = :error, next_attempt_at = :next_attempt_at
WHERE id = :id;

-- name: outbox_counts
SELECT status, count(*) AS n, sum(attempts > 0) AS failing FROM market_webhook_outbox
GROUP BY status;

-- name: outbox_failing
-- deliveries that failed at least once and are not delivered: the page shows them
SELECT id, event, status, attempts, created_at, next_attempt_at, last_error
FROM market_webhook_outbox
WHERE status != 'delivered' AND attempts > 0
ORDER BY id DESC LIMIT :limit;

-- name: prune_webhooks
DELETE FROM market_webhook_outbox WHERE id IN (
    SELECT id FROM market_webhook_outbox
    WHERE created_at < :before AND status IN ('delivered', 'dead')
    ORDER BY created_at LIMIT :limit);

-- name: count_prune_webhooks
SELECT count(*) FROM market_webhook_outbox
WHERE created_at < :before AND status IN ('delivered', 'dead');
