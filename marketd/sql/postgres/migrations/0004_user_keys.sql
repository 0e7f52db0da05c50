-- 0004: which keys each user asked for, and the jobs of one user (the SQLite schema's
-- migration 0006): /prices?user_id= and /jobs?user_id=.
CREATE TABLE IF NOT EXISTS market_user_keys (
    user_id    text NOT NULL,
    dedupe_key text NOT NULL,                    -- provider|sku|size key, as market_prices
    asked_at   timestamptz NOT NULL,
    PRIMARY KEY (user_id, dedupe_key)
);
CREATE INDEX IF NOT EXISTS market_jobs_user ON market_jobs (user_id) WHERE user_id IS NOT NULL;
