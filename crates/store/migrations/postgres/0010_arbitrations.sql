-- An arbiter node's decisions (issue [6] item 14): one per (receipt server, transaction) of
-- the receipt nodes it judges; the first stored wins and answers every later request.
CREATE TABLE arbitrations (
    node           TEXT    NOT NULL,
    transaction_id BIGINT NOT NULL,
    decision       TEXT    NOT NULL,
    signature_a    BYTEA,
    signature_b    BYTEA,
    decided_at     BIGINT NOT NULL,
    PRIMARY KEY (node, transaction_id)
);
