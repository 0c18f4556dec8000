//! Messages from the other node (or this one, when it plays both roles): each taken once,
//! with the step it causes, in the transaction of its inbox row
//! ([`crate::federation::Federation::take`]).

use super::{AM, MTA, Sessions, body, decode, inconsistent, peer_record, to_json};
use crate::access::corrupt;
use crate::exec::retrying;
use crate::{PeerRefusal, Result, ServiceError};
use tally_kernel::Id;
use tally_proto::effects::Effects;
use tally_proto::session::certs::{Role as CertRole, SessionCert};
use tally_proto::session::envelope::Envelope;
use tally_proto::session::ids::SessionId;
use tally_proto::session::trade::{
    self, AmInput, AmSession, MerchantTerms, MtaInput, MtaSession, MtaState, Windows,
};
use tally_store::trade::{TradeRow, insert};
use tally_wire::federation::PeerMessageTaken;

impl Sessions {
    /// Takes a session message from a peer (or this node), once.
    pub async fn receive(&self, m: &Envelope) -> Result<PeerMessageTaken> {
        if self.federation.taken_before(m).await? {
            return self.federation.take(m, Effects::none(), Vec::new()).await;
        }
        retrying(|| async {
            let (effects, rows) = match m.kind.as_str() {
                trade::INITIATION => self.register(m).await?,
                trade::ACK | trade::REFUSED => self.answered(m).await?,
                trade::RECORD => self.forwarded_record(m).await?,
                trade::CLEARED | trade::DISPUTED | trade::EXPIRED => self.concluded(m).await?,
                trade::POSTED | trade::RELEASED => self.settled(m).await?,
                trade::ORDER_KEY => self.order_keyed(m).await?,
                trade::RECEIPT => self.receipted(m).await?,
                trade::ABORTED => self.abandoned(m).await?,
                _ => return Err(ServiceError::PeerRefused(PeerRefusal::UnknownKind)),
            };
            self.federation.take(m, effects, rows).await
        })
        .await
    }

    async fn register(&self, m: &Envelope) -> Result<(Effects, Vec<tally_store::Attachment>)> {
        let init: trade::Initiation = body(m)?;
        if let Some(row) = self
            .core
            .store()
            .trade(MTA, &init.session.to_string())
            .await?
        {
            // The session's next transaction (M4), or another message (another id) for one
            // registered already.
            return self.next_registered(m, init, row).await;
        }
        let now = self.core.now();
        // M7: the AM's certificate of the customer's key, checked under the AM's node key and
        // vouched for again by this node for the merchant.
        let customer_cert = match (&init.customer_cert, &init.customer_key) {
            (Some(text), Some(key)) => {
                let am_key = self.federation.key_of(m.from).await?;
                let cert = SessionCert::open(
                    text,
                    &am_key,
                    init.session,
                    CertRole::Customer,
                    now.as_micros(),
                )
                .map_err(|_| inconsistent())?;
                if &cert.key != key {
                    return Err(inconsistent());
                }
                Some(cert.reissued_by(self.core.node_key()).map_err(corrupt)?)
            }
            (Some(_), None) => return Err(inconsistent()),
            (None, _) => None,
        };
        let terms = self.terms(m, &init).await?;
        let (mut session, effects) =
            MtaSession::register(init, m.from, terms, self.windows(), now, Id::new())
                .map_err(|_| inconsistent())?;
        session.customer_cert = customer_cert;
        let (session, effects) = self.gave_up_first(m, session, effects).await?;
        let row = TradeRow {
            role: MTA.into(),
            session: session.id.to_string(),
            state: session.state.as_str().into(),
            owner: session.merchant.clone(),
            client_key: None,
            machine: to_json(&session)?,
            wake_at: session.poll_timeout(),
            created_at: now,
            updated_at: now,
        };
        Ok((effects, vec![insert(&row)]))
    }

    /// The initiation of the next transaction of a session registered here (M4): taken
    /// once the one before is cleared.
    async fn next_registered(
        &self,
        m: &Envelope,
        init: trade::Initiation,
        row: TradeRow,
    ) -> Result<(Effects, Vec<tally_store::Attachment>)> {
        let (row, before) = self.posted_first(m, row).await?;
        let terms = self.terms(m, &init).await?;
        let (after, effects) = before
            .next(
                init,
                m.from,
                terms,
                self.windows(),
                self.core.now(),
                Id::new(),
            )
            .map_err(|_| inconsistent())?;
        let (after, effects) = self.gave_up_first(m, after, effects).await?;
        let rows = self.moved(&row, after.state.as_str(), &after, after.poll_timeout())?;
        Ok((effects, rows.into()))
    }

    /// An initiation of the next transaction while this one waits for the AM's word on its
    /// clearing: the AM starts a transaction only once it posted the one before, so the
    /// initiation (which overtook `session_posted`) stands for that word. The merchant is paid
    /// first, in a step of its own (keyed, so a retry finds it done); the late word is then
    /// only taken ([`Sessions::settled`]).
    async fn posted_first(&self, m: &Envelope, row: TradeRow) -> Result<(TradeRow, MtaSession)> {
        let before: MtaSession = decode(&row)?;
        if before.state != MtaState::Clearing || before.am != m.from {
            return Ok((row, before));
        }
        let key = super::step_key(":session_posted", MTA, before.transaction());
        let (after, effects) = before
            .handle(self.core.now(), MtaInput::Posted, Id::new())
            .map_err(|_| inconsistent())?;
        self.step_mta(&row, &after, effects, key).await?;
        let row = self.named_row(MTA, &row.session).await?;
        let after = decode(&row)?;
        Ok((row, after))
    }

    fn windows(&self) -> Windows {
        Windows {
            ack_s: self.settings.ack_window_s,
            conclusion_s: self.settings.conclusion_window_s,
        }
    }

    /// The AM's word that it gave up on this transaction came before its initiation
    /// (messages reordered): the transaction ends as it is registered, and no ack goes.
    async fn gave_up_first(
        &self,
        m: &Envelope,
        session: MtaSession,
        effects: Effects,
    ) -> Result<(MtaSession, Effects)> {
        if session.state != MtaState::Refused
            && self
                .core
                .store()
                .inbox_has(
                    &m.from.to_string(),
                    trade::ABORTED,
                    &trade::about(session.transaction()),
                )
                .await?
        {
            return session
                .handle(self.core.now(), MtaInput::Abandoned, Id::new())
                .map_err(|_| inconsistent());
        }
        Ok((session, effects))
    }

    /// What the MTA's operator knows of the merchant an initiation names, now.
    async fn terms(&self, m: &Envelope, init: &trade::Initiation) -> Result<Option<MerchantTerms>> {
        Ok(
            match self.core.store().session_merchant(&init.merchant).await? {
                None => None,
                Some(merchant) => {
                    let account = self.account(merchant.account, "account").await?;
                    let owed_by = self
                        .peer_account(m.from, account.currency, "owed_by")
                        .await?;
                    let rate = if account.currency == init.deposit.currency {
                        None
                    } else {
                        self.rate(init.deposit.currency, account.currency, self.core.now())
                            .await?
                    };
                    // M7: this node vouches for the merchant agent's key, for this session only.
                    let agent_cert = match &merchant.agent_key {
                        Some(key) => Some(
                            SessionCert {
                                session: init.session,
                                role: CertRole::Merchant,
                                key: key.clone(),
                                issuer: self.federation.node_id(),
                                not_after: init.release_at.unwrap_or(init.expires_at),
                            }
                            .issue(self.core.node_key())
                            .map_err(corrupt)?,
                        ),
                        None => None,
                    };
                    Some(MerchantTerms {
                        currency: account.currency,
                        rate,
                        auto_ack: merchant.auto_ack,
                        account: merchant.account,
                        owed_by,
                        agent_key: merchant.agent_key.clone(),
                        agent_cert,
                    })
                }
            },
        )
    }

    async fn answered(&self, m: &Envelope) -> Result<(Effects, Vec<tally_store::Attachment>)> {
        let input = if m.kind == trade::ACK {
            AmInput::Ack(body(m)?)
        } else {
            AmInput::Refused(body(m)?)
        };
        let session = match &input {
            AmInput::Ack(a) => a.session,
            AmInput::Refused(r) => r.session,
            _ => return Err(inconsistent()),
        };
        let (row, mut after, effects) = self.am_step(&session.to_string(), m, input).await?;
        if effects == Effects::none() {
            return Ok((peer_record(m), Vec::new()));
        }
        // M7: the MTA's certificate of the merchant agent's key, checked under the MTA's node
        // key and vouched for again by this node for the customer.
        if let Some(text) = after.merchant_cert.clone() {
            let mta_key = self.federation.key_of(after.mta).await?;
            let cert = SessionCert::open(
                &text,
                &mta_key,
                after.id,
                CertRole::Merchant,
                self.core.now().as_micros(),
            )
            .map_err(|_| inconsistent())?;
            if Some(&cert.key) != after.merchant_key.as_ref() {
                return Err(inconsistent());
            }
            after.merchant_cert = Some(cert.reissued_by(self.core.node_key()).map_err(corrupt)?);
        }
        let rows = self.moved(&row, after.state.as_str(), &after, after.poll_timeout())?;
        Ok((effects, rows.into()))
    }

    /// The MTA hears that the AM gave up waiting for its answer. Before the initiation (the
    /// two reordered) it is only taken: the initiation then finds it ([`Sessions::register`]).
    async fn abandoned(&self, m: &Envelope) -> Result<(Effects, Vec<tally_store::Attachment>)> {
        let session = m.body["session"].as_str().ok_or_else(inconsistent)?;
        let parsed: SessionId = session.parse().map_err(|_| inconsistent())?;
        if parsed.am != m.from {
            return Err(inconsistent());
        }
        let Some(row) = self.core.store().trade(MTA, session).await? else {
            return Ok((peer_record(m), Vec::new()));
        };
        let before: MtaSession = decode(&row)?;
        if before.am != m.from {
            return Err(inconsistent());
        }
        let transaction = super::conclude::named_in(&m.body, session)?;
        if transaction != before.transaction() {
            // Of a transaction before this one (ended), or of the next before its initiation
            // (which finds it, [`Sessions::register`]): only taken.
            return Ok((peer_record(m), Vec::new()));
        }
        let (after, effects) = before
            .handle(self.core.now(), MtaInput::Abandoned, Id::new())
            .map_err(|_| inconsistent())?;
        if effects == Effects::none() {
            return Ok((peer_record(m), Vec::new()));
        }
        let rows = self.moved(&row, after.state.as_str(), &after, after.poll_timeout())?;
        Ok((effects, rows.into()))
    }

    /// The AM's step on a message from its session's MTA (any other sender is refused).
    pub(super) async fn am_step(
        &self,
        session: &str,
        m: &Envelope,
        input: AmInput,
    ) -> Result<(TradeRow, AmSession, Effects)> {
        let row = self.named_row(AM, session).await?;
        let before = self.am_machine(&row).await?;
        if before.mta != m.from {
            return Err(inconsistent());
        }
        let (after, effects) = before
            .handle(self.core.now(), input)
            .map_err(|_| inconsistent())?;
        Ok((row, after, effects))
    }
}
