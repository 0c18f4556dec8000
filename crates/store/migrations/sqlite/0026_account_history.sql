-- Account history (issue [10]): the counters of an account opened with `history` after each
-- transfer that moved it, in journal order (`ordinal` orders the rows of one journal entry).
-- Only such accounts pay for these rows.
CREATE TABLE account_balances (
    account_id      BLOB    NOT NULL,
    journal_seq     INTEGER NOT NULL,
    ordinal         INTEGER NOT NULL,
    transfer_id     BLOB    NOT NULL,
    at              INTEGER NOT NULL,
    debits_pending  INTEGER NOT NULL,
    debits_posted   INTEGER NOT NULL,
    credits_pending INTEGER NOT NULL,
    credits_posted  INTEGER NOT NULL,
    PRIMARY KEY (account_id, journal_seq, ordinal)
);
