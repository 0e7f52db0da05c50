-- 0008: catalog enrichment and the providers' other amounts: a product's colourway beside
-- its title, brand and image; a price's other amounts (StockX's flexLowestAskAmount,
-- earnMoreAmount, sellFasterAmount) as JSON in minor units beside the lowest ask.
ALTER TABLE market_catalog ADD COLUMN colourway TEXT;
ALTER TABLE market_prices ADD COLUMN extra TEXT;
