//! A trading session's conclusion (SPEC M5, M8; issue [7] step 5): the parties' signed
//! records, the MTA's comparison, the money and the billing records.
//!
//! * The customer hands its record (signed with the session key) to its AM, which forwards
//!   it to the MTA; the merchant's agent hands the merchant's record (signed with the key the
//!   merchant registered for it) to the MTA. Both are checked under their keys where they
//!   arrive, never trusted on a node's word.
//! * With both in and agreeing, the MTA sends the clearing information (`clearing`); the AM
//!   posts the hold for what the customer spent (the rest is released) into its account owed
//!   to the MTA's operator and answers `session_posted`; then the MTA pays the merchant from
//!   its account owed by the AM's operator. An AM that no longer holds the deposit answers
//!   `session_released` and the MTA pays nothing: the operators' books never differ by a
//!   session. Each side writes its billing record (withdrawal, deposit) with its money step.
//! * Records that disagree put both nodes in `disputed`: nothing is paid, the hold stays.

use super::{AM, MTA, Sessions, decode, inconsistent, peer_record, trade};
use crate::access::{corrupt, invalid, require_admin};
use crate::{Missing, Principal, Result, ServiceError};
use tally_kernel::crypto::VerifyingKey;
use tally_kernel::{Amount, Currency, Id, Timestamp};
use tally_proto::effects::Effects;
use tally_proto::session::conclusion::{Clearing, Record, Side};
use tally_proto::session::envelope::Envelope;
use tally_proto::session::ids::{SessionId, TransactionId};
use tally_proto::session::receipt::{SessionReceipt, Signed};
use tally_proto::session::trade::{AmInput, AmSession, AmState, MtaInput, MtaSession, MtaState};
use tally_store::Attachment;
use tally_store::trade::{BillingRecord, TradeRow, billing, insert_receipt, set_agent_key};
use tally_wire::federation::{
    BillingRecordView, ClearingLine, SessionReceiptView, TradingSessionView, VerdictRequest,
};

impl Sessions {
    /// Registers the key the merchant's agent signs records with (the merchant itself, or the
    /// operator).
    pub async fn set_agent_key(&self, by: &Principal, name: &str, key: &str) -> Result<()> {
        if !by.is_admin() && by.owner != name {
            return Err(ServiceError::Forbidden(
                "a merchant registers its own agent only",
            ));
        }
        let key = VerifyingKey::from_hex(key.trim())
            .map_err(|_| invalid("public_key", "an Ed25519 public key, 64 hex digits"))?;
        if self.core.store().session_merchant(name).await?.is_none() {
            return Err(ServiceError::NotFound {
                what: Missing::User,
                id: name.to_string(),
            });
        }
        self.core
            .commit(
                format!(":agent_key:{}", Id::new()),
                Effects::record(
                    "session_agent_key",
                    serde_json::json!({"merchant": name, "fingerprint": key.fingerprint()}),
                ),
                vec![set_agent_key(name, &key.to_hex(), self.core.now())],
            )
            .await?;
        Ok(())
    }

    /// A party's signed record (M5): the customer's at its AM (forwarded to the MTA), the
    /// merchant's at the MTA.
    pub async fn record(
        &self,
        by: &Principal,
        session: &str,
        signed: &[u8],
    ) -> Result<TradingSessionView> {
        crate::exec::retrying(|| async {
            if let Some(row) = self.core.store().trade(AM, session).await?
                && row.owner == by.owner
            {
                return self.customer_record(&row, signed).await;
            }
            if let Some(row) = self.core.store().trade(MTA, session).await?
                && row.owner == by.owner
            {
                return self.merchant_record(&row, signed).await;
            }
            Err(self.missing(session))
        })
        .await
    }

    /// The merchant ends the session (its agent, on the merchant's terminate; M4): the current
    /// transaction concludes as it would, and a next one is refused (`ended`). Taken once; the
    /// same word again answers the same.
    pub async fn end(&self, by: &Principal, session: &str) -> Result<TradingSessionView> {
        crate::exec::retrying(|| async {
            let row = match self.core.store().trade(MTA, session).await? {
                Some(row) if row.owner == by.owner => row,
                _ => return Err(self.missing(session)),
            };
            let before: MtaSession = decode(&row)?;
            self.operator_step(&row, before, ":session_end", MtaInput::MerchantEnds)
                .await
        })
        .await
    }

    /// An MTA step asked on the node's API (not a peer's message): the session's machine
    /// takes `input`; a step that changes anything commits under `step` and the transaction;
    /// answers the session as it then stands.
    async fn operator_step(
        &self,
        row: &TradeRow,
        before: MtaSession,
        step: &str,
        input: MtaInput,
    ) -> Result<TradingSessionView> {
        let key = super::step_key(step, MTA, before.transaction());
        let (after, effects) = before
            .handle(self.core.now(), input, Id::new())
            .map_err(trade)?;
        if effects != Effects::none() {
            let rows = self.moved(row, after.state.as_str(), &after, after.poll_timeout())?;
            self.core.commit(key, effects, rows.into()).await?;
        }
        self.view(&self.row(MTA, &row.session).await?)
    }

    /// The merchant's operator settles a disputed session (the MTA side): the merchant is
    /// paid `total` (in its currency), the customer's operator is told to post the customer's
    /// side and release the rest. The same verdict again changes nothing.
    pub async fn verdict(
        &self,
        by: &Principal,
        session: &str,
        total: &VerdictRequest,
    ) -> Result<TradingSessionView> {
        require_admin(by)?;
        let currency = Currency::from_code(&total.currency)
            .map_err(|_| invalid("currency", "an ISO 4217 code"))?;
        crate::exec::retrying(|| async {
            let row = self.row(MTA, session).await?;
            let before: MtaSession = decode(&row)?;
            if currency != before.merchant_deposit.currency {
                return Err(invalid("currency", "the merchant's currency"));
            }
            let total = Amount::new(total.total_minor, currency);
            self.operator_step(&row, before, ":session_verdict", MtaInput::Verdict(total))
                .await
        })
        .await
    }

    async fn customer_record(&self, row: &TradeRow, signed: &[u8]) -> Result<TradingSessionView> {
        let before = self.am_machine(row).await?;
        let key = key_of(before.customer_key.as_deref())?;
        let transaction = before.transaction();
        let record = Record::open(signed, &key, Side::Customer, transaction)
            .map_err(|e| invalid("record", e.to_string()))?;
        let text = String::from_utf8(signed.to_vec()).map_err(|_| invalid("record", "not text"))?;
        let (after, effects) = before
            .handle(
                self.core.now(),
                AmInput::Record {
                    record,
                    signed: text,
                    message: Id::new(),
                },
            )
            .map_err(trade)?;
        if effects != Effects::none() {
            let rows = self.moved(row, after.state.as_str(), &after, after.poll_timeout())?;
            self.core
                .commit(
                    super::step_key(":session_record", AM, transaction),
                    effects,
                    rows.into(),
                )
                .await?;
        }
        self.view(&self.row(AM, &row.session).await?)
    }

    async fn merchant_record(&self, row: &TradeRow, signed: &[u8]) -> Result<TradingSessionView> {
        let before: MtaSession = decode(row)?;
        let merchant = self
            .core
            .store()
            .session_merchant(&before.merchant)
            .await?
            .ok_or_else(|| invalid("record", "the merchant has no agent key"))?;
        let key = key_of(merchant.agent_key.as_deref())?;
        let transaction = before.transaction();
        let record = Record::open(signed, &key, Side::Merchant, transaction)
            .map_err(|e| invalid("record", e.to_string()))?;
        let text = String::from_utf8(signed.to_vec()).map_err(|_| invalid("record", "not text"))?;
        let taken = before.merchant_record.is_none();
        let (mut after, effects) = before
            .handle(self.core.now(), MtaInput::Record(record), Id::new())
            .map_err(trade)?;
        if effects != Effects::none() {
            if taken {
                after.merchant_signed = Some(Signed {
                    key: key.to_hex(),
                    record: text,
                });
            }
            let rows = self.moved(row, after.state.as_str(), &after, after.poll_timeout())?;
            self.core
                .commit(
                    super::step_key(":session_record", MTA, transaction),
                    effects,
                    rows.into(),
                )
                .await?;
        }
        self.view(&self.row(MTA, &row.session).await?)
    }

    /// The MTA takes the customer's record forwarded by the AM (checked under the session key
    /// the AM sent with the initiation).
    pub(super) async fn forwarded_record(
        &self,
        m: &Envelope,
    ) -> Result<(Effects, Vec<Attachment>)> {
        let signed = m.body["signed"].as_str().ok_or_else(inconsistent)?;
        let session = session_of(signed)?;
        let row = self.named_row(MTA, &session).await?;
        let before: MtaSession = decode(&row)?;
        if before.am != m.from {
            return Err(inconsistent());
        }
        let key = key_of(before.customer_key.as_deref()).map_err(|_| inconsistent())?;
        let record = Record::open(
            signed.as_bytes(),
            &key,
            Side::Customer,
            before.transaction(),
        )
        .map_err(|_| inconsistent())?;
        let taken = before.customer_record.is_none();
        let (mut after, effects) = before
            .handle(self.core.now(), MtaInput::Record(record), Id::new())
            .map_err(|_| inconsistent())?;
        if effects == Effects::none() {
            return Ok((peer_record(m), Vec::new()));
        }
        if taken {
            after.customer_signed = Some(Signed {
                key: key.to_hex(),
                record: signed.to_string(),
            });
        }
        let rows = self.moved(&row, after.state.as_str(), &after, after.poll_timeout())?;
        Ok((effects, rows.into()))
    }

    /// The MTA hears whether the AM posted the clearing (`session_posted`: the merchant is
    /// paid) or no longer held the deposit (`session_released`: nothing is paid). A word about
    /// a transaction before the current one is only taken: the next transaction's initiation
    /// overtook it and stood for it ([`Sessions::posted_first`]).
    pub(super) async fn settled(&self, m: &Envelope) -> Result<(Effects, Vec<Attachment>)> {
        let session = m.body["session"].as_str().ok_or_else(inconsistent)?;
        let row = self.named_row(MTA, session).await?;
        let before: MtaSession = decode(&row)?;
        let transaction = named_in(&m.body, session)?;
        if before.am != m.from || transaction.seq > before.txn {
            return Err(inconsistent());
        }
        if transaction.seq < before.txn {
            return Ok((peer_record(m), Vec::new()));
        }
        let input = if m.kind == trade::POSTED {
            MtaInput::Posted
        } else {
            MtaInput::Released
        };
        let (after, mut effects) = before
            .handle(self.core.now(), input, Id::new())
            .map_err(|_| inconsistent())?;
        if effects == Effects::none() {
            return Ok((peer_record(m), Vec::new()));
        }
        let mut rows: Vec<Attachment> = self
            .moved(&row, after.state.as_str(), &after, after.poll_timeout())?
            .into();
        rows.extend(self.cleared_rows(&after, &mut effects)?);
        Ok((effects, rows))
    }

    /// The AM takes the MTA's clearing information, dispute or expiry.
    pub(super) async fn concluded(&self, m: &Envelope) -> Result<(Effects, Vec<Attachment>)> {
        let (session, input) = if m.kind == trade::CLEARED {
            let c: Clearing = serde_json::from_value(m.body.clone()).map_err(|_| inconsistent())?;
            let input = AmInput::Cleared {
                clearing: c.clone(),
                message: Id::new(),
            };
            (c.transaction.session.to_string(), input)
        } else {
            let s = m.body["session"].as_str().ok_or_else(inconsistent)?;
            let transaction = named_in(&m.body, s)?;
            let input = if m.kind == trade::EXPIRED {
                AmInput::Expired(transaction)
            } else {
                AmInput::Disputed(transaction)
            };
            (s.to_string(), input)
        };
        let (row, after, mut effects) = self.am_step(&session, m, input).await?;
        if effects == Effects::none() {
            return Ok((peer_record(m), Vec::new()));
        }
        let mut rows: Vec<Attachment> = self
            .moved(&row, after.state.as_str(), &after, after.poll_timeout())?
            .into();
        if let (AmState::Cleared, Some(c)) = (after.state, &after.clearing) {
            rows.push(self.bill(
                BillingRecord {
                    id: Id::new(),
                    kind: "withdrawal".into(),
                    session: trade::label(after.transaction()),
                    owner: row.owner.clone(),
                    account: after.account,
                    amount: c.customer_total.minor,
                    currency: c.customer_total.currency.code().into(),
                    peer: after.mta.to_string(),
                    at: self.core.now(),
                },
                &mut effects,
            ));
        }
        Ok((effects, rows))
    }

    /// A billing record, written with the step that clears the session; with a billing
    /// webhook configured (`tally serve --billing-webhook`), also a signed webhook to the
    /// billing system, committed with it (durable, retried, sent once: its key is the
    /// record's id).
    fn bill(&self, r: BillingRecord, effects: &mut Effects) -> Attachment {
        if let Some(url) = &self.settings.billing_webhook {
            let data = serde_json::json!({
                "id": r.id,
                "kind": r.kind,
                "session": r.session,
                "owner": r.owner,
                "account": r.account,
                "amount_minor": r.amount,
                "currency": r.currency,
                "peer": r.peer,
                "at": r.at.as_micros(),
            });
            effects.messages.push(tally_proto::effects::Outgoing {
                dedup_key: format!("billing:{}", r.id),
                channel: "webhook".into(),
                address: url.clone(),
                subject: format!("billing {} {}", r.kind, r.session),
                body: data.to_string(),
                secret: None,
                data,
            });
        }
        billing(&r)
    }

    /// What the step that pays the merchant writes with it (the AM posted the clearing, on
    /// both records, the customer's alone at the deadline, or a verdict): the merchant's
    /// billing record, and the transaction's receipt, kept here and sent to the customer's
    /// operator. Nothing for any other step.
    pub(super) fn cleared_rows(
        &self,
        after: &MtaSession,
        effects: &mut Effects,
    ) -> Result<Vec<Attachment>> {
        let Some(billing) = self.deposit_record(after, effects) else {
            return Ok(Vec::new());
        };
        if after.customer_signed.is_none() && after.merchant_signed.is_none() {
            // A row from before receipts were kept: no signed record to put in one.
            tracing::warn!(transaction = %after.transaction(), "cleared without a receipt: no signed record kept");
            return Ok(vec![billing]);
        }
        let now = self.core.now();
        let receipt = after
            .receipt(self.core.node_key(), now.as_micros())
            .ok_or_else(|| corrupt("a cleared transaction without its clearing information"))?
            .map_err(|e| corrupt(format!("the transaction's receipt: {e}")))?;
        effects.peers.push(tally_proto::effects::PeerMessage {
            to: after.am,
            id: Id::new(),
            kind: trade::RECEIPT.into(),
            body: serde_json::json!({ "receipt": receipt }),
        });
        let transaction = after.transaction();
        Ok(vec![
            billing,
            insert_receipt(
                &transaction.to_string(),
                &transaction.session.to_string(),
                &receipt,
                now,
            ),
        ])
    }

    /// The merchant's billing record, when this step pays the merchant at the MTA.
    fn deposit_record(&self, after: &MtaSession, effects: &mut Effects) -> Option<Attachment> {
        let (MtaState::Cleared, Some(c), Some(account)) =
            (after.state, &after.clearing, after.account)
        else {
            return None;
        };
        // A dispute settled by the operator pays its verdict, not what a record claimed.
        let paid = c.total;
        Some(self.bill(
            BillingRecord {
                id: Id::new(),
                kind: "deposit".into(),
                session: trade::label(after.transaction()),
                owner: after.merchant.clone(),
                account,
                amount: paid.minor,
                currency: paid.currency.code().into(),
                peer: after.am.to_string(),
                at: self.core.now(),
            },
            effects,
        ))
    }

    /// The AM keeps the receipt of a cleared transaction of one of its sessions, signed by
    /// that session's MTA (it checks alone: see `tally_proto::session::receipt`).
    pub(super) async fn receipted(&self, m: &Envelope) -> Result<(Effects, Vec<Attachment>)> {
        let text = m.body["receipt"].as_str().ok_or_else(inconsistent)?;
        let receipt = SessionReceipt::open(text).map_err(|_| inconsistent())?;
        let transaction = receipt.clearing.transaction;
        let session = transaction.session.to_string();
        let row = self.named_row(AM, &session).await?;
        let s: AmSession = decode(&row)?;
        if receipt.issuer != m.from || s.mta != m.from || transaction.seq > s.txn {
            return Err(inconsistent());
        }
        let effects = Effects::record(
            "session_receipt",
            serde_json::json!({"transaction": transaction, "issuer": receipt.issuer}),
        );
        Ok((
            effects,
            vec![insert_receipt(
                &transaction.to_string(),
                &session,
                text,
                self.core.now(),
            )],
        ))
    }

    /// A session's receipts, one per cleared transaction: the customer's at its operator,
    /// the merchant's at its own, or the operator.
    pub async fn receipts(&self, by: &Principal, session: &str) -> Result<Vec<SessionReceiptView>> {
        self.visible(by, session).await?;
        Ok(self
            .core
            .store()
            .session_receipts(session)
            .await?
            .into_iter()
            .map(|(transaction, receipt)| SessionReceiptView {
                transaction,
                receipt,
            })
            .collect())
    }

    // ----- reports (operator) ----------------------------------------------------------------

    /// Billing records between two times (operator).
    pub async fn billing_records(
        &self,
        by: &Principal,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<BillingRecordView>> {
        require_admin(by)?;
        let rows = self.core.store().billing_records(from, to, 100_000).await?;
        rows.into_iter()
            .map(|r| {
                let currency = Currency::from_code(&r.currency).map_err(corrupt)?;
                Ok(BillingRecordView {
                    id: r.id.to_string(),
                    kind: r.kind,
                    session: r.session,
                    owner: r.owner,
                    account: r.account.to_string(),
                    amount: Amount::new(r.amount, currency).to_string(),
                    amount_minor: r.amount,
                    currency: r.currency,
                    peer: r.peer,
                    at: r.at,
                })
            })
            .collect()
    }

    /// What this operator and each peer owe each other, per currency (operator).
    pub async fn clearing(&self, by: &Principal) -> Result<Vec<ClearingLine>> {
        require_admin(by)?;
        let store = self.core.store();
        let mut lines: std::collections::BTreeMap<(String, String), ClearingLine> =
            std::collections::BTreeMap::new();
        for a in store.peer_accounts().await? {
            let account = store
                .account(a.account)
                .await?
                .ok_or_else(|| corrupt("a peer account without its ledger account"))?;
            let name = store.peer(&a.peer).await?.map(|p| p.name);
            let line = lines
                .entry((a.peer.clone(), a.currency.clone()))
                .or_insert_with(|| ClearingLine {
                    peer: a.peer.clone(),
                    name,
                    currency: a.currency.clone(),
                    owed_to_minor: 0,
                    owed_by_minor: 0,
                    net_minor: 0,
                });
            if a.direction == "owed_to" {
                line.owed_to_minor = account.credits_posted - account.debits_posted;
            } else {
                line.owed_by_minor = account.debits_posted - account.credits_posted;
            }
            line.net_minor = line.owed_by_minor - line.owed_to_minor;
        }
        Ok(lines.into_values().collect())
    }
}

/// The transaction a word about session `session` names (`trade::about`): its
/// `transaction`, or the session's first.
pub(super) fn named_in(body: &serde_json::Value, session: &str) -> Result<TransactionId> {
    let session: SessionId = session.parse().map_err(|_| inconsistent())?;
    let t = match body.get("transaction") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|t| t.parse::<TransactionId>().ok())
                .filter(|t| t.session == session)
                .ok_or_else(inconsistent)?,
        ),
    };
    Ok(trade::named(session, t))
}

fn key_of(hex: Option<&str>) -> Result<VerifyingKey> {
    hex.and_then(|k| VerifyingKey::from_hex(k).ok())
        .ok_or_else(|| invalid("record", "no key to check it with (none was registered)"))
}

/// The session a signed record names (its transaction's session), read before it is checked.
fn session_of(signed: &str) -> Result<String> {
    let outer: serde_json::Value = serde_json::from_str(signed).map_err(|_| inconsistent())?;
    let inner: serde_json::Value =
        serde_json::from_str(outer["bytes"].as_str().ok_or_else(inconsistent)?)
            .map_err(|_| inconsistent())?;
    let transaction: tally_proto::session::ids::TransactionId = inner["transaction"]
        .as_str()
        .ok_or_else(inconsistent)?
        .parse()
        .map_err(|_| inconsistent())?;
    Ok(transaction.session.to_string())
}

/// The AM session's view fields of a cleared session.
pub(super) fn cleared_fields(s: &AmSession) -> (Option<String>, Option<String>, Option<u64>) {
    match &s.clearing {
        Some(c) => (
            Some(c.total.to_string()),
            Some(c.customer_total.to_string()),
            Some(c.count),
        ),
        None => (None, None, None),
    }
}
