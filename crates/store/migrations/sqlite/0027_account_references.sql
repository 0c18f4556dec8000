-- The client's references and code on accounts (issue [10]), as on transfers: zero and NULL
-- are "none" and cost no bytes; accounts opened before keep them.
ALTER TABLE accounts ADD COLUMN user_data_128 BLOB;
ALTER TABLE accounts ADD COLUMN user_data_64 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN user_data_32 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN code INTEGER NOT NULL DEFAULT 0;
