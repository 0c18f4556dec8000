-- Account history (issue [10]): the counters of an account opened with `history` after each
-- transfer that moved it, in journal order (`ordinal` orders the rows of one journal entry).
-- Only such accounts pay for these rows.
CREATE TABLE account_balances (
    account_id      BYTEA   NOT NULL,
    journal_seq     BIGINT  NOT NULL,
    ordinal         BIGINT  NOT NULL,
    transfer_id     BYTEA   NOT NULL,
    at              BIGINT  NOT NULL,
    debits_pending  BIGINT  NOT NULL,
    debits_posted   BIGINT  NOT NULL,
    credits_pending BIGINT  NOT NULL,
    credits_posted  BIGINT  NOT NULL,
    PRIMARY KEY (account_id, journal_seq, ordinal)
);
