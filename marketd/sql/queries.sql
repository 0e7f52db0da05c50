-- Named queries: each block starts with "-- name: NAME" and runs as one statement.
-- Loaded by marketd.sql.load_queries(); only store.py executes them.

-- name: pragma_setup
PRAGMA journal_mode = WAL;

-- name: pragma_busy_timeout
-- wait up to 10 s for another process's write lock before "database is locked"
PRAGMA busy_timeout = 10000;

-- name: pragma_synchronous
PRAGMA synchronous = NORMAL;

-- name: pragma_temp_store
-- the enqueue staging table is TEMP: keep it in memory, not in a file made per write
PRAGMA temp_store = MEMORY;

-- name: pragma_foreign_keys
PRAGMA foreign_keys = ON;

-- name: pragma_journal_size_limit
-- a WAL larger than this (64 MiB) is cut back to it whenever it is reset after a checkpoint
PRAGMA journal_size_limit = 67108864;

-- name: pragma_no_autocheckpoint
-- the write connection never checkpoints on commit (store.database runs them when idle)
PRAGMA wal_autocheckpoint = 0;

-- name: journal_mode
PRAGMA journal_mode;

-- name: ping
SELECT 1;

-- name: schema_exists
SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations';

-- name: create_staging
CREATE TEMP TABLE IF NOT EXISTS enqueue_staging (
    seq INTEGER PRIMARY KEY, id TEXT, user_id TEXT, provider TEXT, sku TEXT, size TEXT,
    size_system TEXT, priority INTEGER, dedupe_key TEXT, size_key TEXT, fresh INTEGER DEFAULT 0
);

-- name: clear_staging
DELETE FROM temp.enqueue_staging;

-- name: stage_job
INSERT INTO temp.enqueue_staging
    (seq, id, user_id, provider, sku, size, size_system, priority, dedupe_key, size_key)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: mark_fresh
-- a fresh price answers a background or hot enqueue when no job for that key is active
UPDATE temp.enqueue_staging SET fresh = 1
WHERE priority < :manual
  AND NOT EXISTS (SELECT 1 FROM market_jobs j
                  WHERE j.dedupe_key = enqueue_staging.dedupe_key
                    AND j.status IN ('pending', 'running'))
  AND EXISTS (SELECT 1 FROM market_prices p
              WHERE p.provider = enqueue_staging.provider AND p.sku = enqueue_staging.sku
                AND p.size = coalesce(enqueue_staging.size_key, '')
                AND p.fetched_at > :fresh_after);

-- name: upsert_staged_jobs
INSERT INTO market_jobs
    (id, user_id, provider, sku, size, size_system, priority, status, dedupe_key, created_at)
SELECT id, user_id, provider, sku, size, size_system, priority, 'pending', dedupe_key, :now
FROM temp.enqueue_staging WHERE fresh = 0 ORDER BY seq
ON CONFLICT (dedupe_key) WHERE status IN ('pending', 'running')
DO UPDATE SET priority = max(market_jobs.priority, excluded.priority), updated_at = :now;

-- name: staged_results
SELECT s.seq, s.id AS proposed_id, s.dedupe_key, s.fresh, s.priority AS asked_priority,
       j.id, j.status, j.priority
FROM temp.enqueue_staging s
LEFT JOIN market_jobs j ON j.dedupe_key = s.dedupe_key AND j.status IN ('pending', 'running')
ORDER BY s.seq;

-- name: select_pending
-- walks market_jobs_pending: provider, then priority, then age
SELECT id, sku FROM market_jobs
WHERE status = 'pending' AND provider = :provider
  AND (next_attempt_at IS NULL OR next_attempt_at <= :now)
  AND priority >= :min_priority
ORDER BY priority DESC, created_at, rowid
LIMIT :limit;

-- name: claim_jobs
-- "+status" keeps the planner on the primary key: the status index would walk every pending job
UPDATE market_jobs SET status = 'running', started_at = :now, updated_at = :now,
                       instance_id = :instance
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = 'pending'
RETURNING *;

-- name: complete_answered
-- pending jobs whose price a fetch of the same product has just stored are done too
UPDATE market_jobs INDEXED BY market_jobs_active_key
SET status = 'completed', completed_at = :now, updated_at = :now,
    error_message = 'answered by a fetch of the same product'
WHERE dedupe_key IN (SELECT value FROM json_each(:keys))
  AND status IN ('pending', 'running') AND +status = 'pending';

-- name: job_by_id
SELECT * FROM market_jobs WHERE id = ?;

-- name: complete_jobs
-- the jobs a batch's calls answered, as one statement (:ids: a JSON array)
UPDATE market_jobs
SET status = 'completed', completed_at = :now, error_message = NULL, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = 'running';

-- name: fail_job
UPDATE market_jobs
SET status = 'failed', completed_at = :now, error_message = :error, updated_at = :now
WHERE id = :id AND status = 'running';

-- name: retry_job
UPDATE market_jobs
SET status = 'pending', started_at = NULL, retry_count = retry_count + 1,
    error_message = :error, next_attempt_at = :next_attempt_at, updated_at = :now
WHERE id = :id AND status = 'running';

-- name: defer_job
-- back to pending without spending a retry
UPDATE market_jobs
SET status = 'pending', started_at = NULL, next_attempt_at = :next_attempt_at,
    error_message = coalesce(:error, error_message), updated_at = :now
WHERE id = :id AND status = 'running';

-- name: rescue_stuck
-- this daemon's own (and unowned) jobs only, once it has an instance id: another daemon's
-- running jobs go back only when that daemon is dead (rescue_dead)
UPDATE market_jobs
SET status = 'pending', started_at = NULL, updated_at = :now,
    error_message = 'returned to pending: was running since ' || started_at
WHERE status = 'running' AND started_at < :before
  AND (:instance IS NULL OR instance_id IS NULL OR instance_id = :instance);

-- name: reset_failed
UPDATE market_jobs
SET status = 'pending', started_at = NULL, completed_at = NULL, retry_count = 0,
    next_attempt_at = NULL, updated_at = :now
WHERE status = 'failed' AND (:provider IS NULL OR provider = :provider)
  AND NOT EXISTS (SELECT 1 FROM market_jobs a
                  WHERE a.dedupe_key = market_jobs.dedupe_key
                    AND a.status IN ('pending', 'running'))
  AND id = (SELECT b.id FROM market_jobs b
            WHERE b.dedupe_key = market_jobs.dedupe_key AND b.status = 'failed'
            ORDER BY b.created_at DESC, b.id DESC LIMIT 1);

-- name: upsert_price
INSERT INTO market_prices
    (provider, sku, size, currency, lowest_ask, highest_bid, last_sale, fetched_at, extra)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (provider, sku, size) DO UPDATE SET
    currency = excluded.currency, lowest_ask = excluded.lowest_ask,
    highest_bid = excluded.highest_bid, last_sale = excluded.last_sale,
    fetched_at = excluded.fetched_at, extra = excluded.extra
WHERE excluded.fetched_at >= market_prices.fetched_at;

-- name: insert_price_history
INSERT INTO market_price_history
    (provider, sku, size, currency, lowest_ask, highest_bid, last_sale, fetched_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?);

-- name: ensure_budget
INSERT INTO market_budgets (provider, hour_window, rate_limit, used)
VALUES (:provider, :hour_window, :rate_limit, 0)
ON CONFLICT (provider, hour_window) DO UPDATE SET rate_limit = excluded.rate_limit;

-- name: spend_budget
INSERT INTO market_budgets (provider, hour_window, rate_limit, used)
VALUES (:provider, :hour_window, :rate_limit, :n)
ON CONFLICT (provider, hour_window) DO UPDATE SET used = used + :n;

-- name: insert_calls
-- :n calls at once (a batch's calls reserved ahead), each with an id of its own
WITH RECURSIVE k (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < :n)
INSERT INTO market_calls (provider, sent_at) SELECT :provider, :sent_at FROM k
RETURNING id;

-- name: release_calls
-- calls reserved ahead and never sent: they leave the log and the hour's count
DELETE FROM market_calls WHERE id IN (SELECT value FROM json_each(:ids));

-- name: unspend_budget
UPDATE market_budgets SET used = max(0, used - :n)
WHERE provider = :provider AND hour_window = :hour_window;

-- name: calls_since
-- start-up: every call of a provider inside its longest window (walks the provider's index)
SELECT id, sent_at FROM market_calls
WHERE provider = :provider AND id > :after_id AND sent_at > :since
ORDER BY id;

-- name: calls_after
-- before every call: what other processes recorded since this one last looked. Walks the
-- rowid range after :after_id (usually empty), not every call in the window
SELECT id, sent_at FROM market_calls NOT INDEXED
WHERE id > :after_id AND provider = :provider AND sent_at > :since
ORDER BY id;

-- name: wal_checkpoint
PRAGMA wal_checkpoint(PASSIVE);

-- name: wal_checkpoint_truncate
-- after a large write: the WAL file goes back to zero bytes (no reader may be mid-snapshot;
-- if one is, it is left as it is and the next checkpoint tries again)
PRAGMA wal_checkpoint(TRUNCATE);

-- name: prune_calls
DELETE FROM market_calls WHERE sent_at < :before;

-- name: budgets_for_hour
SELECT provider, hour_window, rate_limit, used FROM market_budgets
WHERE hour_window = :hour_window ORDER BY provider;

-- name: budgets_since
SELECT provider, hour_window, rate_limit, used FROM market_budgets
WHERE hour_window >= :since ORDER BY hour_window, provider;

-- name: insert_run
INSERT INTO market_job_runs (started_at, trigger, instance_id)
VALUES (:started_at, :trigger, :instance);

-- name: finish_run
UPDATE market_job_runs
SET finished_at = :finished_at, selected = :selected, succeeded = :succeeded,
    failed = :failed, deferred = :deferred, rescued = :rescued,
    duration_ms = :duration_ms, outcome = :outcome
WHERE id = :id;

-- name: insert_metrics
INSERT INTO market_provider_metrics
    (run_id, provider, batch_size, succeeded, failed, deferred, calls, rate_limited,
     duration_ms, created_at)
VALUES (:run_id, :provider, :batch_size, :succeeded, :failed, :deferred, :calls,
        :rate_limited, :duration_ms, :created_at);

-- name: recent_runs
SELECT * FROM market_job_runs ORDER BY id DESC LIMIT :limit;

-- name: recent_metrics
SELECT * FROM market_provider_metrics ORDER BY id DESC LIMIT :limit;

-- name: job_counts
SELECT provider, status, count(*) AS n FROM market_jobs GROUP BY provider, status;

-- name: list_jobs
SELECT * FROM market_jobs
WHERE (:status IS NULL OR status = :status) AND (:provider IS NULL OR provider = :provider)
  AND (:user_id IS NULL OR user_id = :user_id)
ORDER BY created_at DESC, rowid DESC
LIMIT :limit OFFSET :offset;

-- name: get_state
SELECT provider, paused_until, pause_reason, credential FROM provider_state;

-- name: set_pause
INSERT INTO provider_state (provider, paused_until, pause_reason, credential, updated_at)
VALUES (:provider, :paused_until, :reason, :credential, :now)
ON CONFLICT (provider) DO UPDATE SET paused_until = excluded.paused_until,
    pause_reason = excluded.pause_reason, credential = excluded.credential,
    updated_at = excluded.updated_at;

-- name: get_token
SELECT value, expires_at FROM provider_tokens WHERE provider = :provider AND kind = :kind;

-- name: put_token
INSERT INTO provider_tokens (provider, kind, value, expires_at, updated_at)
VALUES (:provider, :kind, :value, :expires_at, :now)
ON CONFLICT (provider, kind) DO UPDATE SET value = excluded.value,
    expires_at = excluded.expires_at, updated_at = excluded.updated_at;

-- name: get_catalog
SELECT product_id, title, brand, image_url, colourway, data, fetched_at FROM market_catalog
WHERE provider = :provider AND sku = :sku;

-- name: put_catalog
INSERT INTO market_catalog
    (provider, sku, product_id, title, brand, image_url, colourway, data, fetched_at)
VALUES (:provider, :sku, :product_id, :title, :brand, :image_url, :colourway, :data, :now)
ON CONFLICT (provider, sku) DO UPDATE SET product_id = excluded.product_id,
    title = excluded.title, brand = excluded.brand, image_url = excluded.image_url,
    colourway = excluded.colourway, data = excluded.data, fetched_at = excluded.fetched_at;

-- name: delete_catalog
DELETE FROM market_catalog WHERE provider = :provider AND sku = :sku;

-- name: applied_migrations
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?);

-- name: any_pending_due
-- a yes/no question: stops at the first due job instead of counting the backlog
SELECT EXISTS (SELECT 1 FROM market_jobs
               WHERE status = 'pending' AND provider = :provider AND priority >= :min_priority
                 AND (next_attempt_at IS NULL OR next_attempt_at <= :now));

-- name: remember_wanted
INSERT INTO market_wanted (provider, sku, size_key, size, size_system, asked_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (provider, sku, size_key) DO UPDATE SET asked_at = excluded.asked_at;

-- name: stale_wanted
-- keys users asked for since :asked_since whose price is older than :before, the units (SKUs
-- where one call prices every size, else keys) with the oldest price first, :units of them
WITH unit AS (
    SELECT CASE WHEN :per_sku THEN w.sku ELSE w.sku || '|' || w.size_key END AS unit,
           min(p.fetched_at) AS oldest
    FROM market_wanted w
    JOIN market_prices p ON p.provider = w.provider AND p.sku = w.sku AND p.size = w.size_key
    WHERE w.provider = :provider AND w.asked_at >= :asked_since
    GROUP BY 1
    HAVING min(p.fetched_at) < :before
    ORDER BY oldest
    LIMIT :units
)
SELECT w.sku, w.size, w.size_system FROM market_wanted w
JOIN unit ON unit.unit = CASE WHEN :per_sku THEN w.sku ELSE w.sku || '|' || w.size_key END
JOIN market_prices p ON p.provider = w.provider AND p.sku = w.sku AND p.size = w.size_key
WHERE w.provider = :provider AND w.asked_at >= :asked_since AND p.fetched_at < :before
ORDER BY unit.oldest, w.sku, w.size_key;
