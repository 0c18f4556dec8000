//! Trading sessions (US 09/718411, SPEC M1–M9; issue [7]): deposit-backed micropayment
//! sessions between a customer and a merchant, possibly at two operators, concluded with
//! records both parties sign and cleared between the operators. Design and the order of the
//! steps: `docs/protocols/sessions.md`.
//!
//! Built so far: [`ids`], the session and transaction identities of the seed, and [`envelope`],
//! the sealed format of messages between nodes (no transport yet).

pub mod acceptance;
pub mod certs;
pub mod conclusion;
pub mod envelope;
pub mod ids;
pub mod purchase;
pub mod receipt;
pub mod trade;
