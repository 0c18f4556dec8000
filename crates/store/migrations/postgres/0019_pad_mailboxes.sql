-- Pads' mailboxes and the relay (issue [8], SPEC P5; docs/protocols/pads.md).
-- pad_mailboxes: each pad's mailbox address (derived from its first 32 bytes at the sale).
CREATE TABLE pad_mailboxes (
    address BYTEA PRIMARY KEY,
    pad     BYTEA NOT NULL UNIQUE
);
-- Messages waiting in mailboxes, their bodies sealed at rest; each is released at release_at
-- (the relay's batch) and deleted in the step that hands it to its mailbox's holder.
CREATE TABLE pad_messages (
    id          BYTEA    PRIMARY KEY,
    mailbox     BYTEA    NOT NULL,
    sender_kind BIGINT NOT NULL,
    sender      TEXT    NOT NULL,
    in_reply_to BYTEA,
    body        BYTEA    NOT NULL,
    release_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX pad_messages_mailbox ON pad_messages (mailbox, release_at, id);
