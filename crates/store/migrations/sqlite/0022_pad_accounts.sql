-- Anonymous PIN-controlled accounts of pads (issue [8], SPEC P6; docs/protocols/pads.md):
-- an Argon2id hash of the PIN, the wrong tries since the last right one, and the lockout.
CREATE TABLE pad_accounts (
    id           BLOB    PRIMARY KEY,
    pin_hash     TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    lockouts     INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;
-- Per account and currency, the ledger account holding its value (restored from cancelled
-- pads, spent on new ones).
CREATE TABLE pad_account_values (
    account  BLOB NOT NULL,
    currency TEXT  NOT NULL,
    ledger   BLOB NOT NULL,
    PRIMARY KEY (account, currency)
) STRICT;
