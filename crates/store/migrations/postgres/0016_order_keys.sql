-- Acceptance delivery (issue [7], M9) at the merchant's operator (the MTA): K1 of each order as
-- this node signed it for the merchant (sign(K1)^MTA), and K2 escrowed by the merchant's agent
-- for an arbiter, sealed under this node's escrow.key.
CREATE TABLE session_order_keys (
    session    TEXT    NOT NULL,
    order_id   TEXT    NOT NULL,
    signed     TEXT    NOT NULL,
    k2_sealed  BYTEA,
    package    TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (session, order_id)
);

-- A session's initiation that arrives after the AM's word that it gave up (messages
-- reordered) is refused: registration looks for that word among the messages taken.
CREATE INDEX peer_inbox_kind ON peer_inbox (kind, from_node);
