//! Protocol logic as deterministic state machines, one module per protocol of
//! `../shared/SPEC.md`.
//!
//! This crate does no I/O and never reads the clock or an RNG on its own: the caller passes
//! `now`, random bytes and keys in, and gets the next state plus what to do (messages to send,
//! ledger commands to run) out. `service` persists the state and performs the effects. The
//! crate's `Cargo.toml` has no tokio and no sqlx, and must keep it that way (rustls and
//! quinn-proto are the model: the same code runs in tests, simulations and the server).
//!
//! * [`delivery`]: locked delivery (SPEC D2–D4): reference codes, unlock keys and the signed
//!   package format.
//! * [`oob`]: out-of-band authentication (SPEC A1–A4): a one-time secret bound to a session,
//!   a time marker and (for transactions) the amount and payee, sent over a second channel and
//!   typed back on the first.

pub mod delivery;
pub mod oob;
