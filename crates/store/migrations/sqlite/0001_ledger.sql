-- Tally schema v1 (SQLite). Ids are 16-byte UUIDv7 blobs, money is INTEGER minor units,
-- times are INTEGER microseconds since the epoch. STRICT tables refuse values of the wrong type.

CREATE TABLE accounts (
    id              BLOB    PRIMARY KEY,
    owner           TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    flags           INTEGER NOT NULL,
    limit_minor     INTEGER NOT NULL CHECK (limit_minor >= 0),
    debits_pending  INTEGER NOT NULL CHECK (debits_pending >= 0),
    debits_posted   INTEGER NOT NULL CHECK (debits_posted >= 0),
    credits_pending INTEGER NOT NULL CHECK (credits_pending >= 0),
    credits_posted  INTEGER NOT NULL CHECK (credits_posted >= 0),
    created_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX accounts_owner ON accounts (owner);

CREATE TABLE transfers (
    id                   BLOB    PRIMARY KEY,
    kind                 TEXT    NOT NULL,
    state                TEXT    NOT NULL,
    debit_account        BLOB    NOT NULL REFERENCES accounts (id),
    credit_account       BLOB    NOT NULL REFERENCES accounts (id),
    amount_minor         INTEGER NOT NULL CHECK (amount_minor > 0),
    currency             TEXT    NOT NULL,
    pending_id           BLOB,
    pending_amount_minor INTEGER,
    expires_at           INTEGER,
    link_id              BLOB,
    rate_numerator       INTEGER,
    rate_denominator     INTEGER,
    memo                 TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    journal_seq          INTEGER NOT NULL
) STRICT;
CREATE INDEX transfers_debit ON transfers (debit_account, created_at);
CREATE INDEX transfers_credit ON transfers (credit_account, created_at);
CREATE INDEX transfers_expiry ON transfers (expires_at) WHERE state = 'pending';
-- A pending transfer is resolved by exactly one row: the database refuses a second.
CREATE UNIQUE INDEX transfers_one_resolution ON transfers (pending_id) WHERE pending_id IS NOT NULL;

CREATE TABLE journal (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    prev_hash BLOB    NOT NULL,
    hash      BLOB    NOT NULL,
    body      BLOB    NOT NULL,
    -- The client's key and a hash of its request: a retry returns this entry's event.
    idempotency_key TEXT UNIQUE,
    request_hash    BLOB
) STRICT;

CREATE TABLE journal_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB    NOT NULL
) STRICT;
INSERT INTO journal_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

CREATE TABLE checkpoints (
    seq       INTEGER PRIMARY KEY,
    hash      BLOB    NOT NULL,
    at        INTEGER NOT NULL,
    signer    BLOB    NOT NULL,
    signature BLOB    NOT NULL
) STRICT;

CREATE TABLE outbox (
    id              BLOB    PRIMARY KEY,
    dedup_key       TEXT    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL,
    address         TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    data            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
) STRICT;
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_address ON outbox (kind, address, created_at);

CREATE TABLE api_keys (
    id         BLOB    PRIMARY KEY,
    key_hash   BLOB    NOT NULL UNIQUE,
    role       TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    label      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
