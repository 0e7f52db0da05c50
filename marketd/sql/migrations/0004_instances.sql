-- 0004: who works. Each daemon has an instance row (its id, host, pid and heartbeat, and the
-- providers whose batches it runs); running jobs and runs carry the instance that claimed or
-- recorded them, so a daemon's start-up and stop return only its own running jobs (or a dead
-- daemon's) to pending. SQLite has one daemon per file; the PostgreSQL schema has the same.
CREATE TABLE IF NOT EXISTS market_instances (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    lanes        TEXT NOT NULL DEFAULT '[]'    -- JSON array: the providers it runs
);
ALTER TABLE market_jobs ADD COLUMN instance_id TEXT;
ALTER TABLE market_job_runs ADD COLUMN instance_id TEXT;
