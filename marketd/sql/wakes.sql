-- Due work (SQLite): aging, and when a provider's next retry comes due.

-- name: age_jobs
-- starvation: pending jobs above :floor enqueued before :before rise to :to (never down),
-- :batch of them per transaction (store.shared.AGE_BATCH_ROWS)
UPDATE market_jobs SET priority = :to, updated_at = :now
WHERE rowid IN (SELECT rowid FROM market_jobs
                WHERE status = 'pending' AND provider = :provider
                  AND priority > :floor AND priority < :to AND created_at <= :before
                LIMIT :batch);

-- name: next_attempt_at
-- the earliest pending job of a provider not yet due (a retry's backoff)
SELECT min(next_attempt_at) AS at FROM market_jobs
WHERE status = 'pending' AND provider = :provider AND next_attempt_at > :now;

-- name: data_version
PRAGMA data_version;
