-- Pad vouchers (issue [8], SPEC P1; docs/protocols/pads.md): cards a retailer sells for cash,
-- redeemed anonymously for a new pad. The node keeps only a keyed hash of each code.
-- States: blank (printed, not sold) → sold → redeemed; blank | sold → cancelled.
CREATE TABLE pad_vouchers (
    serial      TEXT    PRIMARY KEY,
    code_hash   BYTEA    NOT NULL UNIQUE,
    state       TEXT    NOT NULL,
    value_minor BIGINT NOT NULL,
    currency    TEXT    NOT NULL,
    retailer    TEXT    NOT NULL,
    paid_from   BYTEA,
    pad         BYTEA,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
-- Per currency, the voucher float: what sold, unredeemed vouchers are worth.
CREATE TABLE pad_floats (
    currency TEXT PRIMARY KEY,
    account  BYTEA NOT NULL
);
