//! Opening a session: who may open what (the user for itself; the merchant being paid; the
//! web page for logins and declarations), the threshold rule (below it a transfer runs at
//! once on channel A alone), channel B (the directory or a certificate naming it), and the
//! opening step of the machine, committed with the session row under the per-address quota.

use super::{Oob, Payload, check_money, oob, open_key};
use crate::Missing;
use crate::access::{check_name, corrupt, invalid, namespaced, text_field};
use crate::identity::getrandom_fill;
use crate::{Principal, Result, Role, ServiceError};
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::{Amount, Id};
use tally_ledger::{Command, LedgerError};
use tally_proto::effects::Effects;
use tally_proto::oob::{Certified, Money, Opening, Purpose, Session, Transaction};
use tally_store::oob::{Send, SendCaps, SessionRow, insert_session, record_send};

/// The counter of code sends refused by a cap (per address, user, client address, node).
pub const SENDS_REFUSED: &str = "tally_oob_sends_refused_total";
use tally_store::{Attachment, Conflict};
use tally_wire::oob::{AppRequest, OpenSession, Opened, SessionView};

/// What a session will be, before it opens.
pub(crate) struct OpenPlan {
    pub(crate) user: String,
    pub(crate) opened_by: String,
    pub(crate) application: &'static str,
    pub(crate) purpose: Purpose,
    pub(crate) payload: Payload,
    pub(crate) money: Option<Money>,
    pub(crate) channel: String,
    pub(crate) address: String,
    pub(crate) client_key: Option<String>,
    /// More rows to write with the session.
    pub(crate) extra: Vec<Attachment>,
    /// The client that asked (for the per-client-address cap), when known.
    pub(crate) client: Option<std::net::IpAddr>,
    /// Counted by the per-client-address and node-wide caps: anonymous sign-ins and address
    /// verifications, which anyone can make the node send.
    pub(crate) capped: bool,
}

enum Planned {
    Secured(Box<OpenPlan>),
    Normal(Command),
}

/// The idempotency key of a below-threshold transfer opened with the (namespaced) client key.
fn normal_key(client_key: &str) -> String {
    format!("{client_key}:normal")
}

impl Oob {
    /// Opens a session. `by` is `None` for the web page (logins and declarations only).
    pub async fn open(
        &self,
        by: Option<&Principal>,
        idempotency_key: Option<&str>,
        req: OpenSession,
        client: Option<std::net::IpAddr>,
    ) -> Result<Opened> {
        check_name("user", &req.user)?;
        let client_key = match (by, idempotency_key) {
            (Some(by), Some(k)) => Some(namespaced(by, k)?),
            (None, Some(_)) => return Err(ServiceError::Unauthorized),
            _ => None,
        };
        if let Some(key) = &client_key {
            if let Some(row) = self.core.store().oob_session_by_key(key).await? {
                return self.replayed_open(&row, &req).await;
            }
            if let Some(replay) = self.replayed_normal(key, &req).await? {
                return Ok(replay);
            }
        }
        let plan = match self.plan(by, &req, client_key.clone()).await {
            // Anonymous callers (the web page) learn nothing about which users exist or have
            // an address: both refusals read the same.
            Err(ServiceError::NotFound {
                what: Missing::User,
                ..
            })
            | Err(ServiceError::NoChannel)
                if by.is_none() =>
            {
                return Err(invalid(
                    "user",
                    "no code can be sent for this user (unknown, or no verified second channel)",
                ));
            }
            other => other?,
        };
        let plan = match plan {
            Planned::Secured(mut plan) => {
                plan.client = client;
                plan.capped = by.is_none();
                plan
            }
            Planned::Normal(command) => {
                let key = match &client_key {
                    Some(k) => normal_key(k),
                    None => format!(":oob_normal:{}", Id::new()),
                };
                let outcome = self
                    .core
                    .commit(key, Effects::ledger(command), Vec::new())
                    .await?;
                let replayed = outcome.replayed;
                let transfer = outcome
                    .transfer()
                    .cloned()
                    .ok_or(ServiceError::IdempotencyKeyReused)?;
                return Ok(Opened::Normal {
                    transfer: Box::new(transfer.into()),
                    replayed,
                });
            }
        };
        match self.open_with(*plan).await {
            Ok((session, replayed)) => Ok(Opened::Secured {
                session: Box::new(session),
                replayed,
            }),
            // Two retries with one key raced: the loser returns the winner's session.
            Err(ServiceError::Ledger(tally_ledger::LedgerError::IdempotencyConflict))
                if client_key.is_some() =>
            {
                let key = client_key.as_deref().unwrap_or_default();
                match self.core.store().oob_session_by_key(key).await? {
                    Some(row) => self.replayed_open(&row, &req).await,
                    None => Err(ServiceError::IdempotencyKeyReused),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// A retry of a request that ran below the threshold stays that transfer, even if the
    /// threshold changed meanwhile: money never moves twice for one key.
    async fn replayed_normal(&self, key: &str, req: &OpenSession) -> Result<Option<Opened>> {
        let Some(tally_ledger::Event::Transfers { transfers }) =
            self.core.store().journal_event(&normal_key(key)).await?
        else {
            return Ok(None);
        };
        let Some(transfer) = transfers.into_iter().next() else {
            return Ok(None);
        };
        let (amount, credit) = match &req.app {
            AppRequest::Transfer {
                amount,
                credit_account,
                ..
            } => (*amount, *credit_account),
            AppRequest::Payment {
                amount,
                merchant_account,
                ..
            } => (*amount, *merchant_account),
            _ => return Err(ServiceError::IdempotencyKeyReused),
        };
        let same = transfer.amount_minor == amount.minor
            && transfer.currency == amount.currency
            && transfer.credit_account == credit;
        if same {
            Ok(Some(Opened::Normal {
                transfer: Box::new(transfer.into()),
                replayed: true,
            }))
        } else {
            Err(ServiceError::IdempotencyKeyReused)
        }
    }

    async fn replayed_open(&self, row: &SessionRow, req: &OpenSession) -> Result<Opened> {
        let payload: Payload = serde_json::from_str(&row.payload).map_err(corrupt)?;
        if row.user_id != req.user || payload.app != req.app {
            return Err(ServiceError::IdempotencyKeyReused);
        }
        Ok(Opened::Secured {
            session: Box::new(self.present(row).await?),
            replayed: true,
        })
    }

    async fn plan(
        &self,
        by: Option<&Principal>,
        req: &OpenSession,
        client_key: Option<String>,
    ) -> Result<Planned> {
        let user = req.user.as_str();
        let is_self = |by: Option<&Principal>| by.is_some_and(|b| b.is_admin() || b.owner == user);
        let payload = Payload {
            app: req.app.clone(),
            address_id: None,
        };
        let mut money = None;
        let purpose = match &req.app {
            AppRequest::Login | AppRequest::Declaration { .. } if by.is_none() => {
                purpose_simple(&req.app)?
            }
            _ if by.is_none() => return Err(ServiceError::Unauthorized),
            AppRequest::Confirm { .. } => {
                return Err(ServiceError::Forbidden(
                    "confirmations are opened by the node when a payment needs one",
                ));
            }
            AppRequest::Login | AppRequest::Offers | AppRequest::Declaration { .. } => {
                if !is_self(by) {
                    return Err(ServiceError::Forbidden("only the user opens this session"));
                }
                purpose_simple(&req.app)?
            }
            AppRequest::Transfer {
                debit_account,
                credit_account,
                amount,
                memo,
            }
            | AppRequest::Bet {
                debit_account,
                credit_account,
                stake: amount,
                bet: memo,
            } => {
                if !is_self(by) {
                    return Err(ServiceError::Forbidden(
                        "only the user certifies its transfers",
                    ));
                }
                let debit = self.account_of(*debit_account, "debit_account").await?;
                if debit.owner != user {
                    return Err(ServiceError::Forbidden(
                        "you can only move money out of your own accounts",
                    ));
                }
                let credit = self.account_of(*credit_account, "credit_account").await?;
                check_money(*amount, debit.currency, credit.currency)?;
                if memo.len() > 300 {
                    return Err(invalid("memo", "at most 300 bytes"));
                }
                let description = match &req.app {
                    AppRequest::Bet { .. } => format!("Bet: {memo}"),
                    _ => memo.clone(),
                };
                if matches!(req.app, AppRequest::Transfer { .. })
                    && !self.secured(user, &credit.owner, *amount).await?
                {
                    return Ok(Planned::Normal(Command::Transfer {
                        debit_account: *debit_account,
                        credit_account: *credit_account,
                        amount_minor: amount.minor,
                        currency: amount.currency,
                        timeout_s: None,
                        memo: description,
                    }));
                }
                money = Some(Money::Transfer {
                    debit_account: *debit_account,
                    credit_account: *credit_account,
                    amount: *amount,
                    memo: description.clone(),
                });
                Purpose::Transaction(Transaction {
                    amount: *amount,
                    payer_account: Some(*debit_account),
                    payee: credit.owner,
                    payee_account: Some(*credit_account),
                    description,
                })
            }
            AppRequest::Payment {
                payer_account,
                merchant_account,
                amount,
                description,
                terminal,
            } => {
                let merchant = self
                    .merchant_account(
                        by,
                        *merchant_account,
                        "payment sessions are opened by the merchant being paid",
                    )
                    .await?;
                text_field("description", description, 300)?;
                if let Some(t) = terminal {
                    text_field("terminal", t, 64)?;
                }
                let payer = match payer_account {
                    Some(a) => *a,
                    None => self
                        .core
                        .store()
                        .subscriber(user)
                        .await?
                        .and_then(|s| s.contract_account)
                        .ok_or_else(|| {
                            invalid(
                                "payer_account",
                                "the user has no stored account (no contract)",
                            )
                        })?,
                };
                let payer_row = self.account_of(payer, "payer_account").await?;
                if payer_row.owner != user {
                    return Err(invalid("payer_account", "is not an account of this user"));
                }
                check_money(*amount, payer_row.currency, merchant.currency)?;
                let shown = match terminal {
                    Some(t) => format!("{description} (terminal {t})"),
                    None => description.clone(),
                };
                let memo = format!("payment to {}: {description}", merchant.owner);
                if !self.secured(user, &merchant.owner, *amount).await? {
                    return Ok(Planned::Normal(Command::Transfer {
                        debit_account: payer,
                        credit_account: *merchant_account,
                        amount_minor: amount.minor,
                        currency: amount.currency,
                        timeout_s: None,
                        memo,
                    }));
                }
                money = Some(Money::Hold {
                    debit_account: payer,
                    credit_account: *merchant_account,
                    amount: *amount,
                    memo,
                    timeout_s: self.settings.policy.ttl_s + self.settings.hold_grace_s,
                    pending: None,
                });
                Purpose::Transaction(Transaction {
                    amount: *amount,
                    payer_account: Some(payer),
                    payee: merchant.owner.clone(),
                    payee_account: Some(*merchant_account),
                    description: shown,
                })
            }
            AppRequest::Trustee {
                merchant_account,
                amount,
                description,
            } => {
                let merchant = self
                    .merchant_account(
                        by,
                        *merchant_account,
                        "trustee payments are opened by the merchant being paid",
                    )
                    .await?;
                text_field("description", description, 300)?;
                check_money(*amount, merchant.currency, merchant.currency)?;
                self.trustee_settlement_account(amount.currency).await?;
                // Held on the user's receivable now: beyond the operator's limit the ledger
                // refuses it when the session commits (`trustee_limit_reached`).
                money = Some(Money::Hold {
                    debit_account: self.trustee_receivable(user, *amount).await?,
                    credit_account: self.trustee_payable(amount.currency).await?,
                    amount: *amount,
                    memo: format!(
                        "trustee payment of {user} to {}: {description}",
                        merchant.owner
                    ),
                    timeout_s: self.settings.policy.ttl_s + self.settings.hold_grace_s,
                    pending: None,
                });
                Purpose::Transaction(Transaction {
                    amount: *amount,
                    payer_account: None,
                    payee: merchant.owner,
                    payee_account: Some(*merchant_account),
                    description: format!("{description} (billed by the operator)"),
                })
            }
            AppRequest::MailSend {
                recipient,
                subject,
                body,
            } => {
                if !is_self(by) {
                    return Err(ServiceError::Forbidden("only the sender sends its mail"));
                }
                check_name("recipient", recipient)?;
                text_field("subject", subject, 200)?;
                text_field("body", body, super::BODY_LEN_MAX)?;
                // The recipient must be reachable, or the mail would wait unannounced.
                self.channel_b(recipient, None).await?;
                Purpose::Message(Certified {
                    title: format!("Registered mail to {recipient}: {subject}"),
                    sha256: hex::encode(sha256(body.as_bytes())),
                })
            }
            AppRequest::MailRetrieve { mail_id } => {
                if !is_self(by) {
                    return Err(ServiceError::Forbidden(
                        "only the recipient retrieves its mail",
                    ));
                }
                let mail = self
                    .core
                    .store()
                    .mail(*mail_id)
                    .await?
                    .filter(|m| m.recipient == user && m.kind == "registered")
                    .ok_or(ServiceError::NotFound {
                        what: Missing::Mail,
                        id: mail_id.to_string(),
                    })?;
                Purpose::Message(Certified {
                    title: format!(
                        "Retrieve registered mail from {}: {}",
                        mail.sender, mail.subject
                    ),
                    sha256: hex::encode(sha256(mail.body.as_bytes())),
                })
            }
        };
        let (channel, address) = match &req.certificate {
            Some(pem) => self.address_from_certificate(user, pem)?,
            None => self.channel_b(user, req.channel.as_deref()).await?,
        };
        Ok(Planned::Secured(Box::new(OpenPlan {
            user: user.to_string(),
            opened_by: by.map_or_else(|| "web".to_string(), |b| b.owner.clone()),
            application: req.app.name(),
            purpose,
            payload,
            money,
            channel,
            address,
            client_key,
            extra: Vec::new(),
            client: None,
            capped: false,
        })))
    }

    /// The merchant's account being paid: the caller must be that merchant (or the operator).
    async fn merchant_account(
        &self,
        by: Option<&Principal>,
        id: Id,
        refusal: &'static str,
    ) -> Result<tally_ledger::Account> {
        let by = by.ok_or(ServiceError::Unauthorized)?;
        let merchant = self.account_of(id, "merchant_account").await?;
        if !by.is_admin() && (by.role != Role::Merchant || merchant.owner != by.owner) {
            return Err(ServiceError::Forbidden(refusal));
        }
        Ok(merchant)
    }

    async fn account_of(&self, id: Id, field: &'static str) -> Result<tally_ledger::Account> {
        self.core
            .store()
            .account(id)
            .await?
            .ok_or_else(|| invalid(field, "no such account"))
    }

    /// True when `amount` from `payer` to `payee` in a session the user chose needs the
    /// code: above the payee's own threshold for the currency, else the operator's, else
    /// always; and above the payer's own threshold whatever the payee's says.
    pub async fn secured(&self, payer: &str, payee: &str, amount: Amount) -> Result<bool> {
        let code = amount.currency.code();
        let store = self.core.store();
        if store.rule(payee, code).await?.is_none() && store.rule("operator", code).await?.is_none()
        {
            return Ok(amount.minor > 0);
        }
        self.secured_by_rules(payer, payee, amount).await
    }

    /// The opening step: the machine starts the session (the code message, the payment hold)
    /// and the session row commits with it, under the per-address quota.
    pub(crate) async fn open_with(&self, plan: OpenPlan) -> Result<(SessionView, bool)> {
        // A trustee payment's hold is on the user's receivable, bounded by the trustee limit.
        let trustee_hold = match (&plan.payload.app, &plan.money) {
            (AppRequest::Trustee { .. }, Some(Money::Hold { debit_account, .. })) => {
                Some(*debit_account)
            }
            _ => None,
        };
        let mut number = [0_u8; 16];
        getrandom_fill(&mut number)?;
        let now = self.core.now();
        let (session, effects) = Session::start(
            Opening {
                user: plan.user.clone(),
                purpose: plan.purpose,
                policy: self.settings.policy,
                number,
                money: plan.money,
                channel: plan.channel.clone(),
                address: plan.address.clone(),
            },
            now,
            self.key(),
        )
        .map_err(oob)?;
        let row = SessionRow {
            id: number,
            user_id: plan.user.clone(),
            opened_by: plan.opened_by,
            application: plan.application.into(),
            state: session.state,
            attempts: 0,
            session: serde_json::to_string(&session).map_err(corrupt)?,
            payload: serde_json::to_string(&plan.payload).map_err(corrupt)?,
            result: None,
            channel: plan.channel.clone(),
            address: plan.address.clone(),
            client_key: plan.client_key.clone(),
            created_at: now,
            expires_at: session.expires_at,
            updated_at: now,
            wake_at: session.poll_timeout(),
        };
        let effects = effects.renamed(
            "oob_session_opened",
            serde_json::json!({ "application": plan.application }),
        );
        let since = now.plus_seconds(-self.settings.quota_window_s);
        let mut rows: Vec<Attachment> = plan.extra;
        rows.extend(insert_session(&row, since, self.settings.address_quota));
        rows.extend(record_send(
            &Send {
                session: number,
                user: plan.user.clone(),
                client_ip: plan.client.map(client_block),
                capped: plan.capped,
                at: now,
            },
            &SendCaps {
                user_per_day: self.settings.user_daily_quota,
                day_since: now.plus_seconds(-86_400),
                per_client: self.settings.client_quota,
                per_node: self.settings.node_quota,
                window_since: since,
            },
        ));
        let outcome = self
            .core
            .commit(open_key(&row), effects, rows)
            .await
            .map_err(|e| match e {
                ServiceError::Conflict(Conflict::Limit(what)) => {
                    metrics::counter!(SENDS_REFUSED, "reason" => what).increment(1);
                    ServiceError::RateLimited(what)
                }
                ServiceError::Conflict(Conflict::Taken(_)) => {
                    invalid("address", "already registered to another user")
                }
                ServiceError::Ledger(LedgerError::ExceedsCredits {
                    account,
                    currency,
                    available_minor,
                    ..
                }) if Some(account) == trustee_hold => ServiceError::TrusteeLimit {
                    currency,
                    available_minor,
                },
                other => other,
            })?;
        if outcome.replayed {
            let row = self
                .core
                .store()
                .oob_session_by_key(plan.client_key.as_deref().unwrap_or_default())
                .await?
                .ok_or(ServiceError::IdempotencyKeyReused)?;
            return Ok((self.present(&row).await?, true));
        }
        // Known without reading back: a dev message is delivered when it commits, others wait
        // for the worker; a payment's hold is the opening command's transfer.
        let delivery = if row.channel == "dev" {
            "sent"
        } else {
            "pending"
        };
        let hold = outcome.transfer().map(|t| t.id);
        Ok((
            super::view(&row, super::Delivery(delivery.into(), None), hold)?,
            false,
        ))
    }
}

/// The client address a cap counts: an IPv4 address, or an IPv6 address's /64 (one client
/// holds a whole /64).
fn client_block(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

fn purpose_simple(app: &AppRequest) -> Result<Purpose> {
    Ok(match app {
        AppRequest::Declaration { title, form } => {
            text_field("title", title, 200)?;
            text_field("form", form, super::BODY_LEN_MAX)?;
            Purpose::Message(Certified {
                title: format!("Declaration: {title}"),
                sha256: hex::encode(sha256(form.as_bytes())),
            })
        }
        AppRequest::Offers => Purpose::Message(Certified {
            title: "Open your offers mailbox".into(),
            sha256: hex::encode(sha256(b"offers")),
        }),
        _ => Purpose::Login,
    })
}
