//! Trading sessions (SPEC M1–M9, issue [7]): the driver of `tally_proto::session::trade` at
//! both of its nodes. So far the initiation (M2, M3): the customer's account manager (AM)
//! holds the deposit and sends the amended initiation to the mediating trusted agent (MTA) at
//! the merchant's operator, which informs the merchant and answers with its rate, or refuses.
//!
//! Each step is load → `handle` → `commit`, like every protocol here; a message from the other
//! node commits with the inbox row that takes it ([`Federation::take`]), so it applies once.
//! When the merchant's operator is this node, the messages go through this node's own inbox
//! the same way.

mod conclude;
mod fx;
mod inbound;
mod orders;

use crate::access::{check_name, corrupt, invalid, namespaced, require_admin};
use crate::core::Core;
use crate::exec::retrying;
use crate::federation::Federation;
use crate::{Missing, PeerRefusal, Principal, Result, ServiceError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::{Amount, Currency, Id, Timestamp};
use tally_ledger::{AccountFlags, AccountKind, Command};
use tally_proto::effects::Effects;
use tally_proto::session::certs::{Role as CertRole, SessionCert};
use tally_proto::session::envelope::Envelope;
use tally_proto::session::ids::{NodeId, SessionId, TransactionId};
use tally_proto::session::trade::{
    self, AmInput, AmSession, AmState, MtaInput, MtaSession, MtaState, Start, TradeError,
};
use tally_store::trade::{SessionMerchant, TradeRow, insert, update, upsert_merchant};
use tally_wire::federation::{
    NextTransaction, OpenTradingSession, SessionMerchantRequest, SessionMerchantView,
    TradingSessionView,
};

/// Session timing.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// How long the AM waits for the MTA's answer, and the MTA for the merchant's, seconds.
    pub ack_window_s: i64,
    /// A session's lifetime when the customer names none, seconds.
    pub lifetime_s: i64,
    /// The longest lifetime a customer may ask for, seconds.
    pub lifetime_max_s: i64,
    /// How long the deposit stays held after the session's end, for its conclusion, seconds.
    pub clearing_grace_s: i64,
    /// How long the MTA waits for the records after the session's end, seconds; shorter than
    /// the clearing grace, so the AM hears the outcome while it still holds the deposit.
    pub conclusion_window_s: i64,
    /// Where billing records go as signed webhooks too (M8), if anywhere.
    pub billing_webhook: Option<String>,
}

impl SessionSettings {
    /// Refuses timings that cannot work: each window positive, the records' window within
    /// the time the deposit stays held.
    pub fn check(&self) -> std::result::Result<(), &'static str> {
        if self.ack_window_s < 1 || self.conclusion_window_s < 1 {
            return Err("the acknowledgement and conclusion windows must be at least a second");
        }
        if self.conclusion_window_s + trade::CLEARING_MARGIN_S >= self.clearing_grace_s {
            return Err(
                "the clearing grace must exceed the conclusion window by more than 600 s (the \
                 clearing must reach the customer's operator while it holds the deposit)",
            );
        }
        if self
            .billing_webhook
            .as_deref()
            .is_some_and(|u| !(u.starts_with("https://") || u.starts_with("http://")))
        {
            return Err("the billing webhook is an http(s) URL");
        }
        if self.lifetime_s <= self.ack_window_s || self.lifetime_max_s < self.lifetime_s {
            return Err("a session's lifetime must outlast the acknowledgement window");
        }
        Ok(())
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            ack_window_s: 120,
            lifetime_s: 3600,
            lifetime_max_s: 7 * 86_400,
            clearing_grace_s: 86_400,
            conclusion_window_s: 3600,
            billing_webhook: None,
        }
    }
}

const AM: &str = "am";
const MTA: &str = "mta";

/// Trading sessions at this node, in either role.
#[derive(Clone)]
pub struct Sessions {
    core: Core,
    federation: Federation,
    settings: SessionSettings,
    /// Seals the K2s merchants escrow here (M9), `DATA/escrow.key`.
    escrow_key: tally_kernel::Secret<Vec<u8>>,
}

fn decode<T: DeserializeOwned>(row: &TradeRow) -> Result<T> {
    serde_json::from_str(&row.machine).map_err(corrupt)
}

fn trade(e: TradeError) -> ServiceError {
    ServiceError::Trade(e)
}

impl Sessions {
    /// Loads `escrow.key` (creating it on first start) and checks it against the database.
    pub(crate) async fn load(
        core: Core,
        federation: Federation,
        settings: SessionSettings,
        made: &mut crate::identity::Made,
    ) -> Result<Sessions> {
        let escrow_key = crate::identity::node_secret(
            core.files(),
            core.store(),
            "escrow.key",
            "escrow_key_id",
            made,
        )
        .await?;
        Ok(Sessions {
            core,
            federation,
            settings,
            escrow_key,
        })
    }

    // ----- merchants (at the MTA) ----------------------------------------------------------

    /// Lets a merchant take trading sessions here, paid to `account` (the operator, or the
    /// merchant naming its own account).
    pub async fn set_merchant(
        &self,
        by: &Principal,
        name: &str,
        req: &SessionMerchantRequest,
    ) -> Result<SessionMerchantView> {
        check_name("name", name)?;
        if !by.is_admin() && by.owner != name {
            return Err(ServiceError::Forbidden(
                "a merchant registers itself only (or the operator)",
            ));
        }
        let account = self.account(req.account, "account").await?;
        if !by.is_admin() && account.owner != by.owner {
            return Err(invalid("account", "is not an account of the merchant"));
        }
        let m = SessionMerchant {
            name: name.to_string(),
            account: req.account,
            auto_ack: req.auto_ack,
            agent_key: None,
        };
        self.core
            .commit(
                format!(":session_merchant:{}", Id::new()),
                Effects::record(
                    "session_merchant",
                    serde_json::json!({"name": name, "account": req.account, "auto_ack": req.auto_ack}),
                ),
                vec![upsert_merchant(&m, self.core.now())],
            )
            .await?;
        Ok(SessionMerchantView {
            name: m.name,
            account: m.account,
            currency: account.currency.code().to_string(),
            auto_ack: m.auto_ack,
        })
    }

    async fn account(&self, id: Id, field: &'static str) -> Result<tally_ledger::Account> {
        self.core
            .store()
            .account(id)
            .await?
            .ok_or_else(|| invalid(field, "no such account"))
    }

    // ----- the customer's side (at the AM) -------------------------------------------------

    /// Opens a session for the customer `by` (M2): holds the deposit and sends the amended
    /// initiation to the merchant's operator. A retry with the same key is the same session
    /// (`true`: a replay).
    pub async fn open(
        &self,
        by: &Principal,
        key: &str,
        req: &OpenTradingSession,
    ) -> Result<(TradingSessionView, bool)> {
        let client_key = namespaced(by, key)?;
        if let Some(row) = self.core.store().trade_by_key(&client_key).await? {
            return Ok((self.view(&row)?, true));
        }
        check_name("merchant", &req.merchant)?;
        let account = self.account(req.account, "account").await?;
        if account.owner != by.owner {
            return Err(ServiceError::Forbidden(
                "a session holds the caller's own account only",
            ));
        }
        if account.currency != req.deposit.currency {
            return Err(invalid("deposit", "not in the account's currency"));
        }
        let lifetime_s = req.lifetime_s.unwrap_or(self.settings.lifetime_s);
        if lifetime_s <= self.settings.ack_window_s || lifetime_s > self.settings.lifetime_max_s {
            return Err(invalid(
                "lifetime_s",
                format!(
                    "more than {} and at most {} seconds",
                    self.settings.ack_window_s, self.settings.lifetime_max_s
                ),
            ));
        }
        if let Some(k) = &req.customer_key
            && tally_kernel::crypto::VerifyingKey::from_hex(k).is_err()
        {
            return Err(invalid(
                "customer_key",
                "an Ed25519 public key, 64 hex digits",
            ));
        }
        let mta = self.operator(&req.operator).await?;
        let owed = self.owed_to(mta, req.deposit.currency).await?;
        let seq = self.core.store().next_session_number().await?;
        let id = SessionId::new(self.federation.node_id(), seq)
            .map_err(|e| corrupt(format!("session number: {e}")))?;
        let mut pseudonym = [0u8; 16];
        crate::identity::getrandom_fill(&mut pseudonym)?;
        let now = self.core.now();
        // M7: this operator vouches for the customer's session key, for this session only.
        let customer_cert = match &req.customer_key {
            Some(key) => Some(
                SessionCert {
                    session: id,
                    role: CertRole::Customer,
                    key: key.clone(),
                    issuer: self.federation.node_id(),
                    not_after: now
                        .plus_seconds(lifetime_s + self.settings.clearing_grace_s)
                        .as_micros(),
                }
                .issue(self.core.node_key())
                .map_err(corrupt)?,
            ),
            None => None,
        };
        let (session, effects) = AmSession::start(
            Start {
                id,
                mta,
                merchant: req.merchant.clone(),
                account: req.account,
                owed,
                customer: format!("c-{}", hex::encode(pseudonym)),
                customer_key: req.customer_key.clone(),
                customer_cert,
                deposit: req.deposit,
                ack_window_s: self.settings.ack_window_s,
                lifetime_s,
                clearing_grace_s: self.settings.clearing_grace_s,
                message: Id::new(),
            },
            now,
        )
        .map_err(trade)?;
        let row = TradeRow {
            role: AM.into(),
            session: id.to_string(),
            state: session.state.as_str().into(),
            owner: by.owner.clone(),
            client_key: Some(client_key.clone()),
            machine: to_json(&session)?,
            wake_at: session.poll_timeout(),
            created_at: now,
            updated_at: now,
        };
        match self
            .core
            .commit(client_key.clone(), effects, vec![insert(&row)])
            .await
        {
            Ok(_) => {}
            // The same key raced in from a retry: its session is the answer.
            Err(ServiceError::IdempotencyKeyReused) => {
                if let Some(row) = self.core.store().trade_by_key(&client_key).await? {
                    return Ok((self.view(&row)?, true));
                }
                return Err(ServiceError::IdempotencyKeyReused);
            }
            Err(e) => return Err(e),
        }
        Ok((self.view(&row)?, false))
    }

    /// The MTA's node: a peer's name or id, or this node.
    async fn operator(&self, text: &str) -> Result<NodeId> {
        let me = self.federation.node_id();
        if text == me.to_string() {
            return Ok(me);
        }
        let peer = self
            .core
            .store()
            .peer(text)
            .await?
            .ok_or_else(|| invalid("operator", "not a peer of this node"))?;
        peer.node_id
            .parse()
            .map_err(|e| corrupt(format!("peer node id: {e}")))
    }

    /// The AM's account owed to the operator of node `to`, in `currency` (made on first use).
    async fn owed_to(&self, to: NodeId, currency: Currency) -> Result<Id> {
        self.peer_account(to, currency, "owed_to").await
    }

    /// The account this operator keeps for the operator of node `peer` in `currency`:
    /// `owed_to` (what it owes the peer) or `owed_by` (what the peer owes it), made on first
    /// use and named in `peer_accounts` in the same transaction.
    async fn peer_account(&self, peer: NodeId, currency: Currency, direction: &str) -> Result<Id> {
        let who = hex::encode(&sha256(peer.to_string().as_bytes())[..16]);
        let open = Command::OpenAccount {
            owner: "operator".into(),
            currency,
            kind: AccountKind::Operator,
            flags: AccountFlags {
                debits_must_not_exceed_credits: false,
                credits_must_not_exceed_debits: false,
                ..Default::default()
            },
            limit_minor: 0,
            imported_at: None,
            references: Default::default(),
        };
        let key = format!(":{direction}_operator:{who}:{}", currency.code());
        let outcome = self
            .core
            .commit(key, Effects::ledger(open), Vec::new())
            .await?;
        let account = outcome
            .account()
            .map(|a| a.id)
            .ok_or_else(|| corrupt("an owed account's key names another command"))?;
        // Named in `peer_accounts` by a step of its own key, committed every time (a replay
        // once done): a crash between the two commits must not leave the account unnamed.
        self.core
            .commit(
                format!(":peer_account:{direction}:{who}:{}", currency.code()),
                Effects::record(
                    "peer_account",
                    serde_json::json!({"peer": peer, "currency": currency.code(), "direction": direction, "account": account}),
                ),
                vec![tally_store::trade::peer_account(&tally_store::trade::PeerAccount {
                    peer: peer.to_string(),
                    currency: currency.code().into(),
                    direction: direction.into(),
                    account,
                })],
            )
            .await?;
        Ok(account)
    }

    /// The customer starts its session's next transaction (M4) once the one before is
    /// cleared: the new deposit held, the initiation to the MTA. The request names the
    /// transaction, so a retry (or a race) is the same step once: `true` when it was taken
    /// before.
    pub async fn next_transaction(
        &self,
        by: &Principal,
        session: &str,
        req: &NextTransaction,
    ) -> Result<(TradingSessionView, bool)> {
        let wanted: TransactionId = req
            .transaction
            .parse()
            .map_err(|e| invalid("transaction", format!("{e}")))?;
        retrying(|| async {
            let row = self.row(AM, session).await?;
            if row.owner != by.owner {
                return Err(self.missing(session));
            }
            let before = self.am_machine(&row).await?;
            if wanted.session != before.id {
                return Err(invalid("transaction", "a transaction of this session"));
            }
            if before.txn >= wanted.seq {
                // Taken before: the answer is the session as it is (the same deposit asked).
                if before.txn == wanted.seq && before.deposit != req.deposit {
                    return Err(invalid(
                        "deposit",
                        format!("{wanted} was started with a deposit of {}", before.deposit),
                    ));
                }
                return Ok((self.view(&row)?, true));
            }
            if Ok(wanted) != before.transaction().next() {
                return Err(invalid(
                    "transaction",
                    format!("the session's next transaction is {}", before.txn + 1),
                ));
            }
            let (after, effects) = before
                .handle(
                    self.core.now(),
                    AmInput::Next {
                        deposit: req.deposit,
                        ack_window_s: self.settings.ack_window_s,
                        message: Id::new(),
                    },
                )
                .map_err(trade)?;
            let rows = self.moved(&row, after.state.as_str(), &after, after.poll_timeout())?;
            self.core
                .commit(hold_key(&row, after.txn)?, effects, rows.into())
                .await?;
            Ok((self.view(&self.row(AM, session).await?)?, false))
        })
        .await
    }

    /// The AM session of a row, knowing its hold while that is pending.
    async fn am_machine(&self, row: &TradeRow) -> Result<AmSession> {
        let session: AmSession = decode(row)?;
        let key = hold_key(row, session.txn)?;
        let hold = self.core.transfer_made_by(&key).await?;
        // A hold past its expiry is over: the session's step must not post or void it.
        Ok(session.with_hold(self.core.live_hold(hold).await?))
    }

    // ----- the merchant's side (at the MTA) ------------------------------------------------

    /// The merchant takes or declines a session it was informed of.
    pub async fn answer(
        &self,
        by: &Principal,
        session: &str,
        accept: bool,
    ) -> Result<TradingSessionView> {
        retrying(|| async {
            let row = self.row(MTA, session).await?;
            if !by.is_admin() && by.owner != row.owner {
                return Err(self.missing(session));
            }
            let before: MtaSession = decode(&row)?;
            let key = format!(":session_answer:{}", trade::label(before.transaction()));
            let input = if accept {
                MtaInput::MerchantAck
            } else {
                MtaInput::MerchantDecline
            };
            let (after, effects) = before
                .handle(self.core.now(), input, Id::new())
                .map_err(trade)?;
            self.step_mta(&row, &after, effects, key).await
        })
        .await
    }

    // ----- timers ----------------------------------------------------------------------------

    /// Feeds due sessions their timeout (AM: no answer from the MTA; MTA: no answer from the
    /// merchant), at most `limit`; returns how many moved.
    pub async fn sweep_timeouts(&self, limit: i64) -> Result<usize> {
        let due = self.core.store().due_trades(self.core.now(), limit).await?;
        let mut moved = 0;
        for row in due {
            let step = retrying(|| async {
                let row = self.row(&row.role, &row.session).await?;
                if row.wake_at.is_none_or(|w| w > self.core.now()) {
                    return Ok(false);
                }
                self.timeout(&row).await.map(|_| true)
            })
            .await;
            match step {
                Ok(true) => moved += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(session = %row.session, role = %row.role, error = %e, "session timeout failed")
                }
            }
        }
        Ok(moved)
    }

    async fn timeout(&self, row: &TradeRow) -> Result<()> {
        let now = self.core.now();
        if row.role == AM {
            let before = self.am_machine(row).await?;
            let before_tx = before.transaction();
            let (after, effects) = before
                .handle(now, AmInput::Timeout(Id::new()))
                .map_err(trade)?;
            let rows = self.moved(row, after.state.as_str(), &after, after.poll_timeout())?;
            self.core
                .commit(
                    step_key(":session_timeout", AM, before_tx),
                    effects,
                    rows.into(),
                )
                .await?;
        } else {
            let before: MtaSession = decode(row)?;
            let key = step_key(":session_timeout", MTA, before.transaction());
            let (after, effects) = before
                .handle(now, MtaInput::Timeout, Id::new())
                .map_err(trade)?;
            self.step_mta(row, &after, effects, key).await?;
        }
        Ok(())
    }

    async fn step_mta(
        &self,
        row: &TradeRow,
        after: &MtaSession,
        mut effects: Effects,
        key: String,
    ) -> Result<TradingSessionView> {
        if effects == Effects::none() {
            return self.view(row);
        }
        let mut rows: Vec<tally_store::Attachment> = self
            .moved(row, after.state.as_str(), after, after.poll_timeout())?
            .into();
        rows.extend(self.cleared_rows(after, &mut effects)?);
        self.core.commit(key, effects, rows).await?;
        self.view(&self.row(MTA, &row.session).await?)
    }

    fn moved<T: Serialize>(
        &self,
        before: &TradeRow,
        state: &str,
        machine: &T,
        wake_at: Option<Timestamp>,
    ) -> Result<[tally_store::Attachment; 2]> {
        let after = TradeRow {
            state: state.into(),
            machine: to_json(machine)?,
            wake_at,
            updated_at: self.core.now(),
            ..before.clone()
        };
        Ok(update(before, &after))
    }

    // ----- reads ---------------------------------------------------------------------------

    /// A session as the caller may see it: the customer at its AM, the merchant at the MTA,
    /// or the operator (the AM's row first when this node plays both roles).
    pub async fn show(&self, by: &Principal, session: &str) -> Result<TradingSessionView> {
        self.view(&self.visible(by, session).await?)
    }

    /// The session's row the caller may see (see [`Sessions::show`]); not found otherwise.
    pub(super) async fn visible(&self, by: &Principal, session: &str) -> Result<TradeRow> {
        for role in [AM, MTA] {
            if let Some(row) = self.core.store().trade(role, session).await?
                && (by.is_admin() || by.owner == row.owner)
            {
                return Ok(row);
            }
        }
        Err(self.missing(session))
    }

    /// The caller's sessions (a customer's, or a merchant's), newest first.
    pub async fn list(
        &self,
        by: &Principal,
        owner: Option<&str>,
    ) -> Result<Vec<TradingSessionView>> {
        let owner = match owner {
            Some(o) if o != by.owner => {
                require_admin(by)?;
                o
            }
            _ => by.owner.as_str(),
        };
        let mut out = Vec::new();
        for row in self.core.store().trades_of(owner, 200).await? {
            out.push(self.view(&row)?);
        }
        Ok(out)
    }

    async fn row(&self, role: &str, session: &str) -> Result<TradeRow> {
        self.core
            .store()
            .trade(role, session)
            .await?
            .ok_or_else(|| self.missing(session))
    }

    /// The row of `role` for a session a peer's message names: one unknown here is the
    /// peer's inconsistency (`403 peer_refused`), not a caller's missing session.
    async fn named_row(&self, role: &str, session: &str) -> Result<TradeRow> {
        self.core
            .store()
            .trade(role, session)
            .await?
            .ok_or_else(inconsistent)
    }

    fn missing(&self, session: &str) -> ServiceError {
        ServiceError::NotFound {
            what: Missing::Session,
            id: session.to_string(),
        }
    }

    fn view(&self, row: &TradeRow) -> Result<TradingSessionView> {
        let rate = |r: tally_kernel::Rate| format!("{}/{}", r.numerator, r.denominator);
        if row.role == AM {
            let s: AmSession = decode(row)?;
            let transaction = s.transaction().to_string();
            let (total, customer_total, count) = conclude::cleared_fields(&s);
            Ok(TradingSessionView {
                total,
                customer_total,
                count,
                session: row.session.clone(),
                role: row.role.clone(),
                state: s.state.as_str().into(),
                merchant: s.merchant,
                peer: s.mta.to_string(),
                customer: s.customer,
                customer_key: s.customer_key,
                transaction,
                deposit: s.deposit,
                merchant_deposit: s.merchant_deposit.map(|a: Amount| a.to_string()),
                rate: s.rate.map(rate),
                refusal: s.refusal.map(|r| r.as_str().to_string()),
                answer_by: (s.state == AmState::Held).then_some(Timestamp(s.ack_by)),
                expires_at: Timestamp(s.expires_at),
                merchant_key: s.merchant_key,
                merchant_cert: s.merchant_cert,
                customer_cert: None,
            })
        } else {
            let s: MtaSession = decode(row)?;
            let transaction = s.transaction().to_string();
            let known = s.state != MtaState::Refused || s.merchant_deposit.minor > 0;
            // What the clearing says, once it is paid (or waits for the AM's word on it).
            let cleared = s
                .clearing
                .as_ref()
                .filter(|_| matches!(s.state, MtaState::Clearing | MtaState::Cleared));
            Ok(TradingSessionView {
                total: cleared.map(|c| c.total.to_string()),
                customer_total: cleared.map(|c| c.customer_total.to_string()),
                count: cleared.map(|c| c.count),
                session: row.session.clone(),
                role: row.role.clone(),
                state: s.state.as_str().into(),
                merchant: s.merchant,
                peer: s.am.to_string(),
                customer: s.customer,
                customer_key: s.customer_key,
                transaction,
                deposit: s.deposit,
                merchant_deposit: known.then(|| s.merchant_deposit.to_string()),
                rate: known.then(|| rate(s.rate)),
                refusal: s.refusal.map(|r| r.as_str().to_string()),
                answer_by: (s.state == MtaState::Informed).then_some(Timestamp(s.ack_by)),
                expires_at: Timestamp(s.expires_at),
                merchant_key: s.merchant_key,
                merchant_cert: None,
                customer_cert: s.customer_cert,
            })
        }
    }
}

/// The key of the step that held transaction `txn`'s deposit: the opening request's for the
/// first, the next transaction's step for the others.
fn hold_key(row: &TradeRow, txn: u64) -> Result<String> {
    let key = row
        .client_key
        .as_deref()
        .ok_or_else(|| corrupt("an AM session without its opening key"))?;
    Ok(if txn == 1 {
        key.to_string()
    } else {
        format!(":session_next:{}.{txn}", row.session)
    })
}

/// The key of a step of `role` on transaction `t`: `prefix:role:label`.
fn step_key(prefix: &str, role: &str, t: TransactionId) -> String {
    format!("{prefix}:{role}:{}", trade::label(t))
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(corrupt)
}

fn body<T: DeserializeOwned>(m: &Envelope) -> Result<T> {
    serde_json::from_value(m.body.clone()).map_err(|_| inconsistent())
}

/// A repeat of a message applied before: only its inbox row (and a journal record of it).
fn peer_record(m: &Envelope) -> Effects {
    Effects::record(
        "peer_message",
        serde_json::json!({"id": m.id, "kind": m.kind}),
    )
}

/// A message that opened but does not fit the session it names (or names none here).
fn inconsistent() -> ServiceError {
    ServiceError::PeerRefused(PeerRefusal::Inconsistent)
}
