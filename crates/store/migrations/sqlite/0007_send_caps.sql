-- Caps on code sends (issue [6] item 4): one row per code sent (a session opened), so the
-- limits are counted in the database and shared by every node on it.
CREATE TABLE oob_sends (
    session    BLOB PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    client_ip  TEXT,
    -- 1 for anonymous sign-ins and address verifications: the per-address and node-wide caps.
    capped     INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX oob_sends_user ON oob_sends (user_id, created_at);
CREATE INDEX oob_sends_ip ON oob_sends (client_ip, created_at) WHERE capped = 1;
CREATE INDEX oob_sends_capped ON oob_sends (created_at) WHERE capped = 1;

-- Sales alerted before unpaid sales could expire (issue [6]) kept no timer: they expire 14
-- days (the default period) after they were made.
UPDATE sales SET wake_at = created_at + 1209600000000 WHERE state = 'open' AND wake_at IS NULL;
