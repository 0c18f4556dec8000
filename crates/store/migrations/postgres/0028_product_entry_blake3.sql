-- The BLAKE3 of a product entry's sealed bytes (issue [11]): what a version 3 package lists.
-- Entries sealed before have none, and their sales keep writing version 2 packages.
ALTER TABLE product_entries ADD COLUMN sealed_blake3 TEXT;
