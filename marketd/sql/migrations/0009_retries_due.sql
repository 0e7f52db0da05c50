-- 0009: when a provider's next retry comes due (next_attempt_at, asked after every run) reads
-- the jobs waiting out a backoff only: it scanned every pending job (183 ms at 1M pending).
CREATE INDEX IF NOT EXISTS market_jobs_retry_due ON market_jobs (provider, next_attempt_at)
    WHERE status = 'pending' AND next_attempt_at IS NOT NULL;
