//! Service providers of pads (SPEC P3, P4, P7; `docs/protocols/pads.md`, Money and
//! Forwarding): a provider registers its price, its webhook and the merchant account it is
//! paid into; a holder's `forward` frame debits the pad (bytes and price) into the currency's
//! clearing account and becomes a signed webhook to the provider, released by the relay's
//! schedule; the provider's reply goes into the asking pad's mailbox, through the relay too;
//! and settlements pay each share of each charge line out of clearing once — the operator as
//! clearinghouse.
//!
//! The provider never learns which pad asked: it sees a request id (`req-…`), the body and
//! whether the price is held in escrow.

use super::{Pads, corrupt};
use crate::access::{invalid, namespaced, require_admin};
use crate::{Missing, Principal, Result, ServiceError};
use base64::Engine as _;
use tally_kernel::crypto::seal;
use tally_kernel::{Currency, Id, Secret, Timestamp};
use tally_ledger::{AccountKind, Command};
use tally_proto::effects::Effects;
use tally_proto::pad::ids::RequestId;
use tally_proto::pad::machine::{Charge, Terms};
use tally_proto::pad::plain::{BODY_MAX, ProviderName};
use tally_store::pad_providers::{
    ChargeRow, ForwardRow, ProviderRow, Share, insert_charge, insert_forward, meter_forward,
    move_forward, pay_share, set_fees_account, upsert_provider,
};
use tally_store::pads::{PadMessage, PadRow, insert_message};
use tally_store::{Attachment, Conflict, outbox::NewMessage};
use tally_wire::pads::{
    PadForwardView, PadPaid, PadPayRequest, PadPayout, PadPayoutRequest, PadProviderRequest,
    PadProviderView, PadReplyRequest, PadSettlement, PadSold,
};

/// Charge lines one settlement transfer pays at most (the rest wait for the next transfer).
const SETTLE_LINES: i64 = 1_000;

fn provider_name(text: &str) -> Result<ProviderName> {
    ProviderName::new(text).map_err(|e| invalid("name", e.0))
}

fn view(p: &ProviderRow) -> PadProviderView {
    PadProviderView {
        webhook_secret: None,
        name: p.name.clone(),
        owner: p.owner.clone(),
        account: p.account,
        currency: p.currency.code().into(),
        price_minor: p.price_minor,
        webhook: p.webhook.clone(),
        escrow: p.escrow,
    }
}

/// A forward as its provider sees it.
pub(super) fn forward_view(f: &ForwardRow) -> PadForwardView {
    PadForwardView {
        request: RequestId(f.request).to_string(),
        provider: f.provider.clone(),
        state: f.state.clone(),
        escrow: f.escrow,
        deadline: f.escrow.then(|| f.deadline.to_rfc3339()),
    }
}

impl Pads {
    /// Registers a provider, or changes its terms (its owner, or the operator). The name
    /// belongs to the owner of the account it was first registered with; its currency never
    /// changes (a new currency is a new name).
    pub async fn register_provider(
        &self,
        by: &Principal,
        name: &str,
        req: &PadProviderRequest,
    ) -> Result<PadProviderView> {
        let name = provider_name(name)?;
        if !(0..=1_000_000_000).contains(&req.price_minor) {
            return Err(invalid(
                "price_minor",
                "0 to 1000000000 minor units per request",
            ));
        }
        check_webhook(&req.webhook)?;
        self.core
            .require_owner(
                by,
                req.account,
                "a provider is paid into its owner's own account",
            )
            .await?;
        let account = self.core.existing_account(req.account).await?;
        if account.kind != AccountKind::Merchant {
            return Err(invalid(
                "account",
                "a provider is paid into a merchant account",
            ));
        }
        let currency = Currency::from_code(&req.currency)?;
        if account.currency != currency {
            return Err(ServiceError::Ledger(
                tally_ledger::LedgerError::CurrencyMismatch {
                    account: account.id,
                    account_currency: account.currency,
                    currency,
                },
            ));
        }
        let now = self.core.now();
        let before = self.core.store().pad_provider(name.as_str()).await?;
        if let Some(b) = &before {
            if b.owner != account.owner {
                return Err(ServiceError::Conflict(Conflict::Taken(
                    "the provider name belongs to another owner",
                )));
            }
            if b.currency != account.currency {
                return Err(invalid(
                    "account",
                    "a provider's currency does not change; register a new name",
                ));
            }
        }
        let row = ProviderRow {
            name: name.as_str().into(),
            owner: account.owner.clone(),
            account: account.id,
            currency: account.currency,
            price_minor: req.price_minor,
            webhook: req.webhook.clone(),
            escrow: req.escrow,
            created_at: before.as_ref().map_or(now, |b| b.created_at),
            updated_at: now,
        };
        // Its owner gets the secret its webhooks are signed with, on every registration.
        let registered = PadProviderView {
            webhook_secret: Some(self.webhook_secret_of(&row).expose().clone()),
            ..view(&row)
        };
        if before.as_ref().is_some_and(|b| same_terms(b, &row)) {
            return Ok(registered);
        }
        self.core
            .commit(
                format!(":pad_provider:{}:{}", name.as_str(), Id::new()),
                Effects::record(
                    "pad_provider",
                    serde_json::json!({
                        "name": row.name, "owner": row.owner, "account": row.account,
                        "price_minor": row.price_minor, "currency": row.currency.code(),
                        "escrow": row.escrow,
                    }),
                ),
                vec![upsert_provider(&row)],
            )
            .await?;
        Ok(registered)
    }

    /// The secret `provider`'s webhooks are signed with (for the outbox worker).
    pub async fn provider_webhook_secret(&self, provider: &str) -> Result<Secret<String>> {
        Ok(self.webhook_secret_of(&self.provider_row(provider).await?))
    }

    /// `HMAC(webhook key, name ‖ 0x00 ‖ registered at)`, hex: every node of a database derives
    /// the same; a provider registered anew under the name gets another.
    fn webhook_secret_of(&self, p: &ProviderRow) -> Secret<String> {
        let mac = self.webhook_key.mac_parts(&[
            p.name.as_bytes(),
            &[0],
            &p.created_at.as_micros().to_be_bytes(),
        ]);
        Secret::new(format!("whsec_{}", hex::encode(mac)))
    }

    /// A provider's terms (anyone with an API key: holders choose by them).
    pub async fn provider(&self, name: &str) -> Result<PadProviderView> {
        let name = provider_name(name)?;
        Ok(view(&self.provider_row(name.as_str()).await?))
    }

    async fn provider_row(&self, name: &str) -> Result<ProviderRow> {
        self.core
            .store()
            .pad_provider(name)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::PadProvider,
                id: name.into(),
            })
    }

    /// A forward of `provider`, for its owner or the operator.
    async fn forward_of(
        &self,
        by: &Principal,
        provider: &str,
        request: &str,
    ) -> Result<(ProviderRow, ForwardRow)> {
        let p = self.provider_row(provider_name(provider)?.as_str()).await?;
        if !by.is_admin() && by.owner != p.owner {
            return Err(ServiceError::Forbidden(
                "only the provider's owner sees its requests",
            ));
        }
        let f = self
            .forward_where(request, |f| f.provider == p.name)
            .await?;
        Ok((p, f))
    }

    /// The forward named `request` (`req-…`) if `fits` it; not found otherwise.
    pub(super) async fn forward_where(
        &self,
        request: &str,
        fits: impl FnOnce(&ForwardRow) -> bool,
    ) -> Result<ForwardRow> {
        let id: RequestId = request
            .parse()
            .map_err(|e| invalid("request", format!("{e}")))?;
        self.core
            .store()
            .pad_forward(&id.0)
            .await?
            .filter(fits)
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::PadRequest,
                id: request.into(),
            })
    }

    /// A forwarded request's state, for its provider.
    pub async fn forward(
        &self,
        by: &Principal,
        provider: &str,
        request: &str,
    ) -> Result<PadForwardView> {
        Ok(forward_view(
            &self.forward_of(by, provider, request).await?.1,
        ))
    }

    /// The provider's reply to a request: into the asking pad's mailbox, released by the
    /// relay. An escrowed request is marked performed (or declined: its price goes back to
    /// the pad at the next sweep). A request is answered once; the same call again answers
    /// `true` (replayed) and sends nothing more.
    pub async fn reply(
        &self,
        by: &Principal,
        provider: &str,
        req: &PadReplyRequest,
    ) -> Result<(PadForwardView, bool)> {
        let (p, f) = self.forward_of(by, provider, &req.request).await?;
        let body = base64::engine::general_purpose::STANDARD
            .decode(&req.body)
            .map_err(|_| invalid("body", "base64"))?;
        if body.len() > BODY_MAX {
            return Err(invalid("body", format!("at most {BODY_MAX} bytes decoded")));
        }
        if let Some(charge) = req.charge_minor {
            if !f.escrow || !req.performed {
                return Err(invalid(
                    "charge_minor",
                    "only an escrowed request the provider performed is metered",
                ));
            }
            if !(0..=f.price_minor).contains(&charge) {
                return Err(invalid(
                    "charge_minor",
                    format!("0 to the price held, {} minor units", f.price_minor),
                ));
            }
        }
        let to = match (f.escrow, f.state.as_str()) {
            (false, "sent") => "replied",
            (true, "held") if req.performed => "performed",
            (true, "held") => "declined",
            _ => return Ok((forward_view(&f), true)),
        };
        let mailbox = self
            .core
            .store()
            .mailbox_of_pad(&f.pad)
            .await?
            .ok_or_else(|| corrupt("a pad without its mailbox"))?;
        let now = self.core.now();
        let mut id = [0u8; 16];
        crate::identity::getrandom_fill(&mut id)?;
        let sealed = seal::seal(&self.mailbox_key()?, &id, &body)
            .map_err(|e| ServiceError::Setup(e.to_string()))?;
        let mut rows = match req.charge_minor {
            Some(charge) => meter_forward(&f.request, &f.state, to, charge, now).to_vec(),
            None => move_forward(&f.request, &f.state, to, now).to_vec(),
        };
        rows.push(insert_message(&PadMessage {
            id,
            mailbox,
            sender_kind: 1,
            sender: p.name.clone(),
            in_reply_to: Some(f.request),
            body: sealed,
            release_at: self.settings.relay.release_at(&self.relay_key, now),
            created_at: now,
        }));
        let outcome = self
            .core
            .commit(
                format!(":pad_reply:{}", RequestId(f.request)),
                Effects::record(
                    "pad_reply",
                    serde_json::json!({
                        "request": RequestId(f.request), "provider": p.name, "state": to,
                    }),
                ),
                rows,
            )
            .await;
        match outcome {
            Ok(o) if !o.replayed => {}
            // Answered meanwhile (here or on another node).
            Ok(_) | Err(ServiceError::Conflict(Conflict::Moved(_))) => {
                let (_, now) = self.forward_of(by, provider, &req.request).await?;
                return Ok((forward_view(&now), true));
            }
            Err(e) => return Err(e),
        }
        Ok((
            forward_view(&ForwardRow {
                state: to.into(),
                updated_at: now,
                charge_minor: req.charge_minor,
                ..f
            }),
            false,
        ))
    }

    /// The seed's reverse flow: the provider pays the holder of the pad that sent
    /// `req.request`, from its own account, without learning the pad. An exhausted pad with
    /// bytes left becomes active. The same key again answers the same payment.
    pub async fn pay_holder(
        &self,
        by: &Principal,
        provider: &str,
        idempotency_key: &str,
        req: &PadPayRequest,
    ) -> Result<(PadPaid, bool)> {
        let key = namespaced(by, idempotency_key)?;
        let (p, f) = self.forward_of(by, provider, &req.request).await?;
        if req.amount_minor <= 0 {
            return Err(invalid("amount_minor", "a payment is positive"));
        }
        crate::exec::retrying(|| async {
            let row = self
                .core
                .store()
                .pad(&f.pad)
                .await?
                .ok_or_else(|| corrupt("a forward's pad is missing"))?;
            if row.state == tally_proto::pad::machine::State::Cancelled.as_str() {
                return Err(invalid(
                    "request",
                    "the pad that sent it is cancelled; it takes no payments",
                ));
            }
            let rows = self.credited(&f.pad, req.amount_minor).await?;
            let outcome = self
                .core
                .commit(
                    key.clone(),
                    Effects::ledger(Command::Transfer {
                        debit_account: p.account,
                        credit_account: row.value_account,
                        amount_minor: req.amount_minor,
                        currency: p.currency,
                        timeout_s: None,
                        memo: format!("{} pays the holder of {}", p.name, RequestId(f.request)),
                    }),
                    rows,
                )
                .await?;
            let transfer = outcome
                .transfer()
                .map(|t| t.id)
                .ok_or(ServiceError::IdempotencyKeyReused)?;
            Ok((
                PadPaid {
                    request: RequestId(f.request).to_string(),
                    amount_minor: req.amount_minor,
                    currency: p.currency.code().into(),
                    transfer,
                },
                outcome.replayed,
            ))
        })
        .await
    }

    /// The provider's earnings paid out in a new pad: its value from the provider's account,
    /// its file answered to the provider (once: a retry before the pad is used answers it
    /// again).
    pub async fn payout_pad(
        &self,
        by: &Principal,
        provider: &str,
        idempotency_key: &str,
        req: &PadPayoutRequest,
    ) -> Result<(PadSold, bool)> {
        let p = self.provider_row(provider_name(provider)?.as_str()).await?;
        if !by.is_admin() && by.owner != p.owner {
            return Err(ServiceError::Forbidden(
                "only the provider's owner is paid out",
            ));
        }
        let key = namespaced(by, idempotency_key)?;
        let (currency, mode) = self.check_sale(
            p.currency.code(),
            req.value_minor,
            req.size,
            req.mode.as_deref(),
            &req.node_url,
        )?;
        // A retry of a payout made is answered by its pad, whatever the balance now.
        if self.core.store().pad_by_issue_key(&key).await?.is_none() {
            self.check_payer(
                p.account,
                tally_kernel::Amount::new(req.value_minor, currency),
            )
            .await?;
        }
        let mut id = [0u8; 16];
        crate::identity::getrandom_fill(&mut id)?;
        let issue = super::Issue {
            key,
            from: Some(p.account),
            account: None,
            value: tally_kernel::Amount::new(req.value_minor, currency),
            size: req.size,
            mode,
            url: req.node_url.clone(),
            memo: format!("{} paid out in a pad", p.name),
            allow: Vec::new(),
        };
        self.issue(issue, id, Vec::new()).await
    }

    /// A `forward`'s provider terms, as the machine sees them (none: unknown, or priced in
    /// another currency than the pad's), with its row.
    pub(super) async fn terms(
        &self,
        name: &ProviderName,
        currency: Currency,
    ) -> Result<Option<(Terms, ProviderRow)>> {
        Ok(self
            .core
            .store()
            .pad_provider(name.as_str())
            .await?
            .filter(|p| p.currency == currency)
            .map(|p| {
                (
                    Terms {
                        price_minor: p.price_minor,
                        escrow: p.escrow,
                    },
                    p,
                )
            }))
    }

    /// The rows a taken `forward` writes: its row, and the webhook to its provider, held until
    /// the relay releases it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_rows(
        &self,
        pad: &PadRow,
        request: [u8; 16],
        provider: &ProviderRow,
        escrow: bool,
        body: &[u8],
        step_key: &str,
        now: Timestamp,
        commission_bps: u32,
    ) -> Vec<Attachment> {
        let deadline = now.plus_seconds(self.settings.escrow_s);
        let id = RequestId(request);
        let data = serde_json::json!({
            "request": id,
            "provider": provider.name,
            "body": base64::engine::general_purpose::STANDARD.encode(body),
            "escrow": escrow,
            "deadline": escrow.then(|| deadline.to_rfc3339()),
            "reply_to": format!("/v1/pad-providers/{}/replies", provider.name),
        });
        vec![
            insert_forward(&ForwardRow {
                request,
                pad: pad.id,
                provider: provider.name.clone(),
                escrow,
                price_minor: provider.price_minor,
                state: if escrow { "held" } else { "sent" }.into(),
                step_key: step_key.into(),
                deadline,
                charge_minor: None,
                commission_bps: Some(i64::from(commission_bps)),
                created_at: now,
                updated_at: now,
            }),
            Attachment::Message(NewMessage {
                dedup_key: format!(":pad_forward:{id}"),
                kind: "webhook".into(),
                address: provider.webhook.clone(),
                subject: format!("pad request {id}"),
                body: format!("pad request {id} for {}", provider.name),
                data,
                // Signed with the provider's own secret, not the node's.
                secret: Some(tally_proto::effects::SecretRef::PadProviderWebhook {
                    provider: provider.name.clone(),
                }),
                not_before: Some(self.settings.relay.release_at(&self.relay_key, now)),
            }),
        ]
    }

    /// The sweeper's pass: escrows due, then a settlement when the last one here is
    /// `settle_every_s` old. Returns the escrows resolved and the payouts made.
    pub async fn sweep(&self, limit: i64) -> Result<(usize, usize)> {
        use std::sync::atomic::Ordering;
        let escrows = self.sweep_escrows(limit).await?;
        let now = self.core.now().as_micros();
        let last = self.settled_at.load(Ordering::Relaxed);
        if now - last < self.settings.settle_every_s.saturating_mul(1_000_000) {
            return Ok((escrows, 0));
        }
        self.settled_at.store(now, Ordering::Relaxed);
        Ok((escrows, self.settle_all().await?.payouts.len()))
    }

    /// Pays out of every pad clearing account what it owes (the operator, now).
    pub async fn settle(&self, by: &Principal) -> Result<PadSettlement> {
        require_admin(by)?;
        self.settle_all().await
    }

    /// Pays out of every pad clearing account what it owes: per currency, the operator's
    /// shares into its fee account; per provider, its shares into its account. One transfer
    /// per at most [`SETTLE_LINES`] lines, marking them paid under a guard, so two settlements
    /// at once (here or on another node) pay each share once. The sweeper runs it every
    /// `--pad-settle-every`.
    pub async fn settle_all(&self) -> Result<PadSettlement> {
        let mut out = PadSettlement::default();
        let store = self.core.store();
        for (currency, _) in store.pad_currencies_fees().await? {
            loop {
                let lines = store
                    .pad_unpaid(Share::Operator, currency.code(), SETTLE_LINES)
                    .await?;
                let Some(paid) = self.pay(currency, None, &lines).await? else {
                    break;
                };
                out.payouts.push(paid);
                if (lines.len() as i64) < SETTLE_LINES {
                    break;
                }
            }
        }
        for name in store.pad_providers_unpaid().await? {
            let p = self.provider_row(&name).await?;
            loop {
                let lines = store
                    .pad_unpaid(Share::Provider, &name, SETTLE_LINES)
                    .await?;
                let Some(paid) = self.pay(p.currency, Some(&p), &lines).await? else {
                    break;
                };
                out.payouts.push(paid);
                if (lines.len() as i64) < SETTLE_LINES {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// One settlement transfer: `lines`' shares of `provider` (none: the operator's) out of
    /// clearing. `None` when there is nothing to pay or another settlement paid them first.
    async fn pay(
        &self,
        currency: Currency,
        provider: Option<&ProviderRow>,
        lines: &[ChargeRow],
    ) -> Result<Option<PadPayout>> {
        if lines.is_empty() {
            return Ok(None);
        }
        let (share, to) = match provider {
            Some(p) => (Share::Provider, p.account),
            None => (Share::Operator, self.fees_account(currency).await?),
        };
        let amount: i64 = lines
            .iter()
            .map(|l| match share {
                Share::Operator => l.operator_minor,
                Share::Provider => l.provider_minor,
            })
            .sum();
        let clearing = self.currency(currency).await?.clearing_account;
        let settlement = Id::new();
        let rows: Vec<Attachment> = lines
            .iter()
            .flat_map(|l| pay_share(&l.id, share, settlement))
            .collect();
        let who = provider.map_or("fees", |p| p.name.as_str());
        let effects = if amount > 0 {
            Effects::ledger(Command::Transfer {
                debit_account: clearing,
                credit_account: to,
                amount_minor: amount,
                currency,
                timeout_s: None,
                memo: format!("pad settlement {settlement}: {who}, {} lines", lines.len()),
            })
        } else {
            Effects::record(
                "pad_settlement",
                serde_json::json!({"settlement": settlement, "to": who, "lines": lines.len()}),
            )
        };
        match self
            .core
            .commit(format!(":pad_settle:{settlement}"), effects, rows)
            .await
        {
            // Another settlement (here or on another node) paid these lines first.
            Err(ServiceError::Conflict(Conflict::Moved(_))) => Ok(None),
            Err(e) => Err(e),
            Ok(_) => Ok(Some(PadPayout {
                provider: provider.map(|p| p.name.clone()),
                account: to,
                amount_minor: amount,
                currency: currency.code().into(),
                lines: lines.len() as u64,
            })),
        }
    }

    /// The operator's fee account of pads in `currency`, opened on first use.
    async fn fees_account(&self, currency: Currency) -> Result<Id> {
        let known = |all: Vec<(Currency, Option<Id>)>| {
            all.into_iter()
                .find(|(c, _)| *c == currency)
                .and_then(|(_, a)| a)
        };
        if let Some(a) = known(self.core.store().pad_currencies_fees().await?) {
            return Ok(a);
        }
        let account = self
            .open_bounded(
                format!(":pad_fees:{}", currency.code()),
                "operator",
                currency,
                AccountKind::Fee,
            )
            .await?;
        self.core
            .commit(
                format!(":pad_fees_account:{}", currency.code()),
                Effects::record(
                    "pad_fees_account",
                    serde_json::json!({"currency": currency.code(), "account": account.id}),
                ),
                vec![set_fees_account(currency, account.id)],
            )
            .await?;
        known(self.core.store().pad_currencies_fees().await?)
            .ok_or_else(|| ServiceError::Setup("bug: the pad fee account was not kept".into()))
    }
}

/// The charge line of a taken frame's debit.
pub(super) fn charge_row(
    id: [u8; 16],
    pad: &PadRow,
    charge: &Charge,
    now: Timestamp,
) -> Attachment {
    insert_charge(&ChargeRow {
        id,
        pad: pad.id,
        currency: pad.currency,
        provider: charge.provider.as_ref().map(|p| p.as_str().to_string()),
        operator_minor: charge.operator_minor,
        provider_minor: charge.provider_minor,
        held: charge.held,
        fee_paid: false,
        provider_paid: charge.provider_minor == 0,
        created_at: now,
    })
}

fn same_terms(a: &ProviderRow, b: &ProviderRow) -> bool {
    (a.account, a.price_minor, &a.webhook, a.escrow)
        == (b.account, b.price_minor, &b.webhook, b.escrow)
}

fn check_webhook(url: &str) -> Result<()> {
    let ok = (1..=1024).contains(&url.len())
        && url.is_ascii()
        && !url.chars().any(|c| c.is_ascii_control() || c == ' ')
        && (url.starts_with("https://") || url.starts_with("http://"));
    if !ok {
        return Err(invalid(
            "webhook",
            "an http:// or https:// URL of at most 1024 ASCII bytes",
        ));
    }
    Ok(())
}
