-- Package format 3 (issue [11]): a product entry's record keeps the hash of its sealed bytes
-- that its sales' packages list: SHA-256 for entries sealed before (version 2 sales), BLAKE3
-- for entries sealed since (version 3 sales).
ALTER TABLE product_entries ALTER COLUMN sealed_sha256 DROP NOT NULL;
ALTER TABLE product_entries ADD COLUMN sealed_blake3 TEXT;
ALTER TABLE product_entries ADD CONSTRAINT product_entries_sealed_hash
    CHECK (sealed_sha256 IS NOT NULL OR sealed_blake3 IS NOT NULL);
