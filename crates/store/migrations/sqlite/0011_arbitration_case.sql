-- An arbiter node's decision names the exchange it was taken on (SHA-256 of fields 1-7):
-- a later request under the same transaction id with other fields is refused.
ALTER TABLE arbitrations ADD COLUMN case_hash BLOB;
