-- Trading sessions' conclusion (issue [7], step 5): the merchant agent's key that signs the
-- merchant's records, the accounts each operator keeps for another (what it owes a peer, what
-- a peer owes it), and the records for the billing systems (M8).
ALTER TABLE session_merchants ADD COLUMN agent_key TEXT;

CREATE TABLE peer_accounts (
    peer       TEXT    NOT NULL,      -- the peer's node id
    currency   TEXT    NOT NULL,
    direction  TEXT    NOT NULL,      -- 'owed_to' (this operator owes the peer) | 'owed_by'
    account    BYTEA   NOT NULL,
    PRIMARY KEY (peer, currency, direction)
);

CREATE TABLE billing_records (
    id         BYTEA   PRIMARY KEY,
    kind       TEXT    NOT NULL,      -- 'withdrawal' (the customer's side) | 'deposit'
    session    TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    account    BYTEA   NOT NULL,
    amount     BIGINT NOT NULL,      -- minor units
    currency   TEXT    NOT NULL,
    peer       TEXT    NOT NULL,      -- the other operator's node id
    at         BIGINT NOT NULL
);
CREATE INDEX billing_records_at ON billing_records (at);
