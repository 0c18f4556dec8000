-- Tally schema v2 (SQLite): out-of-band authentication (SPEC A1–A7). Every row here is
-- written by the ledger writer in the transaction of the journal entry that caused it.

-- The subscriber directory: a user and, for payments with contract, the stored account.
CREATE TABLE subscribers (
    user_id          TEXT    PRIMARY KEY,
    contract_account BLOB,
    created_at       INTEGER NOT NULL
) STRICT;

-- Second-channel addresses, unique across users; usable once verified.
CREATE TABLE subscriber_addresses (
    id          BLOB    PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    address     TEXT    NOT NULL,
    verified_at INTEGER,
    created_at  INTEGER NOT NULL,
    UNIQUE (channel, address)
) STRICT;
CREATE INDEX subscriber_addresses_user ON subscriber_addresses (user_id, created_at);

-- Sessions. `id` is the unguessable session number; the code itself is never stored.
CREATE TABLE oob_sessions (
    id          BLOB    PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    opened_by   TEXT    NOT NULL,
    application TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    session     TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    result      TEXT,
    channel     TEXT    NOT NULL,
    address     TEXT    NOT NULL,
    client_key  TEXT    UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX oob_sessions_user ON oob_sessions (user_id, created_at);
CREATE INDEX oob_sessions_address ON oob_sessions (channel, address, created_at);

-- Access tokens granted by a login session, stored by hash.
CREATE TABLE oob_tokens (
    token_hash BLOB    PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    session_id BLOB    NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

-- Certificates (node-signed records) of verified sessions, kept for both parties.
CREATE TABLE certificates (
    id         BLOB    PRIMARY KEY,
    session_id BLOB    NOT NULL,
    user_id    TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX certificates_user ON certificates (user_id, created_at);

-- Registered mail and offers.
CREATE TABLE mailbox (
    id           BLOB    PRIMARY KEY,
    kind         TEXT    NOT NULL,
    sender       TEXT    NOT NULL,
    recipient    TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    deposited_at INTEGER NOT NULL,
    retrieved_at INTEGER
) STRICT;
CREATE INDEX mailbox_recipient ON mailbox (recipient, deposited_at);
CREATE INDEX mailbox_sender ON mailbox (sender, deposited_at);

-- Billing registers: one row per secured transaction or session.
CREATE TABLE registers (
    id            BLOB    PRIMARY KEY,
    user_id       TEXT    NOT NULL,
    session_id    BLOB    NOT NULL,
    kind          TEXT    NOT NULL,
    amount_minor  INTEGER NOT NULL CHECK (amount_minor >= 0),
    currency      TEXT    NOT NULL,
    duration_s    INTEGER NOT NULL,
    payee         TEXT    NOT NULL,
    payee_account BLOB,
    description   TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    settled_at    INTEGER,
    settlement_id BLOB
) STRICT;
CREATE INDEX registers_user ON registers (user_id, created_at);
CREATE INDEX registers_unsettled ON registers (kind, created_at) WHERE settled_at IS NULL;

-- Threshold rules: amounts above `secured_above_minor` need out-of-band confirmation.
CREATE TABLE oob_rules (
    owner               TEXT    NOT NULL,
    currency            TEXT    NOT NULL,
    secured_above_minor INTEGER NOT NULL CHECK (secured_above_minor >= 0),
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (owner, currency)
) STRICT;

-- Node-wide settings every process sharing the database must agree on.
CREATE TABLE node_settings (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
