-- Named queries of retention (as sql/retention.sql): up to :limit rows of one kind older than
-- :before per transaction, and the counts of marketd prune --dry-run.

-- name: prune_jobs
DELETE FROM market_jobs WHERE id IN (
    SELECT id FROM market_jobs
    WHERE created_at < :before::timestamptz AND status IN ('completed', 'failed')
      AND completed_at < :before::timestamptz
    ORDER BY created_at LIMIT :limit::integer);

-- name: count_prune_jobs
SELECT count(*) FROM market_jobs
WHERE created_at < :before::timestamptz AND status IN ('completed', 'failed')
  AND completed_at < :before::timestamptz;

-- name: prune_history
DELETE FROM market_price_history WHERE id IN (
    SELECT h.id FROM market_price_history h
    WHERE h.fetched_at < :before::timestamptz
      AND EXISTS (SELECT 1 FROM market_price_history n
                  WHERE n.provider = h.provider AND n.sku = h.sku AND n.size = h.size
                    AND n.fetched_at > h.fetched_at)
    ORDER BY h.id LIMIT :limit::integer);

-- name: count_prune_history
SELECT count(*) FROM market_price_history h
WHERE h.fetched_at < :before::timestamptz
  AND EXISTS (SELECT 1 FROM market_price_history n
              WHERE n.provider = h.provider AND n.sku = h.sku AND n.size = h.size
                AND n.fetched_at > h.fetched_at);

-- name: prune_metrics
DELETE FROM market_provider_metrics WHERE id IN (
    SELECT id FROM market_provider_metrics WHERE created_at < :before::timestamptz
    ORDER BY id LIMIT :limit::integer);

-- name: count_prune_metrics
SELECT count(*) FROM market_provider_metrics WHERE created_at < :before::timestamptz;

-- name: prune_runs
-- finished runs, with the metrics rows of their batches
WITH r AS (
    SELECT id FROM market_job_runs
    WHERE started_at < :before::timestamptz AND finished_at IS NOT NULL
    ORDER BY id LIMIT :limit::integer
), m AS (
    DELETE FROM market_provider_metrics WHERE run_id IN (SELECT id FROM r)
)
DELETE FROM market_job_runs WHERE id IN (SELECT id FROM r);

-- name: count_prune_runs
SELECT count(*) FROM market_job_runs
WHERE started_at < :before::timestamptz AND finished_at IS NOT NULL;

-- name: database_size
SELECT pg_database_size(current_database()) AS bytes;

-- name: table_rows
SELECT 'market_jobs' AS name, count(*) AS n FROM market_jobs
UNION ALL SELECT 'market_calls', count(*) FROM market_calls
UNION ALL SELECT 'market_budgets', count(*) FROM market_budgets
UNION ALL SELECT 'market_job_runs', count(*) FROM market_job_runs
UNION ALL SELECT 'market_provider_metrics', count(*) FROM market_provider_metrics
UNION ALL SELECT 'market_prices', count(*) FROM market_prices
UNION ALL SELECT 'market_price_history', count(*) FROM market_price_history
UNION ALL SELECT 'market_catalog', count(*) FROM market_catalog
UNION ALL SELECT 'market_queue_samples', count(*) FROM market_queue_samples
UNION ALL SELECT 'market_wanted', count(*) FROM market_wanted
UNION ALL SELECT 'market_user_keys', count(*) FROM market_user_keys
UNION ALL SELECT 'market_webhook_outbox', count(*) FROM market_webhook_outbox;
