-- 0006: catalog enrichment and the providers' other amounts (the SQLite schema's 0008).
ALTER TABLE market_catalog ADD COLUMN IF NOT EXISTS colourway text;
ALTER TABLE market_prices ADD COLUMN IF NOT EXISTS extra text;
