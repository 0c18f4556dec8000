//! Protocol logic as deterministic state machines, one module per protocol of
//! `../shared/SPEC.md`.
//!
//! This crate does no I/O and never reads the clock or an RNG on its own: the caller passes
//! `now`, random bytes and keys in, and gets the next state plus what to do (messages to send,
//! ledger commands to run) out. `service` persists the state and performs the effects. The
//! crate's `Cargo.toml` has no tokio and no sqlx, and must keep it that way (rustls and
//! quinn-proto are the model: the same code runs in tests, simulations and the server).
//!
//! Every protocol has the same shape ([`effects`]): a state enum, a step
//! `handle(self, now, input, …) -> Result<(Self, Effects), Error>` and `poll_timeout`.
//!
//! * [`delivery`]: locked delivery (SPEC D2–D4): reference codes, unlock keys and the signed
//!   package format.
//! * [`oob`]: out-of-band authentication (SPEC A1–A4): a one-time secret bound to a session,
//!   a time marker and (for transactions) the amount and payee, sent over a second channel and
//!   typed back on the first.
//! * [`pad`]: anonymous prepaid pads (SPEC P1–P8), being built: the frame, its plaintexts,
//!   the records and the pad's machine.
//! * [`receipt`]: two-party signed receipts (SPEC R1–R6): the receipt core and package, offline
//!   verification, the token's secure write and the arbiter's rules for fair exchange.
//! * [`session`]: trading sessions (SPEC M1–M9), being built: the session and transaction ids.

/// `as_str`, `parse` and `Display` of a state enum stored by its snake_case name.
macro_rules! stored_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }

            /// From the stored name.
            pub fn parse(s: &str) -> Option<$ty> {
                match s { $($name => Some($ty::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod delivery;
pub mod effects;
pub mod oob;
pub mod pad;
pub mod receipt;
pub mod session;

#[cfg(test)]
mod pinned {
    /// Compares `computed` with the pinned vector file at `path`; with `UPDATE_EXPECT=1`
    /// rewrites the file instead (review the diff before committing it).
    pub(crate) fn check(path: &str, computed: &serde_json::Value) {
        if std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1") {
            std::fs::write(
                path,
                serde_json::to_string_pretty(computed).expect("json") + "\n",
            )
            .expect("write");
            return;
        }
        let pinned: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
        assert_eq!(computed, &pinned);
    }
}
