-- Tally schema v3 (PostgreSQL): locked delivery (SPEC D1–D11). Every row here is written by the
-- ledger writer in the transaction of the journal entry that caused it. Sealed product bytes
-- live in files under the node's data directory; the rows name them.

-- Products: what a merchant (the distributor) sells for a producer.
CREATE TABLE products (
    id                    BYTEA    PRIMARY KEY,
    merchant              TEXT    NOT NULL,
    producer              TEXT    NOT NULL,
    title                 TEXT    NOT NULL,
    price_minor           BIGINT NOT NULL CHECK (price_minor > 0),
    currency              TEXT    NOT NULL,
    pay_to                BYTEA    NOT NULL,
    licence               TEXT    NOT NULL,
    instructions          TEXT    NOT NULL,
    registration_template TEXT    NOT NULL,
    state                 TEXT    NOT NULL,
    content_key_wrap      BYTEA    NOT NULL,
    client_key            TEXT    UNIQUE,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
CREATE INDEX products_producer ON products (producer, created_at);

-- A product's sealed entries (the product file and instruction documents).
CREATE TABLE product_entries (
    product_id    BYTEA    NOT NULL,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    sealed_len    BIGINT NOT NULL,
    sealed_sha256 TEXT    NOT NULL,
    plain_len     BIGINT NOT NULL,
    plain_sha256  TEXT    NOT NULL,
    file          TEXT    NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (product_id, name)
);

-- Sales: the reference file (D5), stored before the package is served. The package is
-- `header ‖ registration ‖ the product's sealed files ‖ trailer`.
CREATE TABLE sales (
    id              BYTEA    PRIMARY KEY,
    product_id      BYTEA    NOT NULL,
    buyer           TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    channel         TEXT    NOT NULL,
    address         TEXT    NOT NULL,
    reference       TEXT    NOT NULL UNIQUE,
    price_minor     BIGINT NOT NULL,
    currency        TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    header          BYTEA    NOT NULL,
    registration    BYTEA    NOT NULL,
    trailer         BYTEA    NOT NULL,
    package_len     BIGINT NOT NULL,
    package_digest  TEXT    NOT NULL,
    key_fingerprint TEXT    NOT NULL,
    client_key      TEXT    UNIQUE,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    paid_at         BIGINT,
    released_at     BIGINT,
    overdue_at      BIGINT
);
CREATE INDEX sales_buyer ON sales (buyer, state);
CREATE INDEX sales_product ON sales (product_id, created_at);
CREATE INDEX sales_open ON sales (state, created_at) WHERE overdue_at IS NULL;

-- Payments quoting a reference code, by any path; the money sits where `holder` says.
CREATE TABLE delivery_payments (
    id             BYTEA    PRIMARY KEY,
    sale_id        BYTEA,
    reference      TEXT    NOT NULL,
    path           TEXT    NOT NULL,
    amount_minor   BIGINT NOT NULL,
    currency       TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    transfer_id    BYTEA    NOT NULL,
    payer          TEXT    NOT NULL,
    refund_to      BYTEA    NOT NULL,
    holder         BYTEA    NOT NULL,
    client_key     TEXT    NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    refund_id      BYTEA
);
CREATE INDEX delivery_payments_sale ON delivery_payments (sale_id);

-- External payment receivers (banks) allowed to post signed notifications.
CREATE TABLE payment_receivers (
    name       TEXT    PRIMARY KEY,
    account    BYTEA    NOT NULL,
    kind       TEXT    NOT NULL,
    key        BYTEA    NOT NULL,
    updated_at BIGINT NOT NULL
);
