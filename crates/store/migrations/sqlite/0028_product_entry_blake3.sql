-- Package format 3 (issue [11]): a product entry's record keeps the hash of its sealed bytes
-- that its sales' packages list: SHA-256 for entries sealed before (version 2 sales), BLAKE3
-- for entries sealed since (version 3 sales). SQLite cannot drop a NOT NULL, so the table is
-- rebuilt (it has no foreign keys, indexes or triggers besides its primary key).
CREATE TABLE product_entries_v3 (
    product_id    BLOB    NOT NULL,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    sealed_len    INTEGER NOT NULL,
    sealed_sha256 TEXT,
    plain_len     INTEGER NOT NULL,
    plain_sha256  TEXT    NOT NULL,
    file          TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    sealed_blake3 TEXT,
    PRIMARY KEY (product_id, name),
    CHECK (sealed_sha256 IS NOT NULL OR sealed_blake3 IS NOT NULL)
) STRICT;
INSERT INTO product_entries_v3 (product_id, name, kind, sealed_len, sealed_sha256, plain_len,
    plain_sha256, file, created_at, sealed_blake3)
    SELECT product_id, name, kind, sealed_len, sealed_sha256, plain_len, plain_sha256, file,
           created_at, NULL
    FROM product_entries;
DROP TABLE product_entries;
ALTER TABLE product_entries_v3 RENAME TO product_entries;
