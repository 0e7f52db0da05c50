-- Named queries of the PostgreSQL store (marketd.store.postgres): each block starts with
-- "-- name: NAME" and runs as one statement. Parameters are written :name (lower case) and
-- become $1, $2, ... when loaded; blocks written with $n take positional rows (executemany).
-- Times are bound as timestamptz by the store from its own clock, never NOW(), so every
-- daemon and the tests' fake clock agree.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL
);

-- name: migrate_lock
SELECT pg_advisory_xact_lock(hashtext('marketd-migrate'));

-- name: migrations_table_exists
SELECT to_regclass('schema_migrations') IS NOT NULL;

-- name: applied_migrations
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3);

-- name: enqueue_jobs
-- one batch, all or nothing: a key given twice is one job (the first entry's, at the highest
-- priority asked); a background or hot entry whose price is fresh and whose key has no active
-- job is answered fresh; the partial unique index dedupes against every daemon's jobs
WITH s AS (
    SELECT * FROM unnest(:ids::uuid[], :user_ids::text[], :providers::text[], :skus::text[],
                         :sizes::text[], :size_systems::text[], :priorities::integer[],
                         :dedupe_keys::text[], :size_keys::text[])
        WITH ORDINALITY AS s (id, user_id, provider, sku, size, size_system, priority,
                              dedupe_key, size_key, seq)
),
f AS (
    SELECT s.*,
           (:fresh_after::timestamptz IS NOT NULL AND s.priority < :manual::integer
            AND NOT EXISTS (SELECT 1 FROM market_jobs j
                            WHERE j.dedupe_key = s.dedupe_key
                              AND j.status IN ('pending', 'running'))
            AND EXISTS (SELECT 1 FROM market_prices p
                        WHERE p.provider = s.provider AND p.sku = s.sku
                          AND p.size = coalesce(s.size_key, '')
                          AND p.fetched_at > :fresh_after::timestamptz)) AS fresh
    FROM s
),
k AS (
    SELECT DISTINCT ON (dedupe_key) id, user_id, provider, sku, size, size_system,
           max(priority) OVER (PARTITION BY dedupe_key) AS priority, dedupe_key, seq
    FROM f WHERE NOT fresh
    ORDER BY dedupe_key, seq
),
ins AS (
    INSERT INTO market_jobs
        (id, user_id, provider, sku, size, size_system, priority, status, dedupe_key, created_at)
    SELECT id, user_id, provider, sku, size, size_system, priority, 'pending', dedupe_key,
           :now::timestamptz
    FROM k ORDER BY seq
    ON CONFLICT (dedupe_key) WHERE status IN ('pending', 'running')
    DO UPDATE SET priority = greatest(market_jobs.priority, excluded.priority),
                  updated_at = :now::timestamptz
    RETURNING id, dedupe_key, status, priority
)
SELECT f.seq, f.id AS proposed_id, f.dedupe_key, f.fresh, f.priority AS asked_priority,
       ins.id, ins.status::text AS status, ins.priority
FROM f LEFT JOIN ins ON ins.dedupe_key = f.dedupe_key AND NOT f.fresh
ORDER BY f.seq;

-- name: select_pending
-- walks market_jobs_pending; rows another daemon is claiming are skipped, not waited for
SELECT id, sku FROM market_jobs
WHERE status = 'pending' AND provider = :provider::text
  AND (next_attempt_at IS NULL OR next_attempt_at <= :now::timestamptz)
  AND priority >= :min_priority::integer
ORDER BY priority DESC, created_at, row_id
LIMIT :limit::integer
FOR UPDATE SKIP LOCKED;

-- name: claim_jobs
UPDATE market_jobs SET status = 'running', started_at = :now::timestamptz,
                       updated_at = :now::timestamptz, instance_id = :instance::uuid
WHERE id = ANY(:ids::uuid[]) AND status = 'pending'
RETURNING *;

-- name: complete_answered
-- pending jobs whose price a fetch of the same product has just stored are done too
UPDATE market_jobs
SET status = 'completed', completed_at = :now::timestamptz, updated_at = :now::timestamptz,
    error_message = 'answered by a fetch of the same product'
WHERE dedupe_key = ANY(:keys::text[]) AND status = 'pending';

-- name: job_by_id
SELECT * FROM market_jobs WHERE id = :id::uuid;

-- name: complete_jobs
-- the jobs a batch's calls answered, as one statement
UPDATE market_jobs
SET status = 'completed', completed_at = :now::timestamptz, error_message = NULL,
    updated_at = :now::timestamptz
WHERE id = ANY(:ids::uuid[]) AND status = 'running';

-- name: fail_job
UPDATE market_jobs
SET status = 'failed', completed_at = :now::timestamptz, error_message = :error::text,
    updated_at = :now::timestamptz
WHERE id = :id::uuid AND status = 'running';

-- name: retry_job
UPDATE market_jobs
SET status = 'pending', started_at = NULL, retry_count = retry_count + 1,
    error_message = :error::text, next_attempt_at = :next_attempt_at::timestamptz,
    updated_at = :now::timestamptz
WHERE id = :id::uuid AND status = 'running';

-- name: defer_job
-- back to pending without spending a retry
UPDATE market_jobs
SET status = 'pending', started_at = NULL, next_attempt_at = :next_attempt_at::timestamptz,
    error_message = coalesce(:error::text, error_message), updated_at = :now::timestamptz
WHERE id = :id::uuid AND status = 'running';

-- name: rescue_stuck
-- every running job when before is NULL; once the daemon has an instance id, only its own (and
-- unowned) jobs: another daemon's go back only when that daemon is dead (rescue_dead)
UPDATE market_jobs
SET status = 'pending', started_at = NULL, updated_at = :now::timestamptz,
    error_message = 'returned to pending: was running since '
                    || to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
WHERE status = 'running'
  AND (:before::timestamptz IS NULL OR started_at < :before::timestamptz)
  AND (:instance::uuid IS NULL OR instance_id IS NULL OR instance_id = :instance::uuid);

-- name: reset_failed
UPDATE market_jobs
SET status = 'pending', started_at = NULL, completed_at = NULL, retry_count = 0,
    next_attempt_at = NULL, updated_at = :now::timestamptz
WHERE status = 'failed' AND (:provider::text IS NULL OR provider = :provider::text)
  AND NOT EXISTS (SELECT 1 FROM market_jobs a
                  WHERE a.dedupe_key = market_jobs.dedupe_key
                    AND a.status IN ('pending', 'running'))
  AND id = (SELECT b.id FROM market_jobs b
            WHERE b.dedupe_key = market_jobs.dedupe_key AND b.status = 'failed'
            ORDER BY b.created_at DESC, b.row_id DESC LIMIT 1)
RETURNING provider;

-- name: upsert_prices
-- a write's prices as one statement, one row per key (the caller keeps each key's newest:
-- ON CONFLICT may not touch a row twice in one statement)
INSERT INTO market_prices
    (provider, sku, size, currency, lowest_ask, highest_bid, last_sale, fetched_at, extra)
SELECT * FROM unnest(:providers::text[], :skus::text[], :sizes::text[], :currencies::text[],
                     :asks::bigint[], :bids::bigint[], :lasts::bigint[],
                     :fetched::timestamptz[], :extras::text[])
ON CONFLICT (provider, sku, size) DO UPDATE SET
    currency = excluded.currency, lowest_ask = excluded.lowest_ask,
    highest_bid = excluded.highest_bid, last_sale = excluded.last_sale,
    fetched_at = excluded.fetched_at, extra = excluded.extra
WHERE excluded.fetched_at >= market_prices.fetched_at;

-- name: insert_price_history
-- a write's changed prices as one statement
INSERT INTO market_price_history
    (provider, sku, size, currency, lowest_ask, highest_bid, last_sale, fetched_at)
SELECT * FROM unnest(:providers::text[], :skus::text[], :sizes::text[], :currencies::text[],
                     :asks::bigint[], :bids::bigint[], :lasts::bigint[],
                     :fetched::timestamptz[]);

-- name: remember_wanted
INSERT INTO market_wanted (provider, sku, size_key, size, size_system, asked_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (provider, sku, size_key) DO UPDATE SET asked_at = excluded.asked_at;

-- name: ensure_budget
INSERT INTO market_budgets (provider, hour_window, rate_limit, used)
VALUES (:provider::text, :hour_window::timestamptz, :rate_limit::integer, 0)
ON CONFLICT (provider, hour_window) DO UPDATE SET rate_limit = excluded.rate_limit;

-- name: budget_lock
-- serialises every daemon's reservations for one provider until the transaction ends
SELECT pg_advisory_xact_lock(hashtext('marketd-budget:' || :provider::text));

-- name: spend_budget
INSERT INTO market_budgets (provider, hour_window, rate_limit, used)
VALUES (:provider::text, :hour_window::timestamptz, :rate_limit::integer, :n::integer)
ON CONFLICT (provider, hour_window) DO UPDATE SET used = market_budgets.used + :n::integer;

-- name: insert_calls
INSERT INTO market_calls (provider, sent_at)
SELECT :provider::text, :sent_at::float8 FROM generate_series(1, :n::integer)
RETURNING id;

-- name: release_calls
-- calls reserved ahead and never sent: they leave the log and the hour's count
DELETE FROM market_calls WHERE id = ANY(:ids::bigint[]);

-- name: unspend_budget
UPDATE market_budgets SET used = greatest(0, used - :n::integer)
WHERE provider = :provider::text AND hour_window = :hour_window::timestamptz;

-- name: calls_since
SELECT id, sent_at FROM market_calls
WHERE provider = :provider::text AND id > :after_id::bigint AND sent_at > :since::float8
ORDER BY id;

-- name: prune_calls
DELETE FROM market_calls WHERE sent_at < :before::float8;

-- name: budgets_for_hour
SELECT provider, hour_window, rate_limit, used FROM market_budgets
WHERE hour_window = :hour_window::timestamptz ORDER BY provider;

-- name: budgets_since
SELECT provider, hour_window, rate_limit, used FROM market_budgets
WHERE hour_window >= :since::timestamptz ORDER BY hour_window, provider;

-- name: insert_run
INSERT INTO market_job_runs (started_at, trigger, instance_id)
VALUES (:started_at::timestamptz, :trigger::text, :instance::uuid)
RETURNING id;

-- name: finish_run
UPDATE market_job_runs
SET finished_at = :finished_at::timestamptz, selected = :selected::integer,
    succeeded = :succeeded::integer, failed = :failed::integer, deferred = :deferred::integer,
    rescued = :rescued::integer, duration_ms = :duration_ms::integer, outcome = :outcome::text
WHERE id = :id::bigint;

-- name: insert_metrics
INSERT INTO market_provider_metrics
    (run_id, provider, batch_size, succeeded, failed, deferred, calls, rate_limited,
     duration_ms, created_at)
VALUES (:run_id::bigint, :provider::text, :batch_size::integer, :succeeded::integer,
        :failed::integer, :deferred::integer, :calls::integer, :rate_limited::integer,
        :duration_ms::integer, :created_at::timestamptz);

-- name: recent_runs
SELECT * FROM market_job_runs ORDER BY id DESC LIMIT :limit::integer;

-- name: recent_metrics
SELECT * FROM market_provider_metrics ORDER BY id DESC LIMIT :limit::integer;

-- name: job_counts
SELECT provider, status::text AS status, count(*) AS n FROM market_jobs
GROUP BY provider, status;

-- name: list_jobs
SELECT * FROM market_jobs
WHERE (:status::text IS NULL OR status::text = :status::text)
  AND (:provider::text IS NULL OR provider = :provider::text)
  AND (:user_id::text IS NULL OR user_id = :user_id::text)
ORDER BY created_at DESC, row_id DESC
LIMIT :limit::integer OFFSET :offset::integer;

-- name: get_state
SELECT provider, paused_until, pause_reason, credential FROM provider_state;

-- name: set_pause
INSERT INTO provider_state (provider, paused_until, pause_reason, credential, updated_at)
VALUES (:provider::text, :paused_until::float8, :reason::text, :credential::text,
        :now::timestamptz)
ON CONFLICT (provider) DO UPDATE SET paused_until = excluded.paused_until,
    pause_reason = excluded.pause_reason, credential = excluded.credential,
    updated_at = excluded.updated_at;

-- name: get_token
SELECT value, expires_at FROM provider_tokens
WHERE provider = :provider::text AND kind = :kind::text;

-- name: put_token
INSERT INTO provider_tokens (provider, kind, value, expires_at, updated_at)
VALUES (:provider::text, :kind::text, :value::text, :expires_at::float8, :now::timestamptz)
ON CONFLICT (provider, kind) DO UPDATE SET value = excluded.value,
    expires_at = excluded.expires_at, updated_at = excluded.updated_at;

-- name: get_catalog
SELECT product_id, title, brand, image_url, colourway, data::text AS data, fetched_at
FROM market_catalog
WHERE provider = :provider::text AND sku = :sku::text;

-- name: put_catalog
INSERT INTO market_catalog
    (provider, sku, product_id, title, brand, image_url, colourway, data, fetched_at)
VALUES (:provider::text, :sku::text, :product_id::text, :title::text, :brand::text,
        :image_url::text, :colourway::text, :data::text::jsonb, :now::timestamptz)
ON CONFLICT (provider, sku) DO UPDATE SET product_id = excluded.product_id,
    title = excluded.title, brand = excluded.brand, image_url = excluded.image_url,
    colourway = excluded.colourway, data = excluded.data, fetched_at = excluded.fetched_at;

-- name: delete_catalog
DELETE FROM market_catalog WHERE provider = :provider::text AND sku = :sku::text;

-- name: any_pending_due
SELECT EXISTS (SELECT 1 FROM market_jobs
               WHERE status = 'pending' AND provider = :provider::text
                 AND priority >= :min_priority::integer
                 AND (next_attempt_at IS NULL OR next_attempt_at <= :now::timestamptz));

-- name: stale_wanted
-- keys users asked for since asked_since whose price is older than before, the units (SKUs
-- where one call prices every size, else keys) with the oldest price first, units of them
WITH unit AS (
    SELECT CASE WHEN :per_sku::boolean THEN w.sku ELSE w.sku || '|' || w.size_key END AS unit,
           min(p.fetched_at) AS oldest
    FROM market_wanted w
    JOIN market_prices p ON p.provider = w.provider AND p.sku = w.sku AND p.size = w.size_key
    WHERE w.provider = :provider::text AND w.asked_at >= :asked_since::timestamptz
    GROUP BY 1
    HAVING min(p.fetched_at) < :before::timestamptz
    ORDER BY oldest
    LIMIT :units::integer
)
SELECT w.sku, w.size, w.size_system FROM market_wanted w
JOIN unit ON unit.unit = CASE WHEN :per_sku::boolean THEN w.sku
                              ELSE w.sku || '|' || w.size_key END
JOIN market_prices p ON p.provider = w.provider AND p.sku = w.sku AND p.size = w.size_key
WHERE w.provider = :provider::text AND w.asked_at >= :asked_since::timestamptz
  AND p.fetched_at < :before::timestamptz
ORDER BY unit.oldest, w.sku, w.size_key;

-- ---- the status page and /metrics ----------------------------------------------------------

-- name: page_jobs
-- keyset after the first few pages (the after_* parameters, all null for none)
SELECT j.*, CASE j.status WHEN 'running' THEN 0 WHEN 'pending' THEN 1 WHEN 'failed' THEN 2
            ELSE 3 END AS status_rank
FROM market_jobs j
WHERE (:view::text = 'all'
       OR (:view::text = 'active' AND j.status IN ('pending', 'running', 'failed'))
       OR j.status::text = :view::text)
  AND (:provider::text IS NULL OR j.provider = :provider::text)
  AND (:after_rank::integer IS NULL
       OR (CASE j.status WHEN 'running' THEN 0 WHEN 'pending' THEN 1 WHEN 'failed' THEN 2
           ELSE 3 END, -j.priority, j.created_at, j.row_id)
          > (:after_rank::integer, -:after_priority::integer,
             :after_created_at::timestamptz, :after_row_id::bigint))
ORDER BY status_rank, j.priority DESC, j.created_at, j.row_id
LIMIT :limit::integer OFFSET :offset::integer;

-- name: page_jobs_count
-- counted up to :cap
SELECT count(*) AS n FROM (SELECT 1 FROM market_jobs j
WHERE (:view::text = 'all'
       OR (:view::text = 'active' AND j.status IN ('pending', 'running', 'failed'))
       OR j.status::text = :view::text)
  AND (:provider::text IS NULL OR j.provider = :provider::text) LIMIT :cap::integer) c;

-- name: page_pending_ahead
-- each half counted up to :cap
SELECT (SELECT count(*) FROM (SELECT 1 FROM market_jobs
        WHERE status = 'pending' AND provider = :provider::text
          AND priority > :priority::integer
          AND (next_attempt_at IS NULL OR next_attempt_at <= :now::timestamptz)
        LIMIT :cap::integer) a)
     + (SELECT count(*) FROM (SELECT 1 FROM market_jobs
        WHERE status = 'pending' AND provider = :provider::text
          AND priority = :priority::integer
          AND (created_at < :created_at::timestamptz
               OR (created_at = :created_at::timestamptz AND row_id < :row_id::bigint))
          AND (next_attempt_at IS NULL OR next_attempt_at <= :now::timestamptz)
        LIMIT :cap::integer) b) AS n;

-- name: page_pending_count
SELECT count(*) AS n FROM market_jobs WHERE status = 'pending';

-- name: page_insert_sample
INSERT INTO market_queue_samples (sampled_at, provider, pending, running, completed, failed)
VALUES (:sampled_at::timestamptz, :provider::text, :pending::integer, :running::integer,
        :completed::integer, :failed::integer)
ON CONFLICT (sampled_at, provider) DO UPDATE SET pending = excluded.pending,
    running = excluded.running, completed = excluded.completed, failed = excluded.failed;

-- name: page_prune_samples
DELETE FROM market_queue_samples WHERE sampled_at < :before::timestamptz;

-- name: page_samples_since
SELECT sampled_at, provider, pending, running, completed, failed FROM market_queue_samples
WHERE sampled_at >= :since::timestamptz ORDER BY sampled_at, provider;

-- name: page_price_ages
SELECT provider, count(*) AS n, min(fetched_at) AS oldest, max(fetched_at) AS newest
FROM market_prices GROUP BY provider ORDER BY provider;

-- name: page_run_totals
SELECT count(*) AS n, coalesce(sum(duration_ms), 0)::float8 AS total_ms
FROM market_job_runs WHERE duration_ms IS NOT NULL;

-- name: page_run_buckets
WITH b(le) AS (VALUES (0.1::float8), (0.5), (1.0), (5.0), (15.0), (60.0), (300.0), (900.0))
SELECT b.le AS le,
       (SELECT count(*) FROM market_job_runs r
        WHERE r.duration_ms IS NOT NULL AND r.duration_ms <= b.le * 1000) AS n
FROM b ORDER BY b.le;

-- name: ping
SELECT 1;
