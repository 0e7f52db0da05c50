-- 0006: which keys each user asked for (every enqueue naming a user_id, a 'fresh' answer
-- too), so /prices?user_id= gives the prices of that user's keys whatever became of the jobs;
-- and the jobs of one user (/jobs?user_id=).
CREATE TABLE IF NOT EXISTS market_user_keys (
    user_id    TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,                    -- provider|sku|size key, as market_prices
    asked_at   TEXT NOT NULL,
    PRIMARY KEY (user_id, dedupe_key)
);
CREATE INDEX IF NOT EXISTS market_jobs_user ON market_jobs (user_id) WHERE user_id IS NOT NULL;
