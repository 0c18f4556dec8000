//! Anonymous prepaid pads (SPEC P1–P8, issue [8]; `docs/protocols/pads.md`): key material that
//! is both the key stream and the balance: the codecs and the machine; the node's driver is
//! `tally-service`'s `pad`, the holder's wallet `tally pad`.
//!
//! * [`ids`]: pad ids, mailbox addresses, accounts, requests, messages, voucher codes.
//! * [`keys`]: the pad's key pair, mailboxes addressed by a public key, alias claims.
//! * [`file`]: the customer's half as a file; the pad's bytes (one-time or session-key).
//! * [`frame`]: the frame, enciphered with pad bytes and tagged with a one-time Poly1305 key.
//! * [`plain`]: requests and replies inside frames.
//! * [`receipt`]: the node's signed receipt of a pad's transfer between accounts.
//! * [`record`]: the chain of record lines both sides keep.
//! * [`relay`]: when the relay releases a mailbox message (batches per window, a shared delay).
//! * [`tariff`]: byte prices without rounding drift.
//! * [`holder`]: the holder's side: seal at the next offset, check and take the node's answers.
//! * [`machine`]: the [`machine::Pad`] state machine: places frames, takes or burns them,
//!   debits the value.
//!
//! Vectors: `docs/protocols/vectors/pads.json`.

pub mod file;
pub mod frame;
pub mod holder;
pub mod ids;
pub mod keys;
pub mod machine;
pub mod plain;
pub mod receipt;
pub mod record;
pub mod relay;
pub mod tariff;

#[cfg(test)]
mod tests;
