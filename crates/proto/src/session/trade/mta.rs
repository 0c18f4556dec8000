//! The mediating trusted agent's side of a trading session (see [`super`]).

use super::*;

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
    /// The clearing information sent to the AM, from `clearing` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clearing: Option<Clearing>,
    /// The merchant ended the session (its terminate, M4): no transaction after the current
    /// one (a next one is refused, `ended`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merchant_ended: bool,
    /// The customer's record as signed, with its key, for the receipt (set by the caller
    /// with the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_signed: Option<crate::session::receipt::Signed>,
    /// The merchant's record as signed, with its key, for the receipt (set by the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_signed: Option<crate::session::receipt::Signed>,
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
    /// The AM posted the clearing of the current transaction (`session_posted`): the merchant
    /// is paid.
    Posted,
    /// The AM could not post the clearing of the current transaction, its deposit no longer
    /// held (`session_released`): nothing is paid.
    Released,
    /// The merchant ends the session (its terminate): the current transaction concludes as
    /// it would, and no next one is taken.
    MerchantEnds,
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
            clearing: None,
            customer_signed: None,
            merchant_signed: None,
            merchant_ended: false,
        };
        Ok(session.offer(init.ack_by, merchant, windows, now, message))
    }

    /// Takes the initiation of the session's next transaction (M4) from its AM, once the one
    /// before is cleared: informed (or open in agent mode) at the merchant's terms of now, or
    /// refused. The session's merchant, customer, key and times stay. (The AM starts a
    /// transaction only once it posted the one before: when its initiation overtakes its
    /// `session_posted`, the caller takes the initiation as that word first, [`MtaInput::Posted`].)
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
        let ended = self.merchant_ended;
        let session = MtaSession {
            txn: init.transaction.seq,
            state: MtaState::Informed,
            deposit: init.deposit,
            merchant_deposit: Amount::new(0, init.deposit.currency),
            refusal: None,
            customer_record: None,
            merchant_record: None,
            verdict: None,
            clearing: None,
            customer_signed: None,
            merchant_signed: None,
            ..self
        };
        if ended {
            // The merchant ended the session: the AM voids the next transaction's hold.
            return Ok(session.refuse(Refusal::Ended, message));
        }
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

    /// The current transaction's receipt (see [`crate::session::receipt`]), once it is cleared
    /// (`None` before): the clearing information and each side's record as signed, signed
    /// with `node_key` (this node's) at `at`.
    pub fn receipt(
        &self,
        node_key: &tally_kernel::crypto::SigningKey,
        at: i64,
    ) -> Option<Result<String, crate::session::receipt::ReceiptError>> {
        let clearing = self
            .clearing
            .clone()
            .filter(|_| self.state == MtaState::Cleared)?;
        let key = node_key.verifying_key();
        let receipt = crate::session::receipt::SessionReceipt {
            at,
            clearing,
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
        };
        Some(receipt.issue(node_key))
    }

    /// A message about this session to its AM.
    fn to_am(&self, message: Id, kind: &str, body: serde_json::Value) -> PeerMessage {
        PeerMessage {
            to: self.am,
            id: message,
            kind: kind.into(),
            body,
        }
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
            | MtaState::Clearing
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
            (_, MtaInput::MerchantEnds) if self.merchant_ended => Ok((self, Effects::none())),
            (_, MtaInput::MerchantEnds) => {
                let effects = Effects::record(
                    "session_ended",
                    json!({"session": self.id, "transaction": self.transaction(), "by": "merchant"}),
                );
                Ok((
                    MtaSession {
                        merchant_ended: true,
                        ..self
                    },
                    effects,
                ))
            }
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
                Ok(self.deadline(message))
            }
            (MtaState::Open | MtaState::Concluding, MtaInput::Record(_))
                if self.conclude_by > 0 && now.as_micros() >= self.conclude_by =>
            {
                // The deadline passed (the sweeper has not moved the session yet).
                Err(TradeError::Closed("past its conclusion deadline"))
            }
            (MtaState::Open | MtaState::Concluding, MtaInput::Record(r)) => {
                self.with_record(r, message)
            }
            (MtaState::Clearing | MtaState::Cleared | MtaState::Disputed, MtaInput::Record(r))
                if self.record_of(r.side) == Some(&r) =>
            {
                Ok((self, Effects::none()))
            }
            (MtaState::Disputed, MtaInput::Verdict(total)) => self.resolve(total, message),
            (
                MtaState::Clearing | MtaState::Cleared | MtaState::Expired,
                MtaInput::Verdict(total),
            ) if self.verdict == Some(total) => Ok((self, Effects::none())),
            (MtaState::Clearing, MtaInput::Posted) => Ok(self.pay()),
            (MtaState::Clearing, MtaInput::Released) => Ok(self.released()),
            (MtaState::Cleared, MtaInput::Posted) => Ok((self, Effects::none())),
            (MtaState::Expired, MtaInput::Released) if self.clearing.is_some() => {
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
    fn with_record(self, r: Record, message: Id) -> Result<(MtaSession, Effects), TradeError> {
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
            Ok(after.clear(&m, message))
        } else {
            Ok(after.dispute(message))
        }
    }

    /// The conclusion deadline passed with a record missing. The customer's record alone is
    /// what the customer admits it spent: it clears (the merchant, who sent none, takes it).
    /// The merchant's alone proves nothing (the tab's MAC key is the merchant's too): a
    /// dispute, unless it claims nothing. Neither: the session expired, nothing is paid and
    /// the AM releases the deposit.
    fn deadline(self, message: Id) -> (MtaSession, Effects) {
        match (self.customer_record.clone(), self.merchant_record.clone()) {
            (Some(c), None) => self.clear(&c, message),
            // A merchant that claims nothing (a tab opened, nothing bought): nothing to
            // dispute.
            (None, Some(m)) if m.total.minor == 0 && m.count == 0 => self.clear(&m, message),
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
        effects
            .peers
            .push(self.to_am(message, EXPIRED, about(self.transaction())));
        (
            MtaSession {
                state: MtaState::Expired,
                ..self
            },
            effects,
        )
    }

    /// Clears the transaction on `basis` (a record both sides agree on, or the customer's
    /// alone at the deadline): the AM gets the clearing information, the merchant is paid its
    /// total once the AM posted it. A total beyond the deposit, or a session without its
    /// accounts, is a dispute instead.
    fn clear(self, basis: &Record, message: Id) -> (MtaSession, Effects) {
        let within = basis.total.minor <= self.merchant_deposit.minor
            && basis.total.currency == self.merchant_deposit.currency;
        let paid = customer_total(basis.total.minor, self.rate);
        let (true, Some(paid), Some(_), Some(_)) = (within, paid, self.account, self.owed_by)
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
        self.send(clearing, message)
    }

    /// Sends the AM the clearing information (`clearing`, the first phase); nothing is paid
    /// yet.
    fn send(self, clearing: Clearing, message: Id) -> (MtaSession, Effects) {
        let mut effects = Effects::record(
            "session_clearing",
            json!({"transaction": clearing.transaction, "total": clearing.total, "verdict": clearing.verdict}),
        );
        effects
            .peers
            .push(self.to_am(message, CLEARED, json!(clearing)));
        (
            MtaSession {
                state: MtaState::Clearing,
                clearing: Some(clearing),
                ..self
            },
            effects,
        )
    }

    /// The AM posted the clearing (the second phase): the merchant is paid its total from what
    /// the customer's operator owes.
    fn pay(self) -> (MtaSession, Effects) {
        let total = self.clearing.as_ref().map(|c| c.total);
        let effects = match (total, self.account, self.owed_by) {
            (Some(total), Some(account), Some(owed_by)) if total.minor > 0 => {
                Effects::ledger(Command::Transfer {
                    debit_account: owed_by,
                    credit_account: account,
                    amount_minor: total.minor,
                    currency: total.currency,
                    timeout_s: None,
                    memo: format!("trading session {} cleared", label(self.transaction())),
                })
            }
            _ => Effects::record("session_cleared", about(self.transaction())),
        };
        (
            MtaSession {
                state: MtaState::Cleared,
                ..self
            },
            effects,
        )
    }

    /// The AM no longer held the deposit when the clearing reached it: nothing is paid on
    /// either side.
    fn released(self) -> (MtaSession, Effects) {
        let effects = Effects::record(
            "session_expired",
            json!({"session": self.id, "transaction": self.transaction(), "reason": "released"}),
        );
        (
            MtaSession {
                state: MtaState::Expired,
                ..self
            },
            effects,
        )
    }

    /// Settles a dispute on the operator's verdict: the AM gets clearing information marked
    /// as a verdict (it posts the customer's side whatever its own record says, if it still
    /// holds the deposit), and the merchant is paid `total` once it did. Refused beyond the
    /// deposit or in another currency.
    fn resolve(self, total: Amount, message: Id) -> Result<(MtaSession, Effects), TradeError> {
        if total.currency != self.merchant_deposit.currency
            || total.minor < 0
            || total.minor > self.merchant_deposit.minor
        {
            return Err(TradeError::Invalid(
                "a verdict from nothing up to the deposit, in the merchant's currency",
            ));
        }
        let paid = customer_total(total.minor, self.rate)
            .filter(|paid| *paid <= self.deposit.minor)
            .ok_or(TradeError::Invalid("a verdict the deposit covers"))?;
        if self.account.is_none() || self.owed_by.is_none() {
            return Err(TradeError::Invalid("a session with its accounts"));
        }
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
        Ok(MtaSession {
            verdict: Some(total),
            ..self
        }
        .send(clearing, message))
    }

    /// Keeps both records (either may be missing) and tells the AM: nothing is paid.
    fn dispute(self, message: Id) -> (MtaSession, Effects) {
        let mut effects = Effects::record(
            "session_disputed",
            json!({"session": self.id, "customer": self.customer_record, "merchant": self.merchant_record}),
        );
        effects
            .peers
            .push(self.to_am(message, DISPUTED, about(self.transaction())));
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
        effects.peers.push(self.to_am(message, ACK, json!(ack)));
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
        effects
            .peers
            .push(self.to_am(message, REFUSED, json!(refused)));
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
