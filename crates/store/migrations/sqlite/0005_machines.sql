-- Protocol machines (issue [5]): when each row's machine next needs a step without input
-- (its poll_timeout), the secret an outgoing message needs by reference, and the receipt
-- server certificate each receipt was signed under.

ALTER TABLE oob_sessions ADD COLUMN wake_at INTEGER;
UPDATE oob_sessions SET wake_at = expires_at WHERE state = 'open';
CREATE INDEX oob_sessions_wake ON oob_sessions (wake_at) WHERE wake_at IS NOT NULL;

-- Sales open before this migration get the default overdue period (7 days).
ALTER TABLE sales ADD COLUMN wake_at INTEGER;
UPDATE sales SET wake_at = created_at + 604800000000 WHERE state = 'open' AND overdue_at IS NULL;
CREATE INDEX sales_wake ON sales (wake_at) WHERE wake_at IS NOT NULL;

ALTER TABLE receipts ADD COLUMN certificate_server BLOB;

-- A message's secret by reference (JSON), replacing the dedup-key prefixes it was found by.
ALTER TABLE outbox ADD COLUMN secret TEXT;
UPDATE outbox SET secret = '{"secret":"oob_code","session":"' || substr(dedup_key, 6, 32) || '"}'
    WHERE dedup_key LIKE ':oob:%:code';
UPDATE outbox SET secret = '{"secret":"unlock_key","sale":"' || substr(dedup_key, 7, 36) || '"}'
    WHERE dedup_key LIKE ':sale:%:key:%';
