//! The HTTP API's request and response types, in one place.
//!
//! The node builds the answers (`tally-service` returns them, `tally-http` sends them) and
//! parses the requests; the client (`tally-client`, which the CLI and the tests use) sends the
//! requests and parses the answers. One definition for both sides, so a field renamed on one
//! side does not compile on the other.
//!
//! Decision: a crate of its own, depending only on the domain crates below it (`kernel`,
//! `ledger`, `proto`) and serde, so the node does not depend on an HTTP client nor the client on
//! the node. Rejected: the service's own view types on the wire next to separate DTOs for the
//! ledger (two policies, and a client reading untyped JSON); DTOs duplicating every view (the
//! same fields written twice, converted field by field).
//!
//! * [`ledger`]: accounts, transfers, holds, exchanges, API keys, the dev inbox, the audit.
//! * [`oob`]: out-of-band sessions and what hangs off them.
//! * [`delivery`]: products, sales, payments, receivers, keys, complaints, reports.
//! * [`receipts`]: tokens, warrants, receipts, the arbiter.
//! * [`error`]: the error body and its stable codes.

pub mod delivery;
pub mod error;
pub mod ledger;
pub mod oob;
pub mod receipts;

/// Serde for [`tally_kernel::Amount`] as `"12.50 EUR"`.
pub mod amount_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use tally_kernel::Amount;

    /// As text.
    pub fn serialize<S: Serializer>(a: &Amount, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_string())
    }

    /// From text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
