-- The operator's commission on a forward's price when it was taken (issue [8]): a metered
-- escrow's commission is computed at that rate, not at the tariff of its resolution. NULL for
-- forwards taken before: the tariff then in force.
ALTER TABLE pad_forwards ADD COLUMN commission_bps BIGINT;
