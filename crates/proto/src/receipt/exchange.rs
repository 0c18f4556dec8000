//! The arbiter's rules for fair exchange (SPEC R5; seed blocks 301–317 and its abort and
//! resolve sub-protocols). The arbiter is consulted only when an exchange fails; for each
//! transaction it keeps one [`Decision`], durably, and every later request is answered from
//! it, so both parties end with both signatures or neither does.
//!
//! The caller does the cryptography before asking: it decrypts the node's non-verifiable
//! escrow or adjudicates the client's verifiably encrypted signature and verifies every
//! signature under the parties' certified keys; this module decides what the arbiter may
//! hand out given what verified.
//!
//! * **Abort** (originator only, block 307): an open exchange becomes aborted and no resolve
//!   succeeds afterwards. If the client resolved first, the originator gets the client's
//!   signature instead.
//! * **Resolve by the client** (block 310): the client deposits its own signature and shows
//!   the node's escrow; if the escrow holds a good signature of A, the exchange is resolved
//!   and the client gets it. If it does not, the resolve fails and so does every later
//!   resolve by the node (neither side gets the other's signature).
//! * **Resolve by the node** (block 314): the node shows the client's verifiable escrow and
//!   its own signature; the arbiter opens the escrow, and the exchange is resolved.

use super::PartySignature;

/// The arbiter's standing decision on one transaction.
// Two signatures inline (about 200 bytes, `Copy`): not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing asked yet.
    Open,
    /// The originator aborted: nobody gets a signature from the arbiter.
    Aborted,
    /// Resolved: the arbiter holds both signatures and gives each party the other's.
    Resolved {
        /// A's signature.
        signature_a: PartySignature,
        /// B's signature.
        signature_b: PartySignature,
    },
    /// A resolve failed because the originator's escrow held no good signature: no later
    /// resolve succeeds.
    Failed,
}

impl Decision {
    /// The stored name of the decision.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Open => "open",
            Decision::Aborted => "aborted",
            Decision::Resolved { .. } => "resolved",
            Decision::Failed => "failed",
        }
    }

    /// Where the exchange stands at the arbiter.
    pub fn standing(&self) -> Standing {
        match self {
            Decision::Open => Standing::Open,
            Decision::Aborted => Standing::Aborted,
            Decision::Failed => Standing::Failed,
            Decision::Resolved { .. } => Standing::Resolved,
        }
    }

    /// What kind of decision it is, once one is taken.
    pub fn kind(&self) -> Option<DecisionKind> {
        match self {
            Decision::Open => None,
            Decision::Aborted => Some(DecisionKind::Aborted),
            Decision::Failed => Some(DecisionKind::Failed),
            Decision::Resolved { .. } => Some(DecisionKind::Resolved),
        }
    }
}

/// Where an exchange stands at the arbiter, as shown. Variants are alphabetical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Aborted by the originator.
    Aborted,
    /// A resolve failed.
    Failed,
    /// No decision yet.
    Open,
    /// Resolved.
    Resolved,
}
stored_names!(Standing { Aborted => "aborted", Failed => "failed", Open => "open", Resolved => "resolved" });

/// A decision taken, as stored (the signatures of a resolve are stored beside it). Variants
/// are alphabetical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// The originator aborted.
    Aborted,
    /// A resolve failed.
    Failed,
    /// Resolved.
    Resolved,
}
stored_names!(DecisionKind { Aborted => "aborted", Failed => "failed", Resolved => "resolved" });

/// A request to the arbiter, with what the caller verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Abort, by the originator (the node).
    Abort,
    /// Resolve by the client: its deposited signature (verified) and what the node's escrow
    /// held (`None` when it did not decrypt or did not verify under A's key).
    ResolveByClient {
        /// B's signature, verified.
        signature_b: PartySignature,
        /// A's signature from the escrow, verified, or `None`.
        escrowed_a: Option<PartySignature>,
    },
    /// Resolve by the node: its own signature and the client's adjudicated one, both verified.
    ResolveByNode {
        /// A's signature, verified.
        signature_a: PartySignature,
        /// B's signature from the verifiable escrow, verified.
        escrowed_b: PartySignature,
    },
}

/// What the arbiter answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The exchange is aborted; no signature.
    Aborted,
    /// The other party's signature.
    Signature(PartySignature),
}

/// Why the arbiter refused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The originator aborted this exchange.
    #[error("the exchange was aborted by its originator; it cannot be resolved")]
    Aborted,
    /// An earlier resolve failed (the originator's escrow was bad).
    #[error(
        "an earlier resolve failed because the originator's escrow held no valid signature; the exchange cannot be resolved"
    )]
    Failed,
    /// The originator's escrow holds no valid signature (this request fails the exchange).
    #[error(
        "the originator's escrow holds no valid signature: the resolve fails, and so will any later one"
    )]
    BadEscrow,
}

/// Applies `request` to `decision`: the new decision to store (when it changes) and the
/// answer, or a refusal (which may itself change the decision: a bad escrow fails it).
pub fn decide(decision: Decision, request: Request) -> (Decision, Result<Answer, Refusal>) {
    use Decision as D;
    use Request as R;
    match (decision, request) {
        (D::Open | D::Aborted, R::Abort) => (D::Aborted, Ok(Answer::Aborted)),
        (D::Failed, R::Abort) => (D::Failed, Ok(Answer::Aborted)),
        (D::Resolved { signature_b, .. }, R::Abort) => {
            (decision, Ok(Answer::Signature(signature_b)))
        }
        (D::Aborted, _) => (decision, Err(Refusal::Aborted)),
        (D::Failed, _) => (decision, Err(Refusal::Failed)),
        (
            D::Open,
            R::ResolveByClient {
                escrowed_a: None, ..
            },
        ) => (D::Failed, Err(Refusal::BadEscrow)),
        (
            D::Open,
            R::ResolveByClient {
                signature_b,
                escrowed_a: Some(signature_a),
            },
        ) => (
            D::Resolved {
                signature_a,
                signature_b,
            },
            Ok(Answer::Signature(signature_a)),
        ),
        (
            D::Open,
            R::ResolveByNode {
                signature_a,
                escrowed_b,
            },
        ) => (
            D::Resolved {
                signature_a,
                signature_b: escrowed_b,
            },
            Ok(Answer::Signature(escrowed_b)),
        ),
        (D::Resolved { signature_a, .. }, R::ResolveByClient { .. }) => {
            (decision, Ok(Answer::Signature(signature_a)))
        }
        (D::Resolved { signature_b, .. }, R::ResolveByNode { .. }) => {
            (decision, Ok(Answer::Signature(signature_b)))
        }
    }
}
