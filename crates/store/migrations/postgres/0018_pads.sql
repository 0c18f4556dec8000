-- Anonymous prepaid pads (issue [8], SPEC P1–P8; docs/protocols/pads.md).
-- pads: one row per pad; state and both cursors are columns so the writer's guard decides on
-- them (two nodes on one database never hand out a byte twice); the rest of the machine is
-- JSON. issue_key is the sale's idempotency key, so a retried sale answers the same pad.
CREATE TABLE pads (
    id            BYTEA    PRIMARY KEY,
    state         TEXT    NOT NULL,
    up_next       BIGINT NOT NULL,
    down_low      BIGINT NOT NULL,
    mode          TEXT    NOT NULL,
    currency      TEXT    NOT NULL,
    value_account BYTEA    NOT NULL,
    face_minor    BIGINT NOT NULL,
    issue_key     TEXT    NOT NULL UNIQUE,
    machine       TEXT    NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
-- The node's twin of each pad, in chunks of 4 KiB sealed under a key derived from pad.key
-- (a session-key pad has one chunk: its seed).
CREATE TABLE pad_chunks (
    pad    BYTEA    NOT NULL,
    idx    BIGINT NOT NULL,
    sealed BYTEA    NOT NULL,
    PRIMARY KEY (pad, idx)
);
-- One row per up frame taken or burned: the record line (65 bytes), the frame's digest, and
-- the answer: the sealed down frame (kept for the last 16 frames, to answer a resend) or the
-- refusal's JSON.
CREATE TABLE pad_records (
    pad       BYTEA    NOT NULL,
    n         BIGINT NOT NULL,
    up_offset BIGINT NOT NULL,
    digest    BYTEA    NOT NULL,
    line      BYTEA    NOT NULL,
    reply     BYTEA,
    refusal   TEXT,
    PRIMARY KEY (pad, n)
);
CREATE UNIQUE INDEX pad_records_offset ON pad_records (pad, up_offset);
-- Per currency: the pad clearing account (paid by pads, not yet paid out) and the tariff.
CREATE TABLE pad_currencies (
    currency                 TEXT    PRIMARY KEY,
    clearing_account         BYTEA    NOT NULL,
    byte_price_minor_per_kib BIGINT NOT NULL,
    post_price_minor         BIGINT NOT NULL,
    commission_bps           BIGINT NOT NULL
);
