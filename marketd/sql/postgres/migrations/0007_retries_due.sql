-- 0007: when a provider's next retry comes due, from the jobs waiting out a backoff only (the
-- SQLite schema's 0009).
CREATE INDEX IF NOT EXISTS market_jobs_retry_due ON market_jobs (provider, next_attempt_at)
    WHERE status = 'pending' AND next_attempt_at IS NOT NULL;
