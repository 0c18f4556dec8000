-- Pads' mailboxes and the relay (issue [8], SPEC P5; docs/protocols/pads.md).
-- pad_mailboxes: each pad's mailbox address (derived from its first 32 bytes at the sale).
CREATE TABLE pad_mailboxes (
    address BLOB PRIMARY KEY,
    pad     BLOB NOT NULL UNIQUE
) STRICT;
-- Messages waiting in mailboxes, their bodies sealed at rest; each is released at release_at
-- (the relay's batch) and deleted in the step that hands it to its mailbox's holder.
CREATE TABLE pad_messages (
    id          BLOB    PRIMARY KEY,
    mailbox     BLOB    NOT NULL,
    sender_kind INTEGER NOT NULL,
    sender      TEXT    NOT NULL,
    in_reply_to BLOB,
    body        BLOB    NOT NULL,
    release_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX pad_messages_mailbox ON pad_messages (mailbox, release_at, id);
