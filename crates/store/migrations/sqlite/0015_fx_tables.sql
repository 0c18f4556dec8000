-- Exchange tables (issue [7], M6): the rates this operator publishes, each with a lifespan and
-- signed by its node key; the merchant's operator converts a session's deposit at its own.
CREATE TABLE fx_tables (
    id          BLOB    PRIMARY KEY,
    from_cur    TEXT    NOT NULL,
    to_cur      TEXT    NOT NULL,
    numerator   INTEGER NOT NULL,
    denominator INTEGER NOT NULL,
    rate_text   TEXT    NOT NULL,
    valid_from  INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    signed      TEXT    NOT NULL
) STRICT;
CREATE INDEX fx_tables_pair ON fx_tables (from_cur, to_cur, valid_from);
