-- Tally schema v3 (SQLite): locked delivery (SPEC D1–D11). Every row here is written by the
-- ledger writer in the transaction of the journal entry that caused it. Sealed product bytes
-- live in files under the node's data directory; the rows name them.

-- Products: what a merchant (the distributor) sells for a producer.
CREATE TABLE products (
    id                    BLOB    PRIMARY KEY,
    merchant              TEXT    NOT NULL,
    producer              TEXT    NOT NULL,
    title                 TEXT    NOT NULL,
    price_minor           INTEGER NOT NULL CHECK (price_minor > 0),
    currency              TEXT    NOT NULL,
    pay_to                BLOB    NOT NULL,
    licence               TEXT    NOT NULL,
    instructions          TEXT    NOT NULL,
    registration_template TEXT    NOT NULL,
    state                 TEXT    NOT NULL,
    content_key_wrap      BLOB    NOT NULL,
    client_key            TEXT    UNIQUE,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
) STRICT;
CREATE INDEX products_producer ON products (producer, created_at);

-- A product's sealed entries (the product file and instruction documents).
CREATE TABLE product_entries (
    product_id    BLOB    NOT NULL,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    sealed_len    INTEGER NOT NULL,
    sealed_sha256 TEXT    NOT NULL,
    plain_len     INTEGER NOT NULL,
    plain_sha256  TEXT    NOT NULL,
    file          TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (product_id, name)
) STRICT;

-- Sales: the reference file (D5), stored before the package is served. The package is
-- `header ‖ registration ‖ the product's sealed files ‖ trailer`.
CREATE TABLE sales (
    id              BLOB    PRIMARY KEY,
    product_id      BLOB    NOT NULL,
    buyer           TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    channel         TEXT    NOT NULL,
    address         TEXT    NOT NULL,
    reference       TEXT    NOT NULL UNIQUE,
    price_minor     INTEGER NOT NULL,
    currency        TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    header          BLOB    NOT NULL,
    registration    BLOB    NOT NULL,
    trailer         BLOB    NOT NULL,
    package_len     INTEGER NOT NULL,
    package_digest  TEXT    NOT NULL,
    key_fingerprint TEXT    NOT NULL,
    client_key      TEXT    UNIQUE,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    paid_at         INTEGER,
    released_at     INTEGER,
    overdue_at      INTEGER
) STRICT;
CREATE INDEX sales_buyer ON sales (buyer, state);
CREATE INDEX sales_product ON sales (product_id, created_at);
CREATE INDEX sales_open ON sales (state, created_at) WHERE overdue_at IS NULL;

-- Payments quoting a reference code, by any path; the money sits where `holder` says.
CREATE TABLE delivery_payments (
    id             BLOB    PRIMARY KEY,
    sale_id        BLOB,
    reference      TEXT    NOT NULL,
    path           TEXT    NOT NULL,
    amount_minor   INTEGER NOT NULL,
    currency       TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    transfer_id    BLOB    NOT NULL,
    payer          TEXT    NOT NULL,
    refund_to      BLOB    NOT NULL,
    holder         BLOB    NOT NULL,
    client_key     TEXT    NOT NULL UNIQUE,
    created_at     INTEGER NOT NULL,
    refund_id      BLOB
) STRICT;
CREATE INDEX delivery_payments_sale ON delivery_payments (sale_id);

-- External payment receivers (banks) allowed to post signed notifications.
CREATE TABLE payment_receivers (
    name       TEXT    PRIMARY KEY,
    account    BLOB    NOT NULL,
    kind       TEXT    NOT NULL,
    key        BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
