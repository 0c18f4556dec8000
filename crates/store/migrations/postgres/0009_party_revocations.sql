-- Party certificates the operator revoked (issue [6] item 13): a revoked certificate signs
-- no new receipt, and online verification (POST /v1/receipts/verify) reports it.
CREATE TABLE party_revocations (
    certificate_serial TEXT    PRIMARY KEY,
    party              TEXT    NOT NULL,
    revoked_at         BIGINT NOT NULL
);
