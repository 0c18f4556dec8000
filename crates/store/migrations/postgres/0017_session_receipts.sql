-- Trading sessions' closing receipts (issue [7], M5 as receipts of [4]): each cleared
-- transaction's receipt, signed by the merchant's operator (the MTA), kept at the MTA when it
-- clears and at the customer's operator when the receipt arrives.
CREATE TABLE session_receipts (
    transaction_id TEXT    PRIMARY KEY,
    session        TEXT    NOT NULL,
    receipt        TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL
);
CREATE INDEX session_receipts_session ON session_receipts (session);
