-- Service providers of pads, forwards to them, and the clearing (issue [8], SPEC P3, P4, P7;
-- docs/protocols/pads.md, Money and Forwarding).
-- pad_providers: a provider by name, its owner (the tenant whose API key answers for it), the
-- merchant account its prices are paid into, its price per request in that account's
-- currency, its webhook, and whether its requests are held in escrow.
CREATE TABLE pad_providers (
    name        TEXT    PRIMARY KEY,
    owner       TEXT    NOT NULL,
    account     BLOB    NOT NULL,
    currency    TEXT    NOT NULL,
    price_minor INTEGER NOT NULL,
    webhook     TEXT    NOT NULL,
    escrow      INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
-- pad_forwards: one row per forward taken, named by its request id (what the provider sees;
-- never the pad). state: sent, replied; escrowed: held, performed, declined, released,
-- disputed, then paid or refused (crates/service/src/pad/escrow.rs).
-- price_minor is the provider's price when it was taken; step_key names the frame's step,
-- whose transfer is the escrow's hold.
CREATE TABLE pad_forwards (
    request     BLOB    PRIMARY KEY,
    pad         BLOB    NOT NULL,
    provider    TEXT    NOT NULL,
    escrow      INTEGER NOT NULL,
    price_minor INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    step_key    TEXT    NOT NULL,
    deadline    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX pad_forwards_due ON pad_forwards (state, deadline);
-- pad_charges: one line per debit of a pad into the currency's clearing account, split into
-- the operator's share (byte debit, post price, commission) and the provider's (price less
-- commission). Each share is paid out of clearing once (fee_paid, provider_paid: 0 or 1; a
-- line without a provider share is born provider_paid = 1). held = 1 while the debit is an
-- escrow's hold, which is not in clearing yet. Invariant: clearing's balance is the sum of
-- the unpaid shares of lines not held.
CREATE TABLE pad_charges (
    id                  BLOB    PRIMARY KEY,
    pad                 BLOB    NOT NULL,
    currency            TEXT    NOT NULL,
    provider            TEXT,
    operator_minor      INTEGER NOT NULL,
    provider_minor      INTEGER NOT NULL,
    held                INTEGER NOT NULL,
    fee_paid            INTEGER NOT NULL,
    provider_paid       INTEGER NOT NULL,
    fee_settlement      BLOB,
    provider_settlement BLOB,
    created_at          INTEGER NOT NULL
) STRICT;
CREATE INDEX pad_charges_fees ON pad_charges (fee_paid, held, currency);
CREATE INDEX pad_charges_providers ON pad_charges (provider_paid, held, provider);
-- The operator's fee account of each pad currency, opened at its first settlement.
ALTER TABLE pad_currencies ADD COLUMN fees_account BLOB;
-- A PIN account may name an out-of-band subscriber (issue [2]) who can cancel its lost pads by
-- a code on their second channel, without the PIN: some anonymity traded for recovery.
ALTER TABLE pad_accounts ADD COLUMN recovery_user TEXT;
-- A metered escrowed request: what the provider charged of the price held (at most the price;
-- NULL: the whole price).
ALTER TABLE pad_forwards ADD COLUMN charge_minor INTEGER;
-- Mailboxes addressed by a public key (the seed's pad key pairs): per key address, the key and
-- the mailbox its messages go to, with the time of the claim that put them there (a pad's own
-- key at its sale, at 0; a long-term key by its latest signed claim).
CREATE TABLE pad_aliases (
    address BLOB PRIMARY KEY,
    pubkey  BLOB NOT NULL,
    mailbox BLOB NOT NULL,
    at      INTEGER NOT NULL
) STRICT;
