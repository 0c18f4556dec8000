//! A trading session's initiation (SPEC M2, M3; issue [7] step 3), at its two nodes: the
//! customer's account manager (AM) and the mediating trusted agent (MTA) at the merchant's
//! operator. They may be one node (two rows, one per role) or two, linked by sealed messages
//! ([`super::envelope`]).
//!
//! ```text
//!  customer ─ open ─► AM: hold the deposit ─ session_initiation ─► MTA: Informed ─► merchant
//!                      Held                                           │   merchant acks
//!  customer ◄─ rate ─ AM: Open ◄──────────── session_ack {rate} ───── MTA: Open
//!                     AM: Aborted (hold void) ◄─ session_refused ─── MTA: Refused
//! ```
//!
//! The clearing (M5) is in two phases, so that the operators' books never differ by a
//! session: the MTA sends the clearing information and pays the merchant only once the AM
//! answers that it posted the customer's side.
//!
//! ```text
//!  MTA: Clearing ─ session_cleared ─► AM: post the hold ─► Cleared ─ session_posted ─► MTA: Cleared (pays)
//!                                     AM: the hold is gone ─ session_released ──────► MTA: Expired
//! ```
//!
//! * The AM holds the deposit (a pending transfer from the customer's account to its account
//!   *owed to* the MTA's operator; the ledger never lets it exceed the customer's limit, so
//!   concurrent sessions cannot spend the same money twice), vouches for the customer and
//!   sends the amended initiation (deposit in the customer's currency, a pseudonymous customer
//!   identifier, the transaction id, the merchant) to the MTA.
//! * The MTA registers the session for a merchant it knows, converts the deposit into the
//!   merchant's currency at its rate, and informs the merchant. Once the merchant acks (at
//!   once in agent mode), it acks the AM with the rate; otherwise it refuses, with a reason.
//! * Neither waits for ever: the AM aborts (voids its hold) when no answer came by `ack_by`;
//!   the MTA refuses a session its merchant left unanswered by then.
//!
//! Messages from the other node arrive at least once and in any order: a repeat of an answer
//! already applied changes nothing ([`Effects::none`]); an answer to a session that has moved
//! on is refused, the peer's fault.

use super::conclusion::{Clearing, Record, Side, customer_total};
use super::ids::{NodeId, SessionId, TransactionId};
use crate::effects::{Blame, Effects, Fault, PeerMessage};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tally_kernel::{Amount, Id, Rate, Timestamp};
use tally_ledger::Command;

/// Kind of the AM's initiation message.
pub const INITIATION: &str = "session_initiation";
/// Kind of the MTA's acknowledgement.
pub const ACK: &str = "session_ack";
/// Kind of the MTA's refusal.
pub const REFUSED: &str = "session_refused";
/// Kind of the customer's record, forwarded by the AM to the MTA (M5).
pub const RECORD: &str = "session_record";
/// Kind of the MTA's clearing information (M5).
pub const CLEARED: &str = "session_cleared";
/// Kind of the MTA's word that the records disagree.
pub const DISPUTED: &str = "session_disputed";
/// Kind of the MTA's word that the session ended with no record by its conclusion deadline.
pub const EXPIRED: &str = "session_expired";
/// Kind of the AM's word that it posted the clearing (the MTA then pays the merchant).
pub const POSTED: &str = "session_posted";
/// Kind of the AM's word that it could not post the clearing: the deposit was no longer held
/// (the MTA then pays nothing).
pub const RELEASED: &str = "session_released";
/// The clearing grace (how long the AM holds a deposit after the session's end) exceeds the
/// MTA's conclusion window by more than this, seconds: time for the clearing information to
/// reach the AM while it still holds the deposit.
pub const CLEARING_MARGIN_S: i64 = 600;

/// Kind of the AM's word that it gave up waiting for the MTA's answer (its hold is void).
pub const ABORTED: &str = "session_aborted";
/// Kind of the customer's K1 of an order (M9), forwarded by the AM to the MTA.
pub const ORDER_KEY: &str = "session_order_key";
/// Kind of the MTA's receipt of a cleared transaction (`{receipt}`, see [`super::receipt`]).
pub const RECEIPT: &str = "session_receipt";

fn first_seq() -> u64 {
    1
}

fn is_first(seq: &u64) -> bool {
    *seq == 1
}

/// `t` as messages name it: absent for a session's first transaction (messages of sessions
/// with one transaction keep their shape), present after it.
pub fn later(t: TransactionId) -> Option<TransactionId> {
    (t.seq > 1).then_some(t)
}

/// The transaction a message names: `t`, or the session's first when it names none.
pub fn named(session: SessionId, t: Option<TransactionId>) -> TransactionId {
    t.unwrap_or_else(|| session.first_transaction())
}

/// The body of a word about transaction `t` with nothing else to say (`session_disputed`,
/// `session_expired`, `session_aborted`): the session, and the transaction after the first.
pub fn about(t: TransactionId) -> serde_json::Value {
    match later(t) {
        Some(t) => json!({"session": t.session, "transaction": t}),
        None => json!({"session": t.session}),
    }
}

/// How journals, memos and step keys name transaction `t`: by its session while it is the
/// first, by itself after.
pub fn label(t: TransactionId) -> String {
    match later(t) {
        Some(t) => t.to_string(),
        None => t.session.to_string(),
    }
}

/// Where a session stands at the AM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmState {
    /// The deposit is held; the initiation is on its way to the MTA.
    Held,
    /// The MTA acked with its rate: purchases may start.
    Open,
    /// Refused by the MTA or unanswered: the hold is void.
    Aborted,
    /// The customer's record is on its way to the MTA.
    Concluding,
    /// Cleared: the hold posted for what was spent, the rest released.
    Cleared,
    /// The records disagree: nothing posted, the hold kept.
    Disputed,
    /// Ended with nothing to clear (the MTA had no record by its deadline, or the hold ran
    /// out with no word from the MTA): the hold is void.
    Expired,
}

stored_names!(AmState {
    Aborted => "aborted",
    Cleared => "cleared",
    Concluding => "concluding",
    Disputed => "disputed",
    Expired => "expired",
    Held => "held",
    Open => "open",
});

/// Where a session stands at the MTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MtaState {
    /// Registered; the merchant is informed and has not acked yet.
    Informed,
    /// The merchant acked; the AM has the ack.
    Open,
    /// Refused (see [`Refusal`]); the AM has the refusal.
    Refused,
    /// One side's record is in; the other's is awaited.
    Concluding,
    /// Cleared (both records agree, the customer's alone at the deadline, or a verdict): the
    /// AM has the clearing information; the merchant is paid once the AM posted.
    Clearing,
    /// The AM posted the clearing: the merchant is paid.
    Cleared,
    /// The records disagree, or only the merchant's came by the deadline: kept, nothing paid.
    Disputed,
    /// No record came by the conclusion deadline (the AM releases the deposit), or the AM no
    /// longer held the deposit when the clearing reached it: nothing paid.
    Expired,
}

stored_names!(MtaState {
    Cleared => "cleared",
    Clearing => "clearing",
    Concluding => "concluding",
    Disputed => "disputed",
    Expired => "expired",
    Informed => "informed",
    Open => "open",
    Refused => "refused",
});

/// Why the MTA refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// No merchant of that name at the MTA.
    UnknownMerchant,
    /// No exchange rate from the deposit's currency to the merchant's.
    NoRate,
    /// The deposit is not positive in the merchant's currency, or too large.
    BadDeposit,
    /// The merchant declined.
    Declined,
    /// The merchant did not answer in time.
    Unanswered,
    /// The customer's operator gave up waiting for the answer (its hold is void).
    Abandoned,
    /// The merchant ended the session: it takes no next transaction.
    Ended,
}

stored_names!(Refusal {
    Abandoned => "abandoned",
    BadDeposit => "bad_deposit",
    Declined => "declined",
    Ended => "ended",
    NoRate => "no_rate",
    Unanswered => "unanswered",
    UnknownMerchant => "unknown_merchant",
});

/// The amended initiation message (AM → MTA, M2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Initiation {
    /// The session.
    pub session: SessionId,
    /// Its first transaction.
    pub transaction: TransactionId,
    /// The merchant, as the MTA's operator names it.
    pub merchant: String,
    /// The pseudonymous customer identifier (the AM alone knows who it is).
    pub customer: String,
    /// The deposit, in the customer's currency.
    pub deposit: Amount,
    /// The agreed end of the session (µs).
    pub expires_at: i64,
    /// The AM waits for the answer until then (µs): the MTA acks no later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_by: Option<i64>,
    /// The AM's hold runs out then (µs): a clearing that reaches it later is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_at: Option<i64>,
    /// The customer's session key (Ed25519, hex): it signs the tab the customer opens at the
    /// merchant agent (M4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_key: Option<String>,
    /// The AM's temporary certificate of that key (M7, [`super::certs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_cert: Option<String>,
}

/// The MTA's acknowledgement (M3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The session.
    pub session: SessionId,
    /// The transaction acked, after the session's first (M4; absent: the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionId>,
    /// Merchant minor units per customer minor unit.
    pub rate: Rate,
    /// The deposit in the merchant's currency (converted at `rate`, rounded down).
    pub merchant_deposit: Amount,
    /// The key the merchant's agent signs with (Ed25519, hex), as the MTA's operator knows
    /// it: the customer checks the merchant's offers and packages under it (M9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_key: Option<String>,
    /// The MTA's temporary certificate of that key (M7, [`super::certs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_cert: Option<String>,
}

impl Ack {
    /// The transaction acked.
    pub fn transaction_id(&self) -> TransactionId {
        named(self.session, self.transaction)
    }
}

/// The MTA's refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refused {
    /// The session.
    pub session: SessionId,
    /// The transaction refused, after the session's first (M4; absent: the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionId>,
    /// Why.
    pub reason: Refusal,
}

impl Refused {
    /// The transaction refused.
    pub fn transaction_id(&self) -> TransactionId {
        named(self.session, self.transaction)
    }
}

/// Why a session step was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TradeError {
    /// A deposit that is not positive, a timeout in the past, a window that is not positive.
    #[error("invalid session request: {0}")]
    Invalid(&'static str),
    /// The input does not fit the session's state (an answer after the session moved on).
    #[error("the session is {0}: it takes no {1}")]
    State(&'static str, &'static str),
    /// An answer about another session, or in the wrong currency.
    #[error("a message that does not belong to this session: {0}")]
    Mismatch(&'static str),
    /// The merchant answers a session that is no longer waiting for it.
    #[error("the session is {0}: it is not waiting for the merchant")]
    Closed(&'static str),
    /// A timeout fed before its time.
    #[error("not due yet")]
    NotDue,
}

impl Blame for TradeError {
    fn fault(&self) -> Fault {
        match self {
            TradeError::Invalid(_) | TradeError::Closed(_) => Fault::Caller,
            TradeError::State(..) | TradeError::Mismatch(_) => Fault::Peer,
            TradeError::NotDue => Fault::Node,
        }
    }
}

mod am;
mod mta;

pub use am::{AmInput, AmSession, Start};
pub use mta::{MerchantTerms, MtaInput, MtaSession, Windows};

#[cfg(test)]
mod tests;
