-- Pads as retail stock (issue [8], SPEC P1; docs/protocols/pads.md): media made blank for a
-- retailer, a serial printed on each (never the pad id), activated at the till with a value;
-- a stolen serial is cancelled and replaced by a new blank.
CREATE TABLE pad_stock (
    serial     TEXT    PRIMARY KEY,
    pad        BLOB    NOT NULL UNIQUE,
    retailer   TEXT    NOT NULL,
    replaced_by TEXT,
    created_at INTEGER NOT NULL
) STRICT;
