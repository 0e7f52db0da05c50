-- 0007: price-change webhooks through a durable outbox. A row is written in the transaction
-- that stores a changed price, and POSTed later by the daemon's sender (at least once, with
-- backoff, across restarts); body is the exact JSON that is signed and sent.
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
