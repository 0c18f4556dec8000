//! The threshold rule (A6) on every path that moves a user's money out: transfers, holds,
//! payments by reference and the auto-debit on acknowledgement. Below the payee's threshold
//! (its own rule, else the operator's) and the payer's own, the payment runs at once; above
//! either, nothing moves: a confirmation session opens (a code on the payer's second channel,
//! the payment in clear) and the caller is answered `confirmation_required` with it. Once the
//! code is verified, the same request with the same idempotency key runs, using the session up
//! in the payment's own transaction, so one confirmation moves money once.
//!
//! Decisions:
//! * The session is found by the request's key (`{key}:confirm`) and must name the same
//!   payment, so the client needs no new field: "confirm, then repeat the request". A retry
//!   before the code is verified gets the same session back; after it ended unconfirmed
//!   (locked, cancelled, expired) the key is spent (`confirmation_failed`).
//! * A request that already ran under its key is answered by its replay, even if the rules
//!   changed since; a payment never moves twice for one key.
//! * The operator's own keys are not gated: the operator moves money under its own authority
//!   (and only it states exchange rates, so `/v1/exchanges` is never a customer's path).
//! * With no rule at all, a plain payment runs at once (the certified-transfer application
//!   always asks, because the user chose it).

use super::open::OpenPlan;
use super::{Oob, Payload};
use crate::access::corrupt;
use crate::core::{Gate, Outflow};
use crate::{Principal, Result, ServiceError};
use tally_kernel::Amount;
use tally_proto::oob::{Purpose, State, Transaction};
use tally_store::Attachment;
use tally_store::oob::use_session;
use tally_wire::oob::AppRequest;

impl Gate for Oob {
    async fn gate(&self, by: &Principal, key: &str, out: Outflow) -> Result<Vec<Attachment>> {
        self.gate_outflow(by, key, out, false).await
    }

    async fn ceremony(
        &self,
        user: &str,
        key: &str,
        title: &str,
        form: &str,
    ) -> Result<Vec<Attachment>> {
        let app = AppRequest::Declaration {
            title: title.to_string(),
            form: form.to_string(),
        };
        let purpose = Purpose::Message(tally_proto::oob::Certified {
            title: format!("Declaration: {title}"),
            sha256: hex::encode(tally_kernel::crypto::kdf::sha256(form.as_bytes())),
        });
        self.confirmed(user, &format!("{key}:ceremony"), app, purpose)
            .await
    }
}

/// The threshold rule with every threshold at zero: each payment through it is confirmed by a
/// code, whatever the rules say (the web checkout's "pay from my account", where the page is
/// channel A and the code on the payer's second channel is what authorises the money).
pub struct Confirming<'a>(pub &'a Oob);

impl Gate for Confirming<'_> {
    async fn gate(&self, by: &Principal, key: &str, out: Outflow) -> Result<Vec<Attachment>> {
        self.0.gate_outflow(by, key, out, true).await
    }

    async fn ceremony(
        &self,
        user: &str,
        key: &str,
        title: &str,
        form: &str,
    ) -> Result<Vec<Attachment>> {
        self.0.ceremony(user, key, title, form).await
    }
}

impl Oob {
    /// [`Gate::gate`], by the rules or (`always`) for every payment.
    async fn gate_outflow(
        &self,
        by: &Principal,
        key: &str,
        out: Outflow,
        always: bool,
    ) -> Result<Vec<Attachment>> {
        if by.is_admin() {
            return Ok(Vec::new());
        }
        let store = self.core.store();
        // A request that already ran is answered by its own replay.
        if store.journal_event(key).await?.is_some() {
            return Ok(Vec::new());
        }
        let confirm_key = format!("{key}:confirm");
        let app = AppRequest::Confirm {
            operation: out.operation.to_string(),
            payer_account: out.payer_account,
            payee_account: out.payee_account,
            amount: out.amount,
            description: out.description.clone(),
        };
        if store.oob_session_by_key(&confirm_key).await?.is_none() {
            let Some(payee) = store.account(out.payee_account).await? else {
                // The ledger refuses the unknown account itself.
                return Ok(Vec::new());
            };
            if !always
                && !self
                    .secured_by_rules(&by.owner, &payee.owner, out.amount)
                    .await?
            {
                return Ok(Vec::new());
            }
        }
        let payee = store
            .account(out.payee_account)
            .await?
            .map_or_else(String::new, |a| a.owner);
        let purpose = Purpose::Transaction(Transaction {
            amount: out.amount,
            payer_account: Some(out.payer_account),
            payee,
            payee_account: Some(out.payee_account),
            description: out.description,
        });
        self.confirmed(&by.owner, &confirm_key, app, purpose).await
    }
}

impl Oob {
    /// The session under `key` for `user` and `app`: verified, the rows that use it up with
    /// the step; open, [`ServiceError::ConfirmationRequired`]; ended unconfirmed,
    /// [`ServiceError::ConfirmationFailed`]; none, opened now on the user's second channel
    /// (then `ConfirmationRequired`).
    async fn confirmed(
        &self,
        user: &str,
        key: &str,
        app: AppRequest,
        purpose: Purpose,
    ) -> Result<Vec<Attachment>> {
        let store = self.core.store();
        if let Some(row) = store.oob_session_by_key(key).await? {
            let payload: Payload = serde_json::from_str(&row.payload).map_err(corrupt)?;
            if payload.app != app || row.user_id != user {
                return Err(ServiceError::IdempotencyKeyReused);
            }
            return match row.state {
                State::Open => Err(ServiceError::ConfirmationRequired(Box::new(
                    self.present(&row).await?,
                ))),
                // Used by a step that committed meanwhile: that step's replay wins over the
                // guard (the writer answers a known key before it checks guards).
                State::Verified => Ok(use_session(row.id, self.core.now()).into()),
                ended @ (State::Locked | State::Closed | State::Expired) => {
                    Err(ServiceError::ConfirmationFailed(ended))
                }
            };
        }
        let (channel, address) = match self.channel_b(user, None).await {
            Ok(found) => found,
            Err(ServiceError::NoChannel | ServiceError::NotFound { .. }) => {
                return Err(ServiceError::Forbidden(
                    "this step needs out-of-band confirmation, but the user has no verified \
                     second-channel address: add one first",
                ));
            }
            Err(e) => return Err(e),
        };
        let opened = self
            .open_with(OpenPlan {
                user: user.to_string(),
                opened_by: user.to_string(),
                application: app.name(),
                purpose,
                payload: Payload {
                    app,
                    address_id: None,
                },
                money: None,
                channel,
                address,
                client_key: Some(key.to_string()),
                extra: Vec::new(),
                client: None,
                capped: false,
            })
            .await;
        let session = match opened {
            Ok((session, _)) => session,
            // Two first tries of one request raced: both answer the winner's session.
            Err(ServiceError::Ledger(tally_ledger::LedgerError::IdempotencyConflict)) => {
                let row = store
                    .oob_session_by_key(key)
                    .await?
                    .ok_or(ServiceError::IdempotencyKeyReused)?;
                self.present(&row).await?
            }
            Err(e) => return Err(e),
        };
        Err(ServiceError::ConfirmationRequired(Box::new(session)))
    }
}

impl Oob {
    /// True when a plain payment of `amount` by `payer` to `payee` needs confirmation: above
    /// the payee's threshold (the lower of its own and the operator's) or above the payer's
    /// own. No rule, no confirmation.
    pub async fn secured_by_rules(&self, payer: &str, payee: &str, amount: Amount) -> Result<bool> {
        let code = amount.currency.code();
        let store = self.core.store();
        // A payee's own rule may tighten the operator's default, never loosen it.
        let payee_limit = match (
            store.rule(payee, code).await?,
            store.rule("operator", code).await?,
        ) {
            (Some(own), Some(default)) => Some(own.min(default)),
            (own, default) => own.or(default),
        };
        let payer_limit = store.payer_rule(payer, code).await?;
        Ok(payee_limit.is_some_and(|l| amount.minor > l)
            || payer_limit.is_some_and(|l| amount.minor > l))
    }
}
