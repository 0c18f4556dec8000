-- Federation (issue [7], step 2): the operators' nodes this node exchanges messages with, and
-- the messages it has accepted from them (each id applied once).
CREATE TABLE peers (
    node_id    TEXT    PRIMARY KEY,   -- SHA-256 of the peer's node key, hex
    name       TEXT    NOT NULL UNIQUE,
    url        TEXT    NOT NULL,      -- its API's base URL
    public_key TEXT    NOT NULL,      -- its Ed25519 node key, hex
    added_at   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE peer_inbox (
    id          BYTEA   PRIMARY KEY,  -- the envelope's id
    from_node   TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    body        TEXT    NOT NULL,     -- JSON
    sent_at     BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX peer_inbox_from ON peer_inbox (from_node, received_at);
