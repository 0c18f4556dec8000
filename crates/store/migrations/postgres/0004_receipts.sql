-- Tally schema v4 (PostgreSQL): two-party signed receipts (SPEC R1–R6). Every row here is written
-- by the ledger writer in the transaction of the journal entry that caused it.

-- Parties to receipts: a certificate from the node CA (role customer, merchant or manager),
-- with the party's BLS key for fair exchange, and the token it was issued with.
CREATE TABLE receipt_parties (
    name         TEXT    PRIMARY KEY,
    role         TEXT    NOT NULL,
    certificate  BYTEA   NOT NULL,
    fingerprint  TEXT    NOT NULL UNIQUE,
    bls_key      BYTEA,
    token_serial TEXT,
    created_at   BIGINT  NOT NULL
);

-- Tokens issued (personalised with the application key derived from the master key).
CREATE TABLE receipt_tokens (
    serial     TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    slots      BIGINT  NOT NULL,
    client_key TEXT    UNIQUE,
    created_at BIGINT  NOT NULL
);

-- Warrants: a party's certificate for the node's key, allowing proxy signing.
CREATE TABLE warrants (
    serial         TEXT    PRIMARY KEY,
    issuer         TEXT    NOT NULL,
    certificate    BYTEA   NOT NULL,
    counterparties TEXT    NOT NULL,
    not_before     BIGINT  NOT NULL,
    not_after      BIGINT  NOT NULL,
    revoked_at     BIGINT,
    created_at     BIGINT  NOT NULL
);
CREATE INDEX warrants_issuer ON warrants (issuer, created_at);

-- Receipts, from the offer to the acknowledged secure write.
CREATE TABLE receipts (
    transaction_id   BIGINT  PRIMARY KEY,
    party_a          TEXT    NOT NULL,
    party_b          TEXT    NOT NULL,
    created_by       TEXT    NOT NULL,
    version          BIGINT  NOT NULL,
    receipt_time     BIGINT  NOT NULL,
    record           TEXT    NOT NULL,
    content_hash     BYTEA   NOT NULL,
    fingerprint_a    BYTEA   NOT NULL,
    fingerprint_b    BYTEA   NOT NULL,
    certificate_a    BYTEA   NOT NULL,
    certificate_b    BYTEA   NOT NULL,
    fair             BIGINT  NOT NULL,
    warrant_a        TEXT,
    warrant_b        TEXT,
    escrow_a         BYTEA,
    state            TEXT    NOT NULL,
    signature_a      BYTEA,
    signature_b      BYTEA,
    signature_server BYTEA,
    ves_b            BYTEA,
    token_serial     TEXT,
    challenge        BYTEA,
    slot             BIGINT,
    receipt_number   BIGINT  UNIQUE,
    secure_write     BYTEA,
    write_attempts   BIGINT  NOT NULL,
    digest           TEXT,
    journal_key      TEXT,
    acked_at         BIGINT,
    client_key       TEXT    UNIQUE,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
CREATE INDEX receipts_party_a ON receipts (party_a, created_at);
CREATE INDEX receipts_party_b ON receipts (party_b, created_at);
CREATE INDEX receipts_unacked ON receipts (token_serial, state);

-- The arbiter's standing decisions (fair exchange): one per transaction, never undone.
CREATE TABLE arbiter_decisions (
    transaction_id BIGINT  PRIMARY KEY,
    decision       TEXT    NOT NULL,
    signature_a    BYTEA,
    signature_b    BYTEA,
    requested_by   TEXT    NOT NULL,
    decided_at     BIGINT  NOT NULL
);
