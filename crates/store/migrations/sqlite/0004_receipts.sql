-- Tally schema v4 (SQLite): two-party signed receipts (SPEC R1–R6). Every row here is written
-- by the ledger writer in the transaction of the journal entry that caused it.

-- Parties to receipts: a certificate from the node CA (role customer, merchant or manager),
-- with the party's BLS key for fair exchange, and the token it was issued with.
CREATE TABLE receipt_parties (
    name         TEXT    PRIMARY KEY,
    role         TEXT    NOT NULL,
    certificate  BLOB    NOT NULL,
    fingerprint  TEXT    NOT NULL UNIQUE,
    bls_key      BLOB,
    token_serial TEXT,
    created_at   INTEGER NOT NULL
) STRICT;

-- Tokens issued (personalised with the application key derived from the master key).
CREATE TABLE receipt_tokens (
    serial     TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    slots      INTEGER NOT NULL,
    client_key TEXT    UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;

-- Warrants: a party's certificate for the node's key, allowing proxy signing.
CREATE TABLE warrants (
    serial         TEXT    PRIMARY KEY,
    issuer         TEXT    NOT NULL,
    certificate    BLOB    NOT NULL,
    counterparties TEXT    NOT NULL,
    not_before     INTEGER NOT NULL,
    not_after      INTEGER NOT NULL,
    revoked_at     INTEGER,
    created_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX warrants_issuer ON warrants (issuer, created_at);

-- Receipts, from the offer to the acknowledged secure write.
CREATE TABLE receipts (
    transaction_id   INTEGER PRIMARY KEY,
    party_a          TEXT    NOT NULL,
    party_b          TEXT    NOT NULL,
    created_by       TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    receipt_time     INTEGER NOT NULL,
    record           TEXT    NOT NULL,
    content_hash     BLOB    NOT NULL,
    fingerprint_a    BLOB    NOT NULL,
    fingerprint_b    BLOB    NOT NULL,
    certificate_a    BLOB    NOT NULL,
    certificate_b    BLOB    NOT NULL,
    fair             INTEGER NOT NULL,
    warrant_a        TEXT,
    warrant_b        TEXT,
    escrow_a         BLOB,
    state            TEXT    NOT NULL,
    signature_a      BLOB,
    signature_b      BLOB,
    signature_server BLOB,
    ves_b            BLOB,
    token_serial     TEXT,
    challenge        BLOB,
    slot             INTEGER,
    receipt_number   INTEGER UNIQUE,
    secure_write     BLOB,
    write_attempts   INTEGER NOT NULL,
    digest           TEXT,
    journal_key      TEXT,
    acked_at         INTEGER,
    client_key       TEXT    UNIQUE,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX receipts_party_a ON receipts (party_a, created_at);
CREATE INDEX receipts_party_b ON receipts (party_b, created_at);
CREATE INDEX receipts_unacked ON receipts (token_serial, state);

-- The arbiter's standing decisions (fair exchange): one per transaction, never undone.
CREATE TABLE arbiter_decisions (
    transaction_id INTEGER PRIMARY KEY,
    decision       TEXT    NOT NULL,
    signature_a    BLOB,
    signature_b    BLOB,
    requested_by   TEXT    NOT NULL,
    decided_at     INTEGER NOT NULL
) STRICT;
