-- marketd: the whole schema (version 4). Timestamps are ISO-8601 UTC text with milliseconds
-- ('2026-11-28T15:00:00.000Z'), so they sort as text and the seed's queries translate directly.
-- Fresh databases get this file; older ones get sql/migrations/*.sql (a test keeps them equal).

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS market_jobs (
    id              TEXT PRIMARY KEY,
    user_id         TEXT,
    provider        TEXT NOT NULL CHECK (provider IN ('stockx', 'alias', 'ebay')),
    sku             TEXT NOT NULL,
    size            TEXT,
    size_system     TEXT NOT NULL DEFAULT 'UK' CHECK (size_system IN ('UK', 'US', 'EU')),
    priority        INTEGER NOT NULL DEFAULT 100,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    error_message   TEXT,
    retry_count     INTEGER NOT NULL DEFAULT 0,
    started_at      TEXT,
    completed_at    TEXT,
    dedupe_key      TEXT NOT NULL,             -- provider|sku|size
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT,                      -- backoff: not before this (NULL: now)
    updated_at      TEXT
    , instance_id   TEXT);                     -- the daemon that claimed it (market_instances)
-- at most one pending-or-running job per key
CREATE UNIQUE INDEX IF NOT EXISTS market_jobs_active_key
    ON market_jobs (dedupe_key) WHERE status IN ('pending', 'running');
-- a run's selection walks this index: its cost follows the batch, not the backlog
CREATE INDEX IF NOT EXISTS market_jobs_pending
    ON market_jobs (provider, priority DESC, created_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS market_jobs_running
    ON market_jobs (started_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS market_jobs_status ON market_jobs (status, provider);
CREATE INDEX IF NOT EXISTS market_jobs_created ON market_jobs (created_at);
-- the jobs of one user (/jobs?user_id=)
CREATE INDEX IF NOT EXISTS market_jobs_user ON market_jobs (user_id) WHERE user_id IS NOT NULL;
-- when a provider's next retry comes due: the jobs waiting out a backoff only
CREATE INDEX IF NOT EXISTS market_jobs_retry_due ON market_jobs (provider, next_attempt_at)
    WHERE status = 'pending' AND next_attempt_at IS NOT NULL;

-- one row per provider per clock hour; used counts calls, before each is sent
CREATE TABLE IF NOT EXISTS market_budgets (
    id          INTEGER PRIMARY KEY,
    provider    TEXT NOT NULL,
    hour_window TEXT NOT NULL,                 -- start of the hour
    rate_limit  INTEGER NOT NULL,
    used        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (provider, hour_window)
);

-- every HTTP request to a provider's API, recorded durably before it is sent
CREATE TABLE IF NOT EXISTS market_calls (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,    -- never reused, even after a prune
    provider TEXT NOT NULL,
    sent_at  REAL NOT NULL                     -- epoch seconds (rate-limit arithmetic)
);
CREATE INDEX IF NOT EXISTS market_calls_provider_sent ON market_calls (provider, sent_at);

CREATE TABLE IF NOT EXISTS market_job_runs (
    id          INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    trigger     TEXT NOT NULL,                 -- interval, manual, http, cli, startup
    selected    INTEGER NOT NULL DEFAULT 0,
    succeeded   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    deferred    INTEGER NOT NULL DEFAULT 0,
    rescued     INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER,
    outcome     TEXT                           -- ok, idle, partial, error
    , instance_id TEXT);                       -- the daemon that ran it
CREATE INDEX IF NOT EXISTS market_job_runs_started ON market_job_runs (started_at);

CREATE TABLE IF NOT EXISTS market_provider_metrics (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER REFERENCES market_job_runs (id),
    provider    TEXT NOT NULL,
    batch_size  INTEGER NOT NULL,
    succeeded   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    deferred    INTEGER NOT NULL DEFAULT 0,
    calls       INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,   -- 429s seen in this batch
    duration_ms INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS market_provider_metrics_run ON market_provider_metrics (run_id);
CREATE INDEX IF NOT EXISTS market_provider_metrics_created
    ON market_provider_metrics (created_at);

-- the latest price per (provider, sku, size); size '' for size-less products
CREATE TABLE IF NOT EXISTS market_prices (
    provider    TEXT NOT NULL,
    sku         TEXT NOT NULL,
    size        TEXT NOT NULL DEFAULT '',
    currency    TEXT NOT NULL,
    lowest_ask  INTEGER,                       -- minor units (pence, cents)
    highest_bid INTEGER,
    last_sale   INTEGER,
    fetched_at  TEXT NOT NULL, extra TEXT,
    PRIMARY KEY (provider, sku, size)
);
CREATE INDEX IF NOT EXISTS market_prices_sku ON market_prices (sku);

CREATE TABLE IF NOT EXISTS market_price_history (
    id          INTEGER PRIMARY KEY,
    provider    TEXT NOT NULL,
    sku         TEXT NOT NULL,
    size        TEXT NOT NULL DEFAULT '',
    currency    TEXT NOT NULL,
    lowest_ask  INTEGER,
    highest_bid INTEGER,
    last_sale   INTEGER,
    fetched_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS market_price_history_key
    ON market_price_history (provider, sku, size, fetched_at);

-- what a provider's catalog said about a SKU (ids, title, image, sizes): a refresh skips look-ups
CREATE TABLE IF NOT EXISTS market_catalog (
    provider   TEXT NOT NULL,
    sku        TEXT NOT NULL,
    product_id TEXT,
    title      TEXT,
    brand      TEXT,
    image_url  TEXT,
    data       TEXT NOT NULL DEFAULT '{}',     -- JSON: the provider's size data and more
    fetched_at TEXT NOT NULL, colourway TEXT,
    PRIMARY KEY (provider, sku)
);

-- the keys users asked for (a job at background priority or above that completed), so
-- that budget no queued job needs refreshes their oldest prices (scheduler.idle_refresh_seconds)
CREATE TABLE IF NOT EXISTS market_wanted (
    provider    TEXT NOT NULL,
    sku         TEXT NOT NULL,
    size_key    TEXT NOT NULL DEFAULT '',          -- market_prices.size: '10', 'EU 40', ''
    size        TEXT,
    size_system TEXT NOT NULL DEFAULT 'UK',
    asked_at    TEXT NOT NULL,                     -- the last completion of a user's job
    PRIMARY KEY (provider, sku, size_key)
);

-- a provider paused after 429 or refused credentials survives a restart
CREATE TABLE IF NOT EXISTS provider_state (
    provider     TEXT PRIMARY KEY,
    paused_until REAL,                         -- epoch seconds
    pause_reason TEXT,
    credential   TEXT,                         -- which credential to check, after 401/403
    updated_at   TEXT NOT NULL
);

-- OAuth tokens (access tokens cached across restarts, refresh tokens from `marketd auth`)
CREATE TABLE IF NOT EXISTS provider_tokens (
    provider   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    expires_at REAL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (provider, kind)
);

-- a small time series for the status page's charts (pruned)
CREATE TABLE IF NOT EXISTS market_queue_samples (
    sampled_at TEXT NOT NULL,
    provider   TEXT NOT NULL,
    pending    INTEGER NOT NULL,
    running    INTEGER NOT NULL,
    completed  INTEGER NOT NULL,
    failed     INTEGER NOT NULL,
    PRIMARY KEY (sampled_at, provider)
);

-- each daemon (migration 0004): its heartbeat and the providers whose batches it runs
CREATE TABLE IF NOT EXISTS market_instances (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    lanes        TEXT NOT NULL DEFAULT '[]'    -- JSON array: the providers it runs
);

-- which keys each user asked for (every enqueue naming a user_id): /prices?user_id=
CREATE TABLE IF NOT EXISTS market_user_keys (
    user_id    TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,                    -- provider|sku|size key, as market_prices
    asked_at   TEXT NOT NULL,
    PRIMARY KEY (user_id, dedupe_key)
);

-- price-change webhooks: a durable outbox, written with the changed price, sent later
CREATE TABLE IF NOT EXISTS market_webhook_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event           TEXT NOT NULL,                 -- price_changed
    body            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,                 -- also the lease of a delivery in flight
    last_error      TEXT,
    delivered_at    TEXT
);
CREATE INDEX IF NOT EXISTS market_webhook_outbox_due
    ON market_webhook_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS market_webhook_outbox_created ON market_webhook_outbox (created_at);
