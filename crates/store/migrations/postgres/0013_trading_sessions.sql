-- Trading sessions (issue [7], step 3): a session's row per role on this node ('am': the
-- customer's account manager, 'mta': the merchant's operator), the merchants that take
-- sessions here, and the AM's session numbers.
CREATE TABLE trading_sessions (
    key        TEXT    PRIMARY KEY,   -- role ':' session id
    role       TEXT    NOT NULL,      -- 'am' | 'mta'
    session    TEXT    NOT NULL,      -- the session id
    state      TEXT    NOT NULL,
    owner      TEXT    NOT NULL,      -- am: the customer; mta: the merchant
    client_key TEXT    UNIQUE,        -- am: the opening request's namespaced idempotency key
    machine    TEXT    NOT NULL,      -- the machine (JSON)
    wake_at    BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX trading_sessions_owner ON trading_sessions (owner, created_at);
CREATE INDEX trading_sessions_wake ON trading_sessions (wake_at) WHERE wake_at IS NOT NULL;

CREATE TABLE session_merchants (
    name       TEXT    PRIMARY KEY,
    account    BYTEA   NOT NULL,      -- where the merchant is paid (its currency)
    auto_ack   BIGINT NOT NULL,      -- agent mode: every session acked at once
    updated_at BIGINT NOT NULL
);

CREATE TABLE session_numbers (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    last BIGINT NOT NULL
);
INSERT INTO session_numbers (id, last) VALUES (1, 0);
