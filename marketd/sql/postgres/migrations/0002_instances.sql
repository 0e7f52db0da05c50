-- 0002: who works (the SQLite schema's migration 0004). Each daemon has an instance row: its
-- id, host, pid and heartbeat, and the providers whose batches it runs (it holds their session
-- advisory locks); running jobs and runs carry the instance that claimed or recorded them, so
-- a daemon returns to pending only its own running jobs and those of daemons whose heartbeat
-- has stopped, never a live daemon's.
CREATE TABLE IF NOT EXISTS market_instances (
    id           uuid PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    lanes        jsonb NOT NULL DEFAULT '[]'   -- the providers it runs
);
ALTER TABLE market_jobs ADD COLUMN IF NOT EXISTS instance_id uuid;
ALTER TABLE market_job_runs ADD COLUMN IF NOT EXISTS instance_id uuid;
