-- Hardening (issue [6]).

-- A confirmation session is used once: by the payment it confirmed, in that payment's
-- transaction.
ALTER TABLE oob_sessions ADD COLUMN used_at BIGINT;

-- A payer's own threshold: its payments above it need out-of-band confirmation, whatever
-- the payee's rule says.
CREATE TABLE oob_payer_rules (
    owner               TEXT    NOT NULL,
    currency            TEXT    NOT NULL,
    secured_above_minor BIGINT NOT NULL CHECK (secured_above_minor >= 0),
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (owner, currency)
);
