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
/// The MTA clears no later than this before the AM's hold runs out, seconds: time for the
/// clearing information to reach the AM while it can still post the hold.
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
    /// Both records agree: the merchant is paid, the AM has the clearing information.
    Cleared,
    /// The records disagree, or only the merchant's came by the deadline: kept, nothing paid.
    Disputed,
    /// No record came by the conclusion deadline: nothing paid, the AM releases the deposit.
    Expired,
}

stored_names!(MtaState {
    Cleared => "cleared",
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
}

stored_names!(Refusal {
    Abandoned => "abandoned",
    BadDeposit => "bad_deposit",
    Declined => "declined",
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
    /// The AM's hold runs out then (µs): the MTA clears no later than [`CLEARING_MARGIN_S`]
    /// before.
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
    /// A verdict on a dispute the session cannot settle (see [`MtaInput::Verdict`]).
    #[error("no verdict through the session: {0}")]
    Unsettled(&'static str),
}

impl Blame for TradeError {
    fn fault(&self) -> Fault {
        match self {
            TradeError::Invalid(_) | TradeError::Closed(_) | TradeError::Unsettled(_) => {
                Fault::Caller
            }
            TradeError::State(..) | TradeError::Mismatch(_) => Fault::Peer,
            TradeError::NotDue => Fault::Node,
        }
    }
}

/// What the AM knows of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmSession {
    /// The session.
    pub id: SessionId,
    /// The number of its current transaction (M4: once one is cleared, the customer may start
    /// the next; absent in stored rows while it is the first).
    #[serde(default = "first_seq", skip_serializing_if = "is_first")]
    pub txn: u64,
    /// Where it stands.
    pub state: AmState,
    /// The MTA's node.
    pub mta: NodeId,
    /// The merchant, as the MTA's operator names it.
    pub merchant: String,
    /// The customer's account the deposit is held on.
    pub account: Id,
    /// The AM's account owed to the MTA's operator (the hold's credit side).
    pub owed: Id,
    /// The pseudonymous customer identifier sent to the MTA.
    pub customer: String,
    /// The customer's session key (hex), sent to the MTA.
    #[serde(default)]
    pub customer_key: Option<String>,
    /// The deposit, in the customer's currency.
    pub deposit: Amount,
    /// The MTA must answer by then (µs).
    pub ack_by: i64,
    /// The agreed end of the session (µs).
    pub expires_at: i64,
    /// When the hold runs out (µs): the session's end plus the clearing grace. With no word
    /// from the MTA by then the session expires here (0 in rows from before it was kept: no
    /// such timeout).
    #[serde(default)]
    pub release_at: i64,
    /// The MTA's rate, once acked.
    pub rate: Option<Rate>,
    /// The deposit in the merchant's currency, once acked.
    pub merchant_deposit: Option<Amount>,
    /// The merchant agent's key, as the MTA's ack named it.
    #[serde(default)]
    pub merchant_key: Option<String>,
    /// Its temporary certificate: the MTA's in the ack, then this AM's own once the caller
    /// checked and re-signed it (M7).
    #[serde(default)]
    pub merchant_cert: Option<String>,
    /// The customer's record, once sent.
    #[serde(default)]
    pub record: Option<Record>,
    /// The MTA's clearing information, once cleared.
    #[serde(default)]
    pub clearing: Option<Clearing>,
    /// The pending hold, while it is pending: set by the caller from the opening step's
    /// journal entry ([`AmSession::with_hold`]); never stored with the session.
    #[serde(skip)]
    pub hold: Option<Id>,
}

/// What a customer asks its AM for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The session (the AM's next number).
    pub id: SessionId,
    /// The MTA's node.
    pub mta: NodeId,
    /// The merchant there.
    pub merchant: String,
    /// The customer's account.
    pub account: Id,
    /// The AM's account owed to the MTA's operator, in the deposit's currency.
    pub owed: Id,
    /// A fresh pseudonym for the customer.
    pub customer: String,
    /// The customer's session key (hex), if it will buy through a merchant agent.
    pub customer_key: Option<String>,
    /// This AM's temporary certificate of that key (M7).
    pub customer_cert: Option<String>,
    /// The deposit.
    pub deposit: Amount,
    /// How long the MTA has to answer, seconds.
    pub ack_window_s: i64,
    /// How long the session may last, seconds.
    pub lifetime_s: i64,
    /// How long after the session's end the hold stays, for the conclusion, seconds.
    pub clearing_grace_s: i64,
    /// The initiation's message id.
    pub message: Id,
}

/// What an AM session takes after it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmInput {
    /// The MTA acked.
    Ack(Ack),
    /// The MTA refused.
    Refused(Refused),
    /// `poll_timeout` passed; the id of the message the step may send (the MTA is told when
    /// the AM gives up waiting).
    Timeout(Id),
    /// The customer's record (checked by the caller under the session key), to forward to
    /// the MTA as `signed` in message `message`.
    Record {
        /// What it says.
        record: Record,
        /// Its signed bytes.
        signed: String,
        /// The forwarding message's id.
        message: Id,
    },
    /// The MTA's clearing information.
    Cleared(Clearing),
    /// The MTA found the records of this transaction disagree.
    Disputed(TransactionId),
    /// The MTA had no record of this transaction by its conclusion deadline.
    Expired(TransactionId),
    /// The customer starts the session's next transaction (M4: the deposit of the one before
    /// was used up, or a purchase did not fit what was left of it): a new hold, a new
    /// initiation.
    Next {
        /// The new deposit, in the session's currency.
        deposit: Amount,
        /// How long the MTA has to answer, seconds.
        ack_window_s: i64,
        /// The initiation's message id.
        message: Id,
    },
    /// The customer's K1 of an order (M9), to forward to the MTA in message `message`.
    OrderKey {
        /// The order.
        order: Id,
        /// K1, 64 hex.
        k1: String,
        /// The forwarding message's id.
        message: Id,
    },
}

impl AmSession {
    /// Starts a session: the hold and the initiation to the MTA.
    pub fn start(s: Start, now: Timestamp) -> Result<(AmSession, Effects), TradeError> {
        if s.deposit.minor <= 0 {
            return Err(TradeError::Invalid("the deposit must be positive"));
        }
        if s.ack_window_s <= 0 || s.lifetime_s <= s.ack_window_s || s.clearing_grace_s < 0 {
            return Err(TradeError::Invalid(
                "the session must outlast the wait for its acknowledgement",
            ));
        }
        let ack_by = now.plus_seconds(s.ack_window_s).as_micros();
        let expires_at = now.plus_seconds(s.lifetime_s).as_micros();
        let release_at = now
            .plus_seconds(s.lifetime_s + s.clearing_grace_s)
            .as_micros();
        let session = AmSession {
            id: s.id,
            txn: 1,
            state: AmState::Held,
            mta: s.mta,
            merchant: s.merchant,
            account: s.account,
            owed: s.owed,
            customer: s.customer,
            customer_key: s.customer_key,
            deposit: s.deposit,
            ack_by,
            expires_at,
            release_at,
            rate: None,
            merchant_deposit: None,
            merchant_key: None,
            merchant_cert: None,
            record: None,
            clearing: None,
            hold: None,
        };
        let effects = session.initiate(
            s.customer_cert,
            s.lifetime_s + s.clearing_grace_s,
            s.message,
        );
        Ok((session, effects))
    }

    /// The session's current transaction.
    pub fn transaction(&self) -> TransactionId {
        TransactionId {
            session: self.id,
            seq: self.txn,
        }
    }

    /// The hold of the current transaction's deposit for `hold_s` seconds, and its initiation
    /// to the MTA.
    fn initiate(&self, customer_cert: Option<String>, hold_s: i64, message: Id) -> Effects {
        let transaction = self.transaction();
        let initiation = Initiation {
            session: self.id,
            transaction,
            merchant: self.merchant.clone(),
            customer: self.customer.clone(),
            deposit: self.deposit,
            expires_at: self.expires_at,
            ack_by: Some(self.ack_by),
            release_at: Some(self.release_at),
            customer_key: self.customer_key.clone(),
            customer_cert,
        };
        let mut effects = Effects::ledger(Command::Transfer {
            debit_account: self.account,
            credit_account: self.owed,
            amount_minor: self.deposit.minor,
            currency: self.deposit.currency,
            timeout_s: Some(hold_s),
            memo: format!("trading session {} deposit", label(transaction)),
        });
        effects.peers.push(PeerMessage {
            to: self.mta,
            id: message,
            kind: INITIATION.into(),
            body: json!(initiation),
        });
        effects
    }

    /// Starts the next transaction of a cleared session (M4): its deposit held until the
    /// session's hold time, its initiation to the MTA. The customer's key and certificate
    /// stay the session's (the MTA has them).
    fn next(
        self,
        now: Timestamp,
        deposit: Amount,
        ack_window_s: i64,
        message: Id,
    ) -> Result<(AmSession, Effects), TradeError> {
        if deposit.minor <= 0 || deposit.currency != self.deposit.currency {
            return Err(TradeError::Invalid(
                "a positive deposit in the session's currency",
            ));
        }
        let ack_by = now.plus_seconds(ack_window_s).as_micros();
        if ack_window_s <= 0 || self.release_at == 0 || ack_by >= self.expires_at {
            return Err(TradeError::Invalid(
                "the session ends before another transaction could be acknowledged",
            ));
        }
        let transaction = self
            .transaction()
            .next()
            .map_err(|_| TradeError::Invalid("no transaction after this one"))?;
        // Held no longer than the session's first deposit: the MTA clears by then.
        let hold_s = (self.release_at - now.as_micros()) / 1_000_000;
        let session = AmSession {
            txn: transaction.seq,
            state: AmState::Held,
            deposit,
            ack_by,
            rate: None,
            merchant_deposit: None,
            merchant_key: None,
            merchant_cert: None,
            record: None,
            clearing: None,
            hold: None,
            ..self
        };
        let effects = session.initiate(None, hold_s, message);
        Ok((session, effects))
    }

    /// The same session knowing its hold (`None` once it is no longer pending).
    pub fn with_hold(mut self, hold: Option<Id>) -> AmSession {
        self.hold = hold;
        self
    }

    /// When the session next needs a step without input.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            AmState::Held => Some(Timestamp(self.ack_by)),
            AmState::Open | AmState::Concluding if self.release_at > 0 => {
                Some(Timestamp(self.release_at))
            }
            AmState::Open
            | AmState::Aborted
            | AmState::Concluding
            | AmState::Cleared
            | AmState::Disputed
            | AmState::Expired => None,
        }
    }

    /// One step.
    pub fn handle(
        self,
        now: Timestamp,
        input: AmInput,
    ) -> Result<(AmSession, Effects), TradeError> {
        match (self.state, input) {
            (AmState::Held, AmInput::Ack(ack)) => {
                if ack.session != self.id || ack.transaction_id() != self.transaction() {
                    return Err(TradeError::Mismatch("another session's ack"));
                }
                if ack.rate.numerator <= 0 || ack.rate.denominator <= 0 {
                    return Err(TradeError::Mismatch("a rate that is not positive"));
                }
                let converted = ack
                    .rate
                    .convert(self.deposit.minor)
                    .map_err(|_| TradeError::Mismatch("a rate that overflows"))?;
                if converted != ack.merchant_deposit.minor || converted <= 0 {
                    return Err(TradeError::Mismatch(
                        "a merchant deposit that is not the deposit at the rate",
                    ));
                }
                let effects = Effects::record(
                    "session_open",
                    json!({"session": self.id, "rate": ack.rate, "merchant_deposit": ack.merchant_deposit}),
                );
                Ok((
                    AmSession {
                        state: AmState::Open,
                        rate: Some(ack.rate),
                        merchant_deposit: Some(ack.merchant_deposit),
                        merchant_key: ack.merchant_key,
                        merchant_cert: ack.merchant_cert,
                        ..self
                    },
                    effects,
                ))
            }
            (AmState::Open, AmInput::OrderKey { order, k1, message }) => {
                if k1.len() != 64 || hex::decode(&k1).is_err() {
                    return Err(TradeError::Invalid("K1 is 64 hex digits"));
                }
                // The journal names K1 by its hash: one K1 per order (the same again is a
                // replay of this step, another one a reused key).
                let k1_sha256 = hex::encode(tally_kernel::crypto::kdf::sha256(k1.as_bytes()));
                let mut effects = Effects::record(
                    "session_order_key",
                    json!({"session": self.id, "order": order, "k1_sha256": k1_sha256}),
                );
                effects.peers.push(PeerMessage {
                    to: self.mta,
                    id: message,
                    kind: ORDER_KEY.into(),
                    body: json!({"session": self.id, "order": order, "k1": k1}),
                });
                Ok((self, effects))
            }
            (AmState::Open, AmInput::Ack(ack))
                if ack.session == self.id
                    && ack.transaction_id() == self.transaction()
                    && Some(ack.rate) == self.rate
                    && Some(ack.merchant_deposit) == self.merchant_deposit =>
            {
                Ok((self, Effects::none()))
            }
            (AmState::Held, AmInput::Refused(r)) => {
                if r.session != self.id || r.transaction_id() != self.transaction() {
                    return Err(TradeError::Mismatch("another session's refusal"));
                }
                let data = json!({"session": self.id, "reason": r.reason.as_str()});
                self.abort(data)
            }
            (AmState::Aborted, AmInput::Refused(r))
                if r.session == self.id && r.transaction_id() == self.transaction() =>
            {
                Ok((self, Effects::none()))
            }
            (AmState::Held, AmInput::Timeout(message)) => {
                if now.as_micros() < self.ack_by {
                    return Err(TradeError::NotDue);
                }
                // The MTA hears that the AM gave up: an ack it sent meanwhile crosses this,
                // and the MTA ends its side too.
                let (mta, transaction) = (self.mta, self.transaction());
                let data = json!({"session": self.id, "reason": "unanswered"});
                let (after, mut effects) = self.abort(data)?;
                effects.peers.push(PeerMessage {
                    to: mta,
                    id: message,
                    kind: ABORTED.into(),
                    body: about(transaction),
                });
                Ok((after, effects))
            }
            // An ack that crossed the AM's giving up: the MTA hears of it (`session_aborted`).
            (AmState::Aborted, AmInput::Ack(ack))
                if ack.session == self.id && ack.transaction_id() == self.transaction() =>
            {
                Ok((self, Effects::none()))
            }
            (
                AmState::Open,
                AmInput::Record {
                    record,
                    signed,
                    message,
                },
            ) => {
                if self.release_at > 0 && now.as_micros() >= self.release_at {
                    // The hold ran out (the sweeper has not moved the session yet): nothing
                    // could be paid from it.
                    return Err(TradeError::State("expired", "record"));
                }
                let merchant_deposit = self.merchant_deposit.ok_or(TradeError::NotDue)?;
                if record.transaction != self.transaction()
                    || record.side != Side::Customer
                    || record.total.currency != merchant_deposit.currency
                    || record.total.minor > merchant_deposit.minor
                {
                    return Err(TradeError::Invalid(
                        "a record of this session's transaction, within its deposit",
                    ));
                }
                let mut effects = Effects::record(
                    "session_concluding",
                    json!({"session": self.id, "count": record.count}),
                );
                effects.peers.push(PeerMessage {
                    to: self.mta,
                    id: message,
                    kind: RECORD.into(),
                    body: json!({"signed": signed}),
                });
                Ok((
                    AmSession {
                        state: AmState::Concluding,
                        record: Some(record),
                        ..self
                    },
                    effects,
                ))
            }
            (
                AmState::Concluding | AmState::Cleared | AmState::Disputed,
                AmInput::Record { record, .. },
            ) if self.record.as_ref() == Some(&record) => Ok((self, Effects::none())),
            // The MTA's operator settled a dispute (the dispute itself may still be on its way).
            (
                AmState::Disputed | AmState::Concluding | AmState::Held | AmState::Open,
                AmInput::Cleared(c),
            ) if c.verdict => {
                let rate = self.rate.ok_or(TradeError::NotDue)?;
                let fits = c.transaction == self.transaction()
                    && c.customer_total.currency == self.deposit.currency
                    && Some(c.customer_total.minor) == customer_total(c.total.minor, rate)
                    && c.customer_total.minor <= self.deposit.minor;
                if !fits {
                    return Err(TradeError::Mismatch(
                        "a verdict that is not this session's deposit at its rate",
                    ));
                }
                self.post(c)
            }
            (AmState::Concluding, AmInput::Cleared(c)) => {
                let mine = self.record.clone().ok_or(TradeError::NotDue)?;
                let rate = self.rate.ok_or(TradeError::NotDue)?;
                let agrees = c.transaction == mine.transaction
                    && c.total == mine.total
                    && c.count == mine.count
                    && c.list == mine.list
                    && c.customer_total.currency == self.deposit.currency
                    && Some(c.customer_total.minor) == customer_total(c.total.minor, rate)
                    && c.customer_total.minor <= self.deposit.minor;
                if !agrees {
                    return Err(TradeError::Mismatch(
                        "clearing information that is not the customer's record",
                    ));
                }
                self.post(c)
            }
            // Cleared at the deadline on a merchant's record that claims nothing, before the
            // customer sent one: nothing is spent, the deposit is released.
            (AmState::Held | AmState::Open, AmInput::Cleared(c))
                if c.total.minor == 0
                    && c.customer_total.minor == 0
                    && c.count == 0
                    && c.transaction == self.transaction() =>
            {
                let data = json!({"session": self.id, "count": 0});
                let (after, effects) = self.end(AmState::Cleared, "session_cleared", data)?;
                Ok((
                    AmSession {
                        clearing: Some(c),
                        ..after
                    },
                    effects,
                ))
            }
            (AmState::Cleared, AmInput::Cleared(c)) if self.clearing.as_ref() == Some(&c) => {
                Ok((self, Effects::none()))
            }
            // Disputed at the deadline with the merchant's record alone: the customer never
            // sent one (or it is still on its way).
            (AmState::Held | AmState::Open | AmState::Concluding, AmInput::Disputed(t))
                if t == self.transaction() =>
            {
                let effects = Effects::record("session_disputed", about(self.transaction()));
                Ok((
                    AmSession {
                        state: AmState::Disputed,
                        ..self
                    },
                    effects,
                ))
            }
            (AmState::Disputed, AmInput::Disputed(t)) if t == self.transaction() => {
                Ok((self, Effects::none()))
            }
            // The MTA saw no record by its deadline. Messages cross: the ack may come after
            // this, and the customer's record may have left for the MTA too late.
            (AmState::Held | AmState::Open | AmState::Concluding, AmInput::Expired(t))
                if t == self.transaction() =>
            {
                let data = json!({"session": self.id, "reason": "no_record"});
                self.end(AmState::Expired, "session_expired", data)
            }
            (AmState::Expired, AmInput::Expired(t)) if t == self.transaction() => {
                Ok((self, Effects::none()))
            }
            (AmState::Expired, AmInput::Ack(ack))
                if ack.session == self.id && ack.transaction_id() == self.transaction() =>
            {
                Ok((self, Effects::none()))
            }
            (AmState::Open | AmState::Concluding, AmInput::Timeout(_)) => {
                if self.release_at == 0 || now.as_micros() < self.release_at {
                    return Err(TradeError::NotDue);
                }
                // The hold's own timeout is this instant: the ledger releases it, a void
                // would come too late.
                let data = json!({"session": self.id, "reason": "no_word_from_the_mta"});
                self.with_hold(None)
                    .end(AmState::Expired, "session_expired", data)
            }
            (
                AmState::Cleared,
                AmInput::Next {
                    deposit,
                    ack_window_s,
                    message,
                },
            ) => self.next(now, deposit, ack_window_s, message),
            (state, input) => Err(TradeError::State(
                state.as_str(),
                match input {
                    AmInput::Ack(_) => "acknowledgement",
                    AmInput::Refused(_) => "refusal",
                    AmInput::Timeout(_) => "timeout",
                    AmInput::Record { .. } => "record",
                    AmInput::Cleared(_) => "clearing",
                    AmInput::Disputed(_) => "dispute",
                    AmInput::Expired(_) => "expiry",
                    AmInput::OrderKey { .. } => "order key",
                    AmInput::Next { .. } => "next transaction",
                },
            )),
        }
    }

    /// Posts the hold for the customer's total (the rest is released), or voids it when
    /// nothing was spent.
    fn post(self, c: Clearing) -> Result<(AmSession, Effects), TradeError> {
        let effects = match self.hold {
            Some(hold) if c.customer_total.minor > 0 => Effects::ledger(Command::Post {
                pending_id: hold,
                amount_minor: Some(c.customer_total.minor),
            }),
            Some(hold) => Effects::ledger(Command::Void { pending_id: hold }),
            None => return Err(TradeError::Mismatch("the deposit is no longer held")),
        };
        Ok((
            AmSession {
                state: AmState::Cleared,
                clearing: Some(c),
                ..self
            },
            effects,
        ))
    }

    fn abort(self, data: serde_json::Value) -> Result<(AmSession, Effects), TradeError> {
        self.end(AmState::Aborted, "session_aborted", data)
    }

    /// Ends the session with nothing spent: the hold voided (when it is still pending).
    fn end(
        self,
        state: AmState,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<(AmSession, Effects), TradeError> {
        let effects = match self.hold {
            Some(hold) => Effects::ledger(Command::Void { pending_id: hold }),
            // The hold expired already: nothing to release, the step is only recorded.
            None => Effects::record(kind, data),
        };
        Ok((AmSession { state, ..self }, effects))
    }
}

/// What the MTA knows of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MtaSession {
    /// The session.
    pub id: SessionId,
    /// The number of its current transaction (M4; absent in stored rows while it is the
    /// first).
    #[serde(default = "first_seq", skip_serializing_if = "is_first")]
    pub txn: u64,
    /// Where it stands.
    pub state: MtaState,
    /// The customer's AM.
    pub am: NodeId,
    /// The merchant.
    pub merchant: String,
    /// The pseudonymous customer identifier.
    pub customer: String,
    /// The customer's session key (hex), for the merchant agent.
    #[serde(default)]
    pub customer_key: Option<String>,
    /// The deposit in the customer's currency.
    pub deposit: Amount,
    /// The deposit in the merchant's currency (zero when refused before conversion).
    pub merchant_deposit: Amount,
    /// The rate used (merchant minor units per customer minor unit).
    pub rate: Rate,
    /// The merchant must ack by then (µs).
    pub ack_by: i64,
    /// The agreed end of the session (µs).
    pub expires_at: i64,
    /// The records must be in by then (µs): the session's end plus the conclusion window (0
    /// in rows from before it was kept: no such timeout).
    #[serde(default)]
    pub conclude_by: i64,
    /// The AM's hold runs out then (µs; 0: not told).
    #[serde(default)]
    pub release_at: i64,
    /// Why it was refused.
    pub refusal: Option<Refusal>,
    /// Where the merchant is paid.
    #[serde(default)]
    pub account: Option<Id>,
    /// The MTA's account owed by the AM's operator (debited when the merchant is paid).
    #[serde(default)]
    pub owed_by: Option<Id>,
    /// The merchant agent's key when the session was registered (sent with the ack).
    #[serde(default)]
    pub merchant_key: Option<String>,
    /// This MTA's temporary certificate of that key, sent with the ack (M7).
    #[serde(default)]
    pub merchant_cert: Option<String>,
    /// The customer's key as this MTA certifies it for the merchant, after checking the AM's
    /// certificate (set by the caller, M7).
    #[serde(default)]
    pub customer_cert: Option<String>,
    /// The customer's record, once in.
    #[serde(default)]
    pub customer_record: Option<Record>,
    /// The merchant's record, once in.
    #[serde(default)]
    pub merchant_record: Option<Record>,
    /// What the MTA's operator decided the merchant is paid, on a dispute.
    #[serde(default)]
    pub verdict: Option<Amount>,
    /// The customer's record as signed, with its key, for the receipt (set by the caller
    /// with the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_signed: Option<super::receipt::Signed>,
    /// The merchant's record as signed, with its key, for the receipt (set by the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_signed: Option<super::receipt::Signed>,
}

/// What the MTA's operator knows of the merchant an initiation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantTerms {
    /// The merchant's currency.
    pub currency: tally_kernel::Currency,
    /// The rate from the deposit's currency to it (`None`: none known).
    pub rate: Option<Rate>,
    /// Agent mode: ack every session at once.
    pub auto_ack: bool,
    /// Where the merchant is paid.
    pub account: Id,
    /// The MTA's account owed by the AM's operator, in the merchant's currency.
    pub owed_by: Id,
    /// The key the merchant's agent signs with, if it registered one.
    pub agent_key: Option<String>,
    /// This MTA's temporary certificate of that key for the session (M7).
    pub agent_cert: Option<String>,
}

/// How long the MTA waits (seconds): for the merchant's ack, and for the records after the
/// session's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// For the merchant's ack.
    pub ack_s: i64,
    /// For the records, after the session's agreed end.
    pub conclusion_s: i64,
}

/// What an MTA session takes after it was registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MtaInput {
    /// The merchant acks.
    MerchantAck,
    /// The merchant declines.
    MerchantDecline,
    /// `poll_timeout` passed.
    Timeout,
    /// A record of either side, checked by the caller under that side's key.
    Record(Record),
    /// The AM gave up waiting for the answer (`session_aborted`).
    Abandoned,
    /// The MTA's operator settles a dispute: the merchant is paid this (its currency, from
    /// nothing up to the deposit), the customer that converted back, the rest released.
    Verdict(Amount),
}

impl MtaSession {
    /// Registers an initiation from the AM `from`: informed (or open in agent mode), or
    /// refused with a reason the AM is told. `message` is the id of the answer, if one goes.
    pub fn register(
        init: Initiation,
        from: NodeId,
        merchant: Option<MerchantTerms>,
        windows: Windows,
        now: Timestamp,
        message: Id,
    ) -> Result<(MtaSession, Effects), TradeError> {
        if init.session.am != from || init.transaction.session != init.session {
            return Err(TradeError::Mismatch(
                "an initiation from another node than its session's AM",
            ));
        }
        let session = MtaSession {
            id: init.session,
            txn: init.transaction.seq,
            state: MtaState::Informed,
            am: from,
            merchant: init.merchant,
            customer: init.customer,
            customer_key: init.customer_key,
            deposit: init.deposit,
            merchant_deposit: Amount::new(0, init.deposit.currency),
            rate: Rate {
                numerator: 1,
                denominator: 1,
            },
            ack_by: 0,
            expires_at: init.expires_at,
            conclude_by: Timestamp(init.expires_at)
                .plus_seconds(windows.conclusion_s)
                .as_micros(),
            release_at: init.release_at.unwrap_or(0),
            refusal: None,
            account: None,
            owed_by: None,
            merchant_key: None,
            merchant_cert: None,
            customer_cert: None,
            customer_record: None,
            merchant_record: None,
            verdict: None,
            customer_signed: None,
            merchant_signed: None,
        };
        Ok(session.offer(init.ack_by, merchant, windows, now, message))
    }

    /// Takes the initiation of the session's next transaction (M4) from its AM, once the one
    /// before is cleared: informed (or open in agent mode) at the merchant's terms of now, or
    /// refused. The session's merchant, customer, key and times stay.
    pub fn next(
        self,
        init: Initiation,
        from: NodeId,
        merchant: Option<MerchantTerms>,
        windows: Windows,
        now: Timestamp,
        message: Id,
    ) -> Result<(MtaSession, Effects), TradeError> {
        let same = from == self.am
            && init.session == self.id
            && init.merchant == self.merchant
            && init.customer == self.customer
            && init.customer_key == self.customer_key
            && init.customer_cert.is_none()
            && init.expires_at == self.expires_at
            && init.release_at.unwrap_or(0) == self.release_at
            && init.deposit.currency == self.deposit.currency;
        if !same {
            return Err(TradeError::Mismatch(
                "another transaction that is not this session's",
            ));
        }
        if self.state != MtaState::Cleared {
            return Err(TradeError::State(self.state.as_str(), "next transaction"));
        }
        if Ok(init.transaction) != self.transaction().next() {
            return Err(TradeError::Mismatch("a transaction that is not the next"));
        }
        let session = MtaSession {
            txn: init.transaction.seq,
            state: MtaState::Informed,
            deposit: init.deposit,
            merchant_deposit: Amount::new(0, init.deposit.currency),
            refusal: None,
            customer_record: None,
            merchant_record: None,
            verdict: None,
            customer_signed: None,
            merchant_signed: None,
            ..self
        };
        Ok(session.offer(init.ack_by, merchant, windows, now, message))
    }

    /// The session's current transaction.
    pub fn transaction(&self) -> TransactionId {
        TransactionId {
            session: self.id,
            seq: self.txn,
        }
    }

    /// The current transaction offered to the merchant on `terms`: its deposit converted,
    /// then informed, acked at once in agent mode, or refused with a reason the AM is told.
    fn offer(
        mut self,
        am_waits: Option<i64>,
        merchant: Option<MerchantTerms>,
        windows: Windows,
        now: Timestamp,
        message: Id,
    ) -> (MtaSession, Effects) {
        let am_waits = am_waits.unwrap_or(i64::MAX);
        // Never ack after the AM stopped waiting.
        self.ack_by = now
            .plus_seconds(windows.ack_s)
            .as_micros()
            .min(self.expires_at)
            .min(am_waits);
        if now.as_micros() >= am_waits {
            // Arrived after the AM gave up: it is not waiting for an answer any more.
            return self.refuse(Refusal::Unanswered, message);
        }
        let Some(terms) = merchant else {
            return self.refuse(Refusal::UnknownMerchant, message);
        };
        let rate = match terms.rate {
            Some(r) => r,
            None if terms.currency == self.deposit.currency => Rate {
                numerator: 1,
                denominator: 1,
            },
            None => return self.refuse(Refusal::NoRate, message),
        };
        let converted = match rate.convert(self.deposit.minor) {
            Ok(m) if m > 0 && self.deposit.minor > 0 => m,
            _ => return self.refuse(Refusal::BadDeposit, message),
        };
        let mut session = self;
        session.rate = rate;
        session.merchant_deposit = Amount::new(converted, terms.currency);
        session.account = Some(terms.account);
        session.owed_by = Some(terms.owed_by);
        session.merchant_key = terms.agent_key;
        session.merchant_cert = terms.agent_cert;
        if terms.auto_ack {
            return session.acked(message);
        }
        let effects = Effects::record(
            "session_informed",
            json!({"session": session.id, "transaction": session.transaction(), "merchant": session.merchant}),
        );
        (session, effects)
    }

    /// The current transaction's receipt (see [`super::receipt`]), once it is cleared: the
    /// clearing information and each side's record as signed, signed with `node_key` (this
    /// node's) at `at`.
    pub fn receipt(
        &self,
        clearing: &Clearing,
        node_key: &tally_kernel::crypto::SigningKey,
        at: i64,
    ) -> Result<String, super::receipt::ReceiptError> {
        let key = node_key.verifying_key();
        super::receipt::SessionReceipt {
            at,
            clearing: clearing.clone(),
            customer: self
                .customer_signed
                .clone()
                .filter(|_| self.customer_record.is_some()),
            issuer: NodeId::of(&key),
            issuer_key: key.to_hex(),
            merchant: self
                .merchant_signed
                .clone()
                .filter(|_| self.merchant_record.is_some()),
            rate: self.rate,
        }
        .issue(node_key)
    }

    /// Whether orders' keys (M9) are taken: while purchases may be made.
    pub fn takes_orders(&self) -> bool {
        self.state == MtaState::Open
    }

    /// When the session next needs a step without input.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            MtaState::Informed => Some(Timestamp(self.ack_by)),
            MtaState::Open | MtaState::Concluding if self.conclude_by > 0 => {
                Some(Timestamp(self.conclude_by))
            }
            MtaState::Open
            | MtaState::Refused
            | MtaState::Concluding
            | MtaState::Cleared
            | MtaState::Disputed
            | MtaState::Expired => None,
        }
    }

    /// One step. `message` is the id of the answer to the AM, if one goes.
    pub fn handle(
        self,
        now: Timestamp,
        input: MtaInput,
        message: Id,
    ) -> Result<(MtaSession, Effects), TradeError> {
        match (self.state, input) {
            // Past the answer time the sweeper refuses it (the AM stopped waiting).
            (MtaState::Informed, MtaInput::MerchantAck | MtaInput::MerchantDecline)
                if now.as_micros() >= self.ack_by =>
            {
                Err(TradeError::Closed("past its answer time"))
            }
            (MtaState::Informed, MtaInput::MerchantAck) => Ok(self.acked(message)),
            (MtaState::Open, MtaInput::MerchantAck) => Ok((self, Effects::none())),
            (MtaState::Informed, MtaInput::MerchantDecline) => {
                Ok(self.refuse(Refusal::Declined, message))
            }
            (MtaState::Informed, MtaInput::Timeout) => {
                if now.as_micros() < self.ack_by {
                    return Err(TradeError::NotDue);
                }
                Ok(self.refuse(Refusal::Unanswered, message))
            }
            // The AM gave up waiting: its hold is void, the session cannot go on. Nothing is
            // sent back (the AM knows).
            (MtaState::Informed | MtaState::Open, MtaInput::Abandoned) => {
                let effects = Effects::record(
                    "session_refused",
                    json!({"session": self.id, "reason": Refusal::Abandoned.as_str()}),
                );
                Ok((
                    MtaSession {
                        state: MtaState::Refused,
                        refusal: Some(Refusal::Abandoned),
                        ..self
                    },
                    effects,
                ))
            }
            (MtaState::Refused, MtaInput::Abandoned) => Ok((self, Effects::none())),
            (MtaState::Open | MtaState::Concluding, MtaInput::Timeout) => {
                if self.conclude_by == 0 || now.as_micros() < self.conclude_by {
                    return Err(TradeError::NotDue);
                }
                Ok(self.deadline(now, message))
            }
            (MtaState::Open | MtaState::Concluding, MtaInput::Record(_))
                if self.conclude_by > 0 && now.as_micros() >= self.conclude_by =>
            {
                // The deadline passed (the sweeper has not moved the session yet).
                Err(TradeError::Closed("past its conclusion deadline"))
            }
            (MtaState::Open | MtaState::Concluding, MtaInput::Record(r)) => {
                self.with_record(r, now, message)
            }
            (MtaState::Cleared | MtaState::Disputed, MtaInput::Record(r))
                if self.record_of(r.side) == Some(&r) =>
            {
                Ok((self, Effects::none()))
            }
            (MtaState::Disputed, MtaInput::Verdict(total)) => self.resolve(total, now, message),
            (MtaState::Cleared, MtaInput::Verdict(total)) if self.verdict == Some(total) => {
                Ok((self, Effects::none()))
            }
            (_, MtaInput::Timeout) => Err(TradeError::NotDue),
            (state, _) => Err(TradeError::Closed(state.as_str())),
        }
    }

    fn record_of(&self, side: Side) -> Option<&Record> {
        match side {
            Side::Customer => self.customer_record.as_ref(),
            Side::Merchant => self.merchant_record.as_ref(),
        }
    }

    /// A record in: kept; with both in, the transaction is cleared or disputed.
    fn with_record(
        self,
        r: Record,
        now: Timestamp,
        message: Id,
    ) -> Result<(MtaSession, Effects), TradeError> {
        if r.transaction != self.transaction() || r.total.currency != self.merchant_deposit.currency
        {
            return Err(TradeError::Mismatch(
                "a record of another transaction or currency",
            ));
        }
        match self.record_of(r.side) {
            Some(before) if *before == r => return Ok((self, Effects::none())),
            Some(_) => {
                return Err(TradeError::Mismatch(
                    "a second, different record of one side",
                ));
            }
            None => {}
        }
        let mut after = self;
        match r.side {
            Side::Customer => after.customer_record = Some(r),
            Side::Merchant => after.merchant_record = Some(r),
        }
        let (Some(c), Some(m)) = (after.customer_record.clone(), after.merchant_record.clone())
        else {
            after.state = MtaState::Concluding;
            let effects = Effects::record(
                "session_record",
                json!({"session": after.id, "sides": if after.customer_record.is_some() { "customer" } else { "merchant" }}),
            );
            return Ok((after, effects));
        };
        if c.agrees_with(&m) {
            Ok(after.clear(&m, now, message))
        } else {
            Ok(after.dispute(message))
        }
    }

    /// The conclusion deadline passed with a record missing. The customer's record alone is
    /// what the customer admits it spent: it clears (the merchant, who sent none, takes it).
    /// The merchant's alone proves nothing (the tab's MAC key is the merchant's too): a
    /// dispute, unless it claims nothing. Neither: the session expired, nothing is paid and
    /// the AM releases the deposit.
    fn deadline(self, now: Timestamp, message: Id) -> (MtaSession, Effects) {
        match (self.customer_record.clone(), self.merchant_record.clone()) {
            (Some(c), None) => self.clear(&c, now, message),
            // A merchant that claims nothing (a tab opened, nothing bought): nothing to
            // dispute.
            (None, Some(m)) if m.total.minor == 0 && m.count == 0 => self.clear(&m, now, message),
            (_, Some(_)) => self.dispute(message),
            (None, None) => self.expire("no_record", message),
        }
    }

    /// Ends the session with nothing paid and tells the AM, which releases the deposit.
    fn expire(self, reason: &str, message: Id) -> (MtaSession, Effects) {
        let mut effects = Effects::record(
            "session_expired",
            json!({"session": self.id, "reason": reason}),
        );
        effects.peers.push(PeerMessage {
            to: self.am,
            id: message,
            kind: EXPIRED.into(),
            body: about(self.transaction()),
        });
        (
            MtaSession {
                state: MtaState::Expired,
                ..self
            },
            effects,
        )
    }

    /// Clears the transaction on `basis` (a record both sides agree on, or the customer's
    /// alone at the deadline): the merchant is paid its total, the AM gets the clearing
    /// information. A total beyond the deposit, or a session without its accounts, is a
    /// dispute instead.
    fn clear(self, basis: &Record, now: Timestamp, message: Id) -> (MtaSession, Effects) {
        if self.release_at > 0 && now.plus_seconds(CLEARING_MARGIN_S).as_micros() >= self.release_at
        {
            // The AM's hold runs out before the clearing could reach it (this node was down
            // past the deadline): nothing is paid on either side.
            return self.expire("hold_running_out", message);
        }
        let within = basis.total.minor <= self.merchant_deposit.minor
            && basis.total.currency == self.merchant_deposit.currency;
        let paid = customer_total(basis.total.minor, self.rate);
        let (true, Some(paid), Some(account), Some(owed_by)) =
            (within, paid, self.account, self.owed_by)
        else {
            return self.dispute(message);
        };
        if paid > self.deposit.minor {
            return self.dispute(message);
        }
        let clearing = Clearing {
            transaction: basis.transaction,
            total: basis.total,
            customer_total: Amount::new(paid, self.deposit.currency),
            count: basis.count,
            list: basis.list.clone(),
            verdict: false,
        };
        self.pay(clearing, account, owed_by, message)
    }

    /// Pays the merchant the clearing's total from what the customer's operator owes, and
    /// sends the AM the clearing information.
    fn pay(
        self,
        clearing: Clearing,
        account: Id,
        owed_by: Id,
        message: Id,
    ) -> (MtaSession, Effects) {
        let basis = &clearing;
        let mut effects = if basis.total.minor > 0 {
            Effects::ledger(Command::Transfer {
                debit_account: owed_by,
                credit_account: account,
                amount_minor: basis.total.minor,
                currency: basis.total.currency,
                timeout_s: None,
                memo: format!("trading session {} cleared", label(self.transaction())),
            })
        } else {
            Effects::record("session_cleared", json!({"session": self.id}))
        };
        effects.peers.push(PeerMessage {
            to: self.am,
            id: message,
            kind: CLEARED.into(),
            body: json!(clearing),
        });
        (
            MtaSession {
                state: MtaState::Cleared,
                ..self
            },
            effects,
        )
    }

    /// Settles a dispute on the operator's verdict: the merchant is paid `total`, the AM gets
    /// clearing information marked as a verdict (it posts the customer's side whatever its
    /// own record says). Refused beyond the deposit, in another currency, without the
    /// customer's record, or when the AM's hold runs out before the clearing could reach it
    /// (then the deposit is released there and nothing can be paid through the session).
    fn resolve(
        self,
        total: Amount,
        now: Timestamp,
        message: Id,
    ) -> Result<(MtaSession, Effects), TradeError> {
        // Only on the customer's record forwarded by its operator: the AM then keeps the hold
        // until it hears the outcome (or its hold runs out, see the margin below). With the
        // merchant's record alone the AM may have released the deposit already (it gave up,
        // or never heard of the dispute): nothing can be paid through the session.
        if self.customer_record.is_none() {
            return Err(TradeError::Unsettled(
                "disputed on the merchant's record alone (the customer's operator may have released the deposit)",
            ));
        }
        if total.currency != self.merchant_deposit.currency
            || total.minor < 0
            || total.minor > self.merchant_deposit.minor
        {
            return Err(TradeError::Invalid(
                "a verdict from nothing up to the deposit, in the merchant's currency",
            ));
        }
        if self.release_at > 0 && now.plus_seconds(CLEARING_MARGIN_S).as_micros() >= self.release_at
        {
            return Err(TradeError::Unsettled(
                "too close to the end of the customer's hold (the deposit is released then)",
            ));
        }
        let paid = customer_total(total.minor, self.rate)
            .filter(|paid| *paid <= self.deposit.minor)
            .ok_or(TradeError::Invalid("a verdict the deposit covers"))?;
        let (Some(account), Some(owed_by)) = (self.account, self.owed_by) else {
            return Err(TradeError::Invalid("a session with its accounts"));
        };
        let basis = self
            .merchant_record
            .as_ref()
            .or(self.customer_record.as_ref());
        let clearing = Clearing {
            transaction: self.transaction(),
            total,
            customer_total: Amount::new(paid, self.deposit.currency),
            count: basis.map_or(0, |r| r.count),
            list: basis.map_or_else(|| hex::encode([0u8; 32]), |r| r.list.clone()),
            verdict: true,
        };
        let (after, effects) = MtaSession {
            verdict: Some(total),
            ..self
        }
        .pay(clearing, account, owed_by, message);
        Ok((after, effects))
    }

    /// Keeps both records (either may be missing) and tells the AM: nothing is paid.
    fn dispute(self, message: Id) -> (MtaSession, Effects) {
        let mut effects = Effects::record(
            "session_disputed",
            json!({"session": self.id, "customer": self.customer_record, "merchant": self.merchant_record}),
        );
        effects.peers.push(PeerMessage {
            to: self.am,
            id: message,
            kind: DISPUTED.into(),
            body: about(self.transaction()),
        });
        (
            MtaSession {
                state: MtaState::Disputed,
                ..self
            },
            effects,
        )
    }

    fn acked(self, message: Id) -> (MtaSession, Effects) {
        let ack = Ack {
            session: self.id,
            transaction: later(self.transaction()),
            rate: self.rate,
            merchant_deposit: self.merchant_deposit,
            merchant_key: self.merchant_key.clone(),
            merchant_cert: self.merchant_cert.clone(),
        };
        let mut effects = Effects::record("session_acked", json!(ack));
        effects.peers.push(PeerMessage {
            to: self.am,
            id: message,
            kind: ACK.into(),
            body: json!(ack),
        });
        (
            MtaSession {
                state: MtaState::Open,
                ..self
            },
            effects,
        )
    }

    fn refuse(self, reason: Refusal, message: Id) -> (MtaSession, Effects) {
        let refused = Refused {
            session: self.id,
            transaction: later(self.transaction()),
            reason,
        };
        let mut effects = Effects::record("session_refused", json!(refused));
        effects.peers.push(PeerMessage {
            to: self.am,
            id: message,
            kind: REFUSED.into(),
            body: json!(refused),
        });
        (
            MtaSession {
                state: MtaState::Refused,
                refusal: Some(reason),
                ..self
            },
            effects,
        )
    }
}

#[cfg(test)]
mod tests;
