-- Batches of transfer events (issue [10]): the fields TigerBeetle users rely on.
-- Zero and NULL are "none" and cost no bytes in a row; transfers made before keep them.
ALTER TABLE transfers ADD COLUMN flags BIGINT NOT NULL DEFAULT 0;
ALTER TABLE transfers ADD COLUMN user_data_128 BYTEA;
ALTER TABLE transfers ADD COLUMN user_data_64 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE transfers ADD COLUMN user_data_32 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE transfers ADD COLUMN code BIGINT NOT NULL DEFAULT 0;
-- The latest transfer time in the ledger, so imported events can be held to come after it
-- without a scan of the transfers (the writer moves it with the journal head).
ALTER TABLE journal_head ADD COLUMN transfers_at BIGINT NOT NULL DEFAULT 0;
UPDATE journal_head SET transfers_at = COALESCE((SELECT MAX(created_at) FROM transfers), 0);
