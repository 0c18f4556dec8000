-- The client's references and code on accounts (issue [10]), as on transfers: zero and NULL
-- are "none" and cost no bytes; accounts opened before keep them.
ALTER TABLE accounts ADD COLUMN user_data_128 BYTEA;
ALTER TABLE accounts ADD COLUMN user_data_64 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN user_data_32 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN code BIGINT NOT NULL DEFAULT 0;
