-- 0002: market_calls ids are never reused. Processes sync their sliding logs by "ids after the
-- last one I saw"; with plain rowids an emptied (pruned) table restarted at 1 and new calls
-- went unseen.
CREATE TABLE market_calls_v2 (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,    -- never reused, even after a prune
    provider TEXT NOT NULL,
    sent_at  REAL NOT NULL                     -- epoch seconds (rate-limit arithmetic)
);
INSERT INTO market_calls_v2 (id, provider, sent_at) SELECT id, provider, sent_at FROM market_calls;
DROP TABLE market_calls;
ALTER TABLE market_calls_v2 RENAME TO market_calls;
CREATE INDEX IF NOT EXISTS market_calls_provider_sent ON market_calls (provider, sent_at);
