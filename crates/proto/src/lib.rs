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
//! * [`receipt`]: two-party signed receipts (SPEC R1–R6): the receipt core and package, offline
//!   verification, the token's secure write and the arbiter's rules for fair exchange.

pub mod delivery;
pub mod oob;
pub mod receipt;

#[cfg(test)]
mod pinned {
    /// Compares `computed` with the pinned vector file at `path`; with `UPDATE_EXPECT=1`
    /// rewrites the file instead (review the diff before committing it).
    pub(crate) fn check(path: &str, computed: &serde_json::Value) {
        if std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1") {
            std::fs::write(path, serde_json::to_string_pretty(computed).expect("json") + "\n")
                .expect("write");
            return;
        }
        let pinned: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
        assert_eq!(computed, &pinned);
    }
}
