-- Who works (SQLite): the daemon's instance row. SQLite has one daemon per file, so every
-- other instance is dead by definition: its running jobs go back to pending at start-up.

-- name: upsert_instance
INSERT INTO market_instances (id, host, pid, started_at, heartbeat_at, lanes)
VALUES (:id, :host, :pid, :started_at, :now, :lanes)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, lanes = excluded.lanes;

-- name: rescue_dead
-- running jobs of any other daemon (one daemon per file: the others are dead)
UPDATE market_jobs
SET status = 'pending', started_at = NULL, updated_at = :now,
    error_message = 'returned to pending: its daemon ' || coalesce(instance_id, '(unknown)')
                    || ' stopped while it was running'
WHERE status = 'running' AND (instance_id IS NULL OR instance_id != :instance);

-- name: forget_other_instances
DELETE FROM market_instances WHERE id != :instance;

-- name: return_own_running
UPDATE market_jobs
SET status = 'pending', started_at = NULL, updated_at = :now,
    error_message = 'returned to pending: its daemon stopped while it was running'
WHERE status = 'running' AND instance_id = :instance;

-- name: delete_instance
DELETE FROM market_instances WHERE id = :instance;

-- name: list_instances
SELECT id, host, pid, started_at, heartbeat_at, lanes FROM market_instances
ORDER BY started_at, id;
