-- Tally schema v1 (PostgreSQL). Ids are 16-byte UUIDv7 blobs, money is BIGINT minor units,
-- times are BIGINT microseconds since the epoch.

CREATE TABLE accounts (
    id              BYTEA    PRIMARY KEY,
    owner           TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    flags           BIGINT NOT NULL,
    limit_minor     BIGINT NOT NULL CHECK (limit_minor >= 0),
    debits_pending  BIGINT NOT NULL CHECK (debits_pending >= 0),
    debits_posted   BIGINT NOT NULL CHECK (debits_posted >= 0),
    credits_pending BIGINT NOT NULL CHECK (credits_pending >= 0),
    credits_posted  BIGINT NOT NULL CHECK (credits_posted >= 0),
    created_at      BIGINT NOT NULL
);
CREATE INDEX accounts_owner ON accounts (owner);

CREATE TABLE transfers (
    id                   BYTEA    PRIMARY KEY,
    kind                 TEXT    NOT NULL,
    state                TEXT    NOT NULL,
    debit_account        BYTEA    NOT NULL REFERENCES accounts (id),
    credit_account       BYTEA    NOT NULL REFERENCES accounts (id),
    amount_minor         BIGINT NOT NULL CHECK (amount_minor > 0),
    currency             TEXT    NOT NULL,
    pending_id           BYTEA,
    pending_amount_minor BIGINT,
    expires_at           BIGINT,
    link_id              BYTEA,
    rate_numerator       BIGINT,
    rate_denominator     BIGINT,
    memo                 TEXT    NOT NULL,
    created_at           BIGINT NOT NULL,
    journal_seq          BIGINT NOT NULL
);
CREATE INDEX transfers_debit ON transfers (debit_account, created_at);
CREATE INDEX transfers_credit ON transfers (credit_account, created_at);
CREATE INDEX transfers_expiry ON transfers (expires_at) WHERE state = 'pending';
-- A pending transfer is resolved by exactly one row: the database refuses a second.
CREATE UNIQUE INDEX transfers_one_resolution ON transfers (pending_id) WHERE pending_id IS NOT NULL;

CREATE TABLE journal (
    seq       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    kind      TEXT    NOT NULL,
    prev_hash BYTEA    NOT NULL,
    hash      BYTEA    NOT NULL,
    body      BYTEA    NOT NULL,
    -- The client's key and a hash of its request: a retry returns this entry's event.
    idempotency_key TEXT UNIQUE,
    request_hash    BYTEA
);

CREATE TABLE journal_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA    NOT NULL
);
INSERT INTO journal_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE checkpoints (
    seq       BIGINT PRIMARY KEY,
    hash      BYTEA    NOT NULL,
    at        BIGINT NOT NULL,
    signer    BYTEA    NOT NULL,
    signature BYTEA    NOT NULL
);

CREATE TABLE outbox (
    id              BYTEA    PRIMARY KEY,
    dedup_key       TEXT    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL,
    address         TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    data            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_address ON outbox (kind, address, created_at);

CREATE TABLE api_keys (
    id         BYTEA    PRIMARY KEY,
    key_hash   BYTEA    NOT NULL UNIQUE,
    role       TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    label      TEXT    NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
