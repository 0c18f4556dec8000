-- Tally schema v2 (PostgreSQL): out-of-band authentication (SPEC A1–A7). Every row here is
-- written by the ledger writer in the transaction of the journal entry that caused it.

-- The subscriber directory: a user and, for payments with contract, the stored account.
CREATE TABLE subscribers (
    user_id          TEXT    PRIMARY KEY,
    contract_account BYTEA,
    created_at       BIGINT NOT NULL
);

-- Second-channel addresses, unique across users; usable once verified.
CREATE TABLE subscriber_addresses (
    id          BYTEA    PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    address     TEXT    NOT NULL,
    verified_at BIGINT,
    created_at  BIGINT NOT NULL,
    UNIQUE (channel, address)
);
CREATE INDEX subscriber_addresses_user ON subscriber_addresses (user_id, created_at);

-- Sessions. `id` is the unguessable session number; the code itself is never stored.
CREATE TABLE oob_sessions (
    id          BYTEA    PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    opened_by   TEXT    NOT NULL,
    application TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    attempts    BIGINT NOT NULL,
    session     TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    result      TEXT,
    channel     TEXT    NOT NULL,
    address     TEXT    NOT NULL,
    client_key  TEXT    UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX oob_sessions_user ON oob_sessions (user_id, created_at);
CREATE INDEX oob_sessions_address ON oob_sessions (channel, address, created_at);

-- Access tokens granted by a login session, stored by hash.
CREATE TABLE oob_tokens (
    token_hash BYTEA    PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    session_id BYTEA    NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Certificates (node-signed records) of verified sessions, kept for both parties.
CREATE TABLE certificates (
    id         BYTEA    PRIMARY KEY,
    session_id BYTEA    NOT NULL,
    user_id    TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX certificates_user ON certificates (user_id, created_at);

-- Registered mail and offers.
CREATE TABLE mailbox (
    id           BYTEA    PRIMARY KEY,
    kind         TEXT    NOT NULL,
    sender       TEXT    NOT NULL,
    recipient    TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    deposited_at BIGINT NOT NULL,
    retrieved_at BIGINT
);
CREATE INDEX mailbox_recipient ON mailbox (recipient, deposited_at);
CREATE INDEX mailbox_sender ON mailbox (sender, deposited_at);

-- Billing registers: one row per secured transaction or session.
CREATE TABLE registers (
    id            BYTEA    PRIMARY KEY,
    user_id       TEXT    NOT NULL,
    session_id    BYTEA    NOT NULL,
    kind          TEXT    NOT NULL,
    amount_minor  BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency      TEXT    NOT NULL,
    duration_s    BIGINT NOT NULL,
    payee         TEXT    NOT NULL,
    payee_account BYTEA,
    description   TEXT    NOT NULL,
    created_at    BIGINT NOT NULL,
    settled_at    BIGINT,
    settlement_id BYTEA
);
CREATE INDEX registers_user ON registers (user_id, created_at);
CREATE INDEX registers_unsettled ON registers (kind, created_at) WHERE settled_at IS NULL;

-- Threshold rules: amounts above `secured_above_minor` need out-of-band confirmation.
CREATE TABLE oob_rules (
    owner               TEXT    NOT NULL,
    currency            TEXT    NOT NULL,
    secured_above_minor BIGINT NOT NULL CHECK (secured_above_minor >= 0),
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (owner, currency)
);

-- Node-wide settings every process sharing the database must agree on.
CREATE TABLE node_settings (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
