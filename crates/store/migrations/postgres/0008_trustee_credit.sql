-- Trustee credit (issue [6] item 2): which ledger account holds a user's trustee debt in a
-- currency. The limit and the debt live on that account (the ledger decides them); this
-- table only finds it. Written with the limit's ledger command, in its transaction.
CREATE TABLE trustee_credit (
    user_id    TEXT    NOT NULL,
    currency   TEXT    NOT NULL,
    account    BYTEA   NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (user_id, currency)
);
