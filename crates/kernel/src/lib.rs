//! The kernel: the few types every other Tally crate shares.
//!
//! * [`money`]: integer amounts in minor units with an ISO-4217 currency. No floats anywhere near
//!   money; every operation is checked and overflow is an error, never a wrap.
//! * [`id`]: time-ordered UUIDv7 identifiers, typed per entity so an account id cannot be passed
//!   where a transfer id is expected.
//! * [`time`]: [`Timestamp`], microseconds since the Unix epoch in an `i64`. Protocol code never
//!   reads the clock itself: callers pass `now` in.
//! * [`secret`]: [`Secret<T>`], zeroized on drop and shown as `Secret(***)` by `Debug`.
//! * [`crypto`]: the crypto kit, thin wrappers over RustCrypto and dalek crates; no primitive is
//!   implemented here.
//!
//! This crate does no I/O beyond reading and writing key files the caller names.

pub mod crypto;
pub mod id;
pub mod money;
pub mod secret;
pub mod text;
pub mod time;

pub use id::Id;
pub use money::{Amount, Currency, MoneyError, Rate};
pub use secret::Secret;
pub use time::Timestamp;
