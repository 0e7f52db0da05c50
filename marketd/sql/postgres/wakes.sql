-- Due work (PostgreSQL): aging, and when a provider's next retry comes due.

-- name: age_jobs
-- starvation: pending jobs above :floor enqueued before :before rise to :to (never down),
-- :batch of them per transaction (store.shared.AGE_BATCH_ROWS); a row another daemon is
-- claiming is skipped, never waited for
UPDATE market_jobs SET priority = :to::integer, updated_at = :now::timestamptz
WHERE id IN (SELECT id FROM market_jobs
             WHERE status = 'pending' AND provider = :provider::text
               AND priority > :floor::integer AND priority < :to::integer
               AND created_at <= :before::timestamptz
             LIMIT :batch::integer FOR UPDATE SKIP LOCKED);

-- name: next_attempt_at
-- the earliest pending job of a provider not yet due (a retry's backoff)
SELECT min(next_attempt_at) AS at FROM market_jobs
WHERE status = 'pending' AND provider = :provider::text
  AND next_attempt_at > :now::timestamptz;

-- name: notify_wake_reason
SELECT pg_notify('marketd_wake', :payload::text);
