//! The customer's account manager's side of a trading session (see [`super`]).

use super::*;

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
    /// Why the current transaction was aborted: the MTA's refusal, or `unanswered` when the
    /// AM gave up waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
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
    /// The MTA's clearing information; `message` is the id of the answer (`session_posted`, or
    /// `session_released` when the deposit is no longer held).
    Cleared {
        /// What the MTA cleared.
        clearing: Clearing,
        /// The answer's id.
        message: Id,
    },
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
            refusal: None,
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
        effects
            .peers
            .push(self.to_mta(message, INITIATION, json!(initiation)));
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
            refusal: None,
            hold: None,
            ..self
        };
        let effects = session.initiate(None, hold_s, message);
        Ok((session, effects))
    }

    /// A message about this session to its MTA.
    fn to_mta(&self, message: Id, kind: &str, body: serde_json::Value) -> PeerMessage {
        PeerMessage {
            to: self.mta,
            id: message,
            kind: kind.into(),
            body,
        }
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
                effects.peers.push(self.to_mta(
                    message,
                    ORDER_KEY,
                    json!({"session": self.id, "order": order, "k1": k1}),
                ));
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
                let (after, effects) = self.abort(data)?;
                Ok((
                    AmSession {
                        refusal: Some(r.reason),
                        ..after
                    },
                    effects,
                ))
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
                let data = json!({"session": self.id, "reason": "unanswered"});
                let (mut after, mut effects) = self.abort(data)?;
                after.refusal = Some(Refusal::Unanswered);
                effects
                    .peers
                    .push(after.to_mta(message, ABORTED, about(after.transaction())));
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
                effects
                    .peers
                    .push(self.to_mta(message, RECORD, json!({"signed": signed})));
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
            (AmState::Cleared, AmInput::Cleared { clearing: c, .. })
                if self.clearing.as_ref() == Some(&c) =>
            {
                Ok((self, Effects::none()))
            }
            // Every clearing of the current transaction is answered, posted or released (the
            // MTA pays only on `session_posted` and waits for one or the other): a refusal
            // would leave it waiting for good.
            (
                AmState::Held
                | AmState::Open
                | AmState::Concluding
                | AmState::Disputed
                | AmState::Expired
                | AmState::Aborted,
                AmInput::Cleared {
                    clearing: c,
                    message,
                },
            ) if c.transaction == self.transaction() => Ok(if self.postable(&c) {
                self.post(c, message)
            } else {
                self.release(message)
            }),
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
                    AmInput::Cleared { .. } => "clearing",
                    AmInput::Disputed(_) => "dispute",
                    AmInput::Expired(_) => "expiry",
                    AmInput::OrderKey { .. } => "order key",
                    AmInput::Next { .. } => "next transaction",
                },
            )),
        }
    }

    /// Posts the hold for the customer's total (the rest is released), or voids it when
    /// nothing was spent, and tells the MTA (`session_posted`), which then pays the merchant.
    /// A hold no longer pending (it ran out) posts nothing: the MTA hears so instead.
    fn post(self, c: Clearing, message: Id) -> (AmSession, Effects) {
        let mut effects = match self.hold {
            Some(hold) if c.customer_total.minor > 0 => Effects::ledger(Command::Post {
                pending_id: hold,
                amount_minor: Some(c.customer_total.minor),
            }),
            Some(hold) => Effects::ledger(Command::Void { pending_id: hold }),
            None => return self.release(message),
        };
        effects
            .peers
            .push(self.to_mta(message, POSTED, about(self.transaction())));
        (
            AmSession {
                state: AmState::Cleared,
                clearing: Some(c),
                ..self
            },
            effects,
        )
    }

    /// Whether the AM posts clearing `c` of its current transaction: while it holds the
    /// deposit, when `c` is the customer's record at the session's rate (or a verdict at that
    /// rate, whatever the record said), or claims nothing at all (the merchant's record alone
    /// at the MTA's deadline, before the customer's reached it). Anything else is released.
    fn postable(&self, c: &Clearing) -> bool {
        let holding = matches!(
            self.state,
            AmState::Held | AmState::Open | AmState::Concluding | AmState::Disputed
        );
        let nothing = c.total.minor == 0
            && c.customer_total.minor == 0
            && c.count == 0
            && !c.verdict
            && self.state != AmState::Disputed;
        let at_rate = self.rate.is_some_and(|rate| {
            c.customer_total.currency == self.deposit.currency
                && Some(c.customer_total.minor) == customer_total(c.total.minor, rate)
                && c.customer_total.minor <= self.deposit.minor
        });
        let mine = self.record.as_ref().is_some_and(|r| {
            self.state == AmState::Concluding
                && c.total == r.total
                && c.count == r.count
                && c.list == r.list
        });
        holding && (nothing || (at_rate && (c.verdict || mine)))
    }

    /// Tells the MTA that this transaction's clearing was not posted (the deposit is no
    /// longer held, or the clearing is not one the AM posts, [`AmSession::postable`]): it pays
    /// nothing. A hold still pending is voided; the transaction has ended here.
    fn release(self, message: Id) -> (AmSession, Effects) {
        let data = json!({"session": self.id, "transaction": self.transaction(), "state": self.state.as_str()});
        let mut effects = match self.hold {
            Some(hold) => Effects::ledger(Command::Void { pending_id: hold }),
            None => Effects::record("session_released", data),
        };
        let state = match self.state {
            AmState::Aborted => AmState::Aborted,
            _ => AmState::Expired,
        };
        let after = AmSession {
            state,
            hold: None,
            ..self
        };
        effects
            .peers
            .push(after.to_mta(message, RELEASED, about(after.transaction())));
        (after, effects)
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
