-- Anonymous PIN-controlled accounts of pads (issue [8], SPEC P6; docs/protocols/pads.md):
-- an Argon2id hash of the PIN, the wrong tries since the last right one, and the lockout.
CREATE TABLE pad_accounts (
    id           BYTEA    PRIMARY KEY,
    pin_hash     TEXT    NOT NULL,
    attempts     BIGINT NOT NULL,
    lockouts     BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
-- Per account and currency, the ledger account holding its value (restored from cancelled
-- pads, spent on new ones).
CREATE TABLE pad_account_values (
    account  BYTEA NOT NULL,
    currency TEXT  NOT NULL,
    ledger   BYTEA NOT NULL,
    PRIMARY KEY (account, currency)
);
