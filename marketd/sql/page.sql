-- Named queries of the status page, /metrics and the queue samples (marketd/page.py and friends).
-- Loaded with queries.sql into one namespace: every name here starts with page_.

-- name: page_jobs
-- one page of the job table; view 'active' is pending, running and failed. Pending jobs come in
-- the scheduler's order (select_pending: priority, then age, then rowid). A page after the
-- first few starts after the last row of the one before (keyset: the after_* parameters, all
-- null for none), never at a deep OFFSET (the page keeps :offset small).
SELECT j.*, j.rowid AS row_id,
       CASE j.status WHEN 'running' THEN 0 WHEN 'pending' THEN 1 WHEN 'failed' THEN 2
       ELSE 3 END AS status_rank
FROM market_jobs j
WHERE (:view = 'all' OR (:view = 'active' AND j.status IN ('pending', 'running', 'failed'))
       OR j.status = :view)
  AND (:provider IS NULL OR j.provider = :provider)
  AND (:after_rank IS NULL
       OR (CASE j.status WHEN 'running' THEN 0 WHEN 'pending' THEN 1 WHEN 'failed' THEN 2
           ELSE 3 END, -j.priority, j.created_at, j.rowid)
          > (:after_rank, -:after_priority, :after_created_at, :after_row_id))
ORDER BY status_rank, j.priority DESC, j.created_at, j.rowid
LIMIT :limit OFFSET :offset;

-- name: page_pending_ahead
-- due pending jobs of one provider that the scheduler selects before the given one; two range
-- scans of market_jobs_pending, each stopping at :cap rows (the page says "cap or more")
SELECT (SELECT count(*) FROM (SELECT 1 FROM market_jobs
        WHERE status = 'pending' AND provider = :provider AND priority > :priority
          AND (next_attempt_at IS NULL OR next_attempt_at <= :now) LIMIT :cap))
     + (SELECT count(*) FROM (SELECT 1 FROM market_jobs
        WHERE status = 'pending' AND provider = :provider AND priority = :priority
          AND (created_at < :created_at OR (created_at = :created_at AND rowid < :row_id))
          AND (next_attempt_at IS NULL OR next_attempt_at <= :now) LIMIT :cap)) AS n;

-- name: page_jobs_count
-- how many jobs the view holds, counted up to :cap (the page says "cap or more")
SELECT count(*) AS n FROM (SELECT 1 FROM market_jobs j
WHERE (:view = 'all' OR (:view = 'active' AND j.status IN ('pending', 'running', 'failed'))
       OR j.status = :view)
  AND (:provider IS NULL OR j.provider = :provider) LIMIT :cap);

-- name: page_pending_count
-- what /enqueue's cap (scheduler.max_pending_jobs) counts; market_jobs_status covers it
SELECT count(*) AS n FROM market_jobs WHERE status = 'pending';

-- name: page_insert_sample
INSERT OR REPLACE INTO market_queue_samples
    (sampled_at, provider, pending, running, completed, failed)
VALUES (:sampled_at, :provider, :pending, :running, :completed, :failed);

-- name: page_prune_samples
DELETE FROM market_queue_samples WHERE sampled_at < :before;

-- name: page_samples_since
SELECT sampled_at, provider, pending, running, completed, failed FROM market_queue_samples
WHERE sampled_at >= :since ORDER BY sampled_at, provider;

-- name: page_price_ages
-- per provider: how many prices, the oldest and the newest fetch
SELECT provider, count(*) AS n, min(fetched_at) AS oldest, max(fetched_at) AS newest
FROM market_prices GROUP BY provider ORDER BY provider;

-- name: page_run_totals
SELECT count(*) AS n, coalesce(sum(duration_ms), 0) AS total_ms
FROM market_job_runs WHERE duration_ms IS NOT NULL;

-- name: page_run_buckets
-- cumulative counts of run durations for the /metrics histogram (bounds in seconds)
WITH b(le) AS (VALUES (0.1), (0.5), (1.0), (5.0), (15.0), (60.0), (300.0), (900.0))
SELECT b.le AS le,
       (SELECT count(*) FROM market_job_runs r
        WHERE r.duration_ms IS NOT NULL AND r.duration_ms <= b.le * 1000) AS n
FROM b ORDER BY b.le;
