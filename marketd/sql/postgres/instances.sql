-- Who works (PostgreSQL): instance rows and heartbeats, the dead daemons' running jobs, the
-- lane locks (session advisory locks on a connection of their own) and wake-ups (NOTIFY).

-- name: upsert_instance
INSERT INTO market_instances (id, host, pid, started_at, heartbeat_at, lanes)
VALUES (:id::uuid, :host::text, :pid::integer, :started_at::timestamptz, :now::timestamptz,
        :lanes::jsonb)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, lanes = excluded.lanes;

-- name: rescue_dead
-- running jobs of daemons whose heartbeat is older than :stale (or whose row is gone), and
-- unowned ones started before it; never :instance's own
UPDATE market_jobs j
SET status = 'pending', started_at = NULL, updated_at = :now::timestamptz,
    error_message = 'returned to pending: its daemon ' || coalesce(j.instance_id::text, '(unknown)')
                    || ' stopped while it was running'
WHERE j.status = 'running'
  AND j.instance_id IS DISTINCT FROM :instance::uuid
  AND CASE WHEN j.instance_id IS NULL THEN j.started_at < :stale::timestamptz
           ELSE NOT EXISTS (SELECT 1 FROM market_instances i
                            WHERE i.id = j.instance_id
                              AND i.heartbeat_at >= :stale::timestamptz) END;

-- name: forget_instances
-- rows of daemons dead for long (kept a while for the status page)
DELETE FROM market_instances WHERE heartbeat_at < :before::timestamptz AND id != :instance::uuid;

-- name: return_own_running
UPDATE market_jobs
SET status = 'pending', started_at = NULL, updated_at = :now::timestamptz,
    error_message = 'returned to pending: its daemon stopped while it was running'
WHERE status = 'running' AND instance_id = :instance::uuid;

-- name: delete_instance
DELETE FROM market_instances WHERE id = :instance::uuid;

-- name: list_instances
SELECT id, host, pid, started_at, heartbeat_at, lanes::text AS lanes FROM market_instances
ORDER BY started_at, id;

-- name: lane_try_lock
-- a session lock: held until released or until this connection ends (PostgreSQL drops it)
SELECT pg_try_advisory_lock(hashtext('marketd-lane:' || :provider::text));

-- name: lane_unlock
SELECT pg_advisory_unlock(hashtext('marketd-lane:' || :provider::text));

-- name: lane_session_ping
SELECT 1;

-- name: notify_wake
SELECT pg_notify('marketd_wake', :provider::text);
