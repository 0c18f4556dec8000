//! The directory and what hangs off it: subscribers and their second-channel addresses
//! (verified by a code of their own), certificates naming an address, threshold rules, the
//! mailbox (registered mail, offers) and statements from the billing registers.

use super::open::OpenPlan;
use super::{Oob, Payload};
use crate::Missing;
use crate::access::{
    address_uri, channel_kind, check_address, check_name, corrupt, invalid, require_admin,
    text_field, uri_address,
};
use crate::identity::setup;
use crate::{Principal, Result, Role, ServiceError};
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::{Amount, Id, Secret, Timestamp};
use tally_proto::effects::Effects;
use tally_proto::oob::{Certified, Purpose};
use tally_store::oob::{
    Address, Mail, RegisterEntry, insert_address, insert_mail, upsert_payer_rule, upsert_rule,
    upsert_subscriber,
};
use tally_store::{Attachment, Outcome};
use tally_wire::oob::{
    AddressView, AppRequest, CertificateView, MailView, RegisterLine, RuleSide, SessionView,
    Statement,
};

impl Oob {
    /// Adds a subscriber (or sets its stored account for payments with contract). The
    /// operator may add anyone; a customer or merchant only itself, with its own account.
    pub async fn subscriber_upsert(
        &self,
        by: &Principal,
        user: &str,
        contract_account: Option<Id>,
    ) -> Result<()> {
        check_name("user", user)?;
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden(
                "you can only manage your own subscription",
            ));
        }
        if let Some(account) = contract_account {
            let a = self.core.store().account(account).await?;
            if a.is_none_or(|a| a.owner != user) {
                return Err(invalid(
                    "contract_account",
                    "must be an account of the user",
                ));
            }
        }
        let now = self.core.now();
        self.record(
            format!(":subscriber:{user}:{}", Id::new()),
            "subscriber_updated",
            serde_json::json!({ "user": user, "contract_account": contract_account }),
            vec![upsert_subscriber(user, contract_account, now)],
        )
        .await?;
        Ok(())
    }

    /// Adds a second-channel address for `user` and sends it a code that verifies it.
    pub async fn address_add(
        &self,
        by: &Principal,
        user: &str,
        channel: &str,
        address: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<SessionView> {
        check_name("user", user)?;
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden(
                "you can only add your own addresses",
            ));
        }
        channel_kind(channel, self.core.is_dev())?;
        text_field("address", address, 256)?;
        if address.contains('\n') {
            return Err(invalid("address", "one line"));
        }
        // A code sent to a plain-http webhook travels in clear.
        if channel != "dev" {
            check_address(channel, address)?;
        }
        let existing = self.core.store().address(channel, address).await?;
        let row = match existing {
            Some(a) if a.user_id != user => {
                return Err(invalid("address", "already registered to another user"));
            }
            Some(a) if a.verified_at.is_some() => {
                return Err(invalid("address", "already verified"));
            }
            Some(a) => a,
            None => Address {
                id: Id::new(),
                user_id: user.to_string(),
                channel: channel.to_string(),
                address: address.to_string(),
                verified_at: None,
                created_at: self.core.now(),
            },
        };
        let purpose = Purpose::Message(Certified {
            title: format!("Add this {channel} address to Tally user {user}"),
            sha256: hex::encode(sha256(format!("{channel}:{address}").as_bytes())),
        });
        let payload = Payload {
            app: AppRequest::Login,
            address_id: Some(row.id),
        };
        let mut extra: Vec<Attachment> = Vec::new();
        extra.extend(insert_address(&row));
        extra.push(upsert_subscriber(user, None, self.core.now()));
        let (view, _) = self
            .open_with(OpenPlan {
                user: user.to_string(),
                opened_by: by.owner.clone(),
                application: "verify_address",
                purpose,
                payload,
                channel: row.channel.clone(),
                address: row.address.clone(),
                client_key: None,
                money: None,
                extra,
                client,
                // Asked for with an API key: the user's daily cap and the address quota bound
                // it; only anonymous sign-ins count against the client and node caps.
                capped: false,
            })
            .await?;
        Ok(view)
    }

    /// A user's addresses.
    pub async fn addresses(&self, by: &Principal, user: &str) -> Result<Vec<AddressView>> {
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden(
                "you can only see your own addresses",
            ));
        }
        Ok(self
            .core
            .store()
            .addresses_of(user)
            .await?
            .into_iter()
            .map(|a| AddressView {
                id: a.id,
                user_id: a.user_id,
                channel: a.channel,
                address: a.address,
                verified_at: a.verified_at,
                created_at: a.created_at,
            })
            .collect())
    }

    /// Issues a certificate for `user` (operator only) whose extension names its channel B
    /// address, so sessions can reach the user without the directory. Returns (cert PEM,
    /// key PEM).
    pub fn issue_address_certificate(
        &self,
        by: &Principal,
        user: &str,
        channel: &str,
        address: &str,
        days: u32,
    ) -> Result<(String, Secret<String>)> {
        require_admin(by)?;
        check_name("user", user)?;
        channel_kind(channel, self.core.is_dev())?;
        text_field("address", address, 256)?;
        let uri = address_uri(channel, address)?;
        let key = tally_kernel::crypto::SigningKey::generate();
        let now = self.core.now();
        let not_after = now.plus_seconds(i64::from(days.clamp(1, 3650)) * 86_400);
        let not_after = not_after.min(self.core.ca().certificate().not_after());
        let cert = self
            .core
            .ca()
            .issue_with_uris(
                user,
                &key.verifying_key(),
                "customer",
                now,
                not_after,
                &[&uri],
            )
            .map_err(|e| invalid("certificate", e.to_string()))?;
        Ok((cert.to_pem(), key.to_pkcs8_pem().map_err(setup)?))
    }

    pub(crate) fn address_from_certificate(
        &self,
        user: &str,
        pem: &str,
    ) -> Result<(String, String)> {
        let bad = |why: &str| invalid("certificate", why.to_string());
        let cert = tally_kernel::crypto::Certificate::from_pem(pem)
            .map_err(|_| bad("not a PEM certificate"))?;
        cert.verify_issued_by(self.core.ca().certificate(), self.core.now())
            .map_err(|e| bad(&format!("not valid for this node: {e}")))?;
        if cert.subject_common_name().as_deref() != Some(user) {
            return Err(bad("issued to another user"));
        }
        let (channel, address) = cert
            .uri_names()
            .iter()
            .find_map(|u| uri_address(u))
            .ok_or_else(|| {
                bad("names no second-channel address (mailto:, tel:, https:, tally-dev:)")
            })?;
        let (channel, address) = (channel.as_str(), address.as_str());
        channel_kind(channel, self.core.is_dev())?;
        Ok((channel.to_string(), address.to_string()))
    }

    pub(crate) async fn channel_b(
        &self,
        user: &str,
        channel: Option<&str>,
    ) -> Result<(String, String)> {
        let addresses = self.core.store().addresses_of(user).await?;
        if addresses.is_empty() && self.core.store().subscriber(user).await?.is_none() {
            return Err(ServiceError::NotFound {
                what: Missing::User,
                id: user.to_string(),
            });
        }
        addresses
            .into_iter()
            .filter(|a| a.verified_at.is_some())
            .find(|a| channel.is_none_or(|c| c == a.channel))
            .map(|a| (a.channel, a.address))
            .ok_or(ServiceError::NoChannel)
    }

    /// Sets a threshold of `owner` (a user itself, or the operator for anyone): on the payee
    /// side, payments to `owner` above it need confirmation; on the payer side, payments by
    /// `owner`.
    pub async fn set_rule(
        &self,
        by: &Principal,
        owner: &str,
        amount: Amount,
        side: RuleSide,
    ) -> Result<()> {
        check_name("owner", owner)?;
        if !by.is_admin() && by.owner != owner {
            return Err(ServiceError::Forbidden(
                "you can only set your own threshold",
            ));
        }
        if amount.minor < 0 {
            return Err(invalid("secured_above", "must not be negative"));
        }
        // A stolen key or sign-in must not switch confirmations off: a payer loosens its own
        // threshold only through the operator (tightening is always allowed).
        if side == RuleSide::Payer
            && !by.is_admin()
            && let Some(current) = self
                .core
                .store()
                .payer_rule(owner, amount.currency.code())
                .await?
            && amount.minor > current
        {
            return Err(ServiceError::Forbidden(
                "raising your payer threshold needs the operator; you may only lower it",
            ));
        }
        let now = self.core.now();
        let (kind, row) = match side {
            RuleSide::Payee => (
                "oob_rule_set",
                upsert_rule(owner, amount.currency.code(), amount.minor, now),
            ),
            RuleSide::Payer => (
                "oob_payer_rule_set",
                upsert_payer_rule(owner, amount.currency.code(), amount.minor, now),
            ),
        };
        self.record(
            format!(":oob_rule:{owner}:{}", Id::new()),
            kind,
            serde_json::json!({ "owner": owner, "currency": amount.currency.code(), "secured_above_minor": amount.minor }),
            vec![row],
        )
        .await?;
        Ok(())
    }

    /// A verified address for `user`, without a code: the demo data set of a dev node only
    /// (whose codes go to the dev inbox anyway). Nothing happens if the address is there.
    pub(crate) async fn seed_verified_address(
        &self,
        user: &str,
        channel: &str,
        address: &str,
    ) -> Result<()> {
        if !self.core.is_dev() {
            return Err(ServiceError::Disabled("seeding needs --dev"));
        }
        if self.core.store().address(channel, address).await?.is_some() {
            return Ok(());
        }
        let now = self.core.now();
        let row = Address {
            id: Id::new(),
            user_id: user.to_string(),
            channel: channel.to_string(),
            address: address.to_string(),
            verified_at: Some(now),
            created_at: now,
        };
        let mut rows: Vec<Attachment> = insert_address(&row).into();
        rows.push(upsert_subscriber(user, None, now));
        self.record(
            format!(":demo-address:{channel}:{address}"),
            "address_verified",
            serde_json::json!({ "user": user, "address": row.id, "demo": true }),
            rows,
        )
        .await?;
        Ok(())
    }

    async fn record(
        &self,
        key: String,
        kind: &str,
        data: serde_json::Value,
        attachments: Vec<Attachment>,
    ) -> Result<Outcome> {
        self.core
            .commit(key, Effects::record(kind, data), attachments)
            .await
    }

    /// A user's certificates (the user or the operator).
    pub async fn certificates(&self, by: &Principal, user: &str) -> Result<Vec<CertificateView>> {
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden(
                "you can only list your own certificates",
            ));
        }
        self.core
            .store()
            .certificates_of(user, 200)
            .await?
            .into_iter()
            .map(|c| {
                Ok(CertificateView {
                    id: c.id,
                    session: c.session,
                    user_id: c.user_id,
                    kind: c.kind,
                    body: serde_json::from_value(c.body).map_err(corrupt)?,
                    created_at: c.created_at,
                })
            })
            .collect()
    }

    /// Mail for or from a user; bodies of registered mail not yet retrieved are withheld.
    pub async fn mailbox(&self, by: &Principal, user: &str) -> Result<Vec<MailView>> {
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden("you can only list your own mail"));
        }
        let mut mail = self.core.store().mail_of(user, 200).await?;
        for m in &mut mail {
            if m.retrieved_at.is_none() || m.recipient != user {
                m.body.clear();
            }
        }
        Ok(mail.into_iter().map(mail_view).collect())
    }

    /// A merchant leaves a personalised offer in a user's mailbox; the user reads it after
    /// authenticating (application `offers`).
    pub async fn deposit_offer(
        &self,
        by: &Principal,
        recipient: &str,
        subject: &str,
        body: &str,
    ) -> Result<Id> {
        if !(by.is_admin() || by.role == Role::Merchant) {
            return Err(ServiceError::Forbidden("offers come from merchants"));
        }
        check_name("recipient", recipient)?;
        text_field("subject", subject, 200)?;
        text_field("body", body, super::BODY_LEN_MAX)?;
        let mail = Mail {
            id: Id::new(),
            kind: "offer".into(),
            sender: by.owner.clone(),
            recipient: recipient.into(),
            subject: subject.into(),
            body: body.into(),
            deposited_at: self.core.now(),
            retrieved_at: None,
        };
        self.record(
            format!(":offer:{}", mail.id),
            "offer_deposited",
            serde_json::json!({ "mail": mail.id, "sender": mail.sender, "recipient": recipient }),
            vec![insert_mail(&mail)],
        )
        .await?;
        Ok(mail.id)
    }

    /// A user's statement over `[from, to)` (the user or the operator).
    pub async fn statement(
        &self,
        by: &Principal,
        user: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Statement> {
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden(
                "you can only read your own statement",
            ));
        }
        let entries = self.core.store().register_of(user, from, to).await?;
        let mut totals = std::collections::BTreeMap::new();
        let mut duration_s = 0;
        for e in &entries {
            duration_s += e.duration_s;
            if !e.currency.is_empty() {
                *totals.entry(e.currency.clone()).or_insert(0_i64) += e.amount_minor;
            }
        }
        Ok(Statement {
            user: user.into(),
            from,
            to,
            entries: entries.into_iter().map(register_line).collect(),
            totals,
            duration_s,
        })
    }
}

/// A register line as shown.
fn register_line(e: RegisterEntry) -> RegisterLine {
    RegisterLine {
        id: e.id,
        user_id: e.user_id,
        session: e.session,
        kind: e.kind,
        amount_minor: e.amount_minor,
        currency: e.currency,
        duration_s: e.duration_s,
        payee: e.payee,
        payee_account: e.payee_account,
        description: e.description,
        created_at: e.created_at,
        settled_at: e.settled_at,
        settlement_id: e.settlement_id,
    }
}

/// A mail as shown.
pub(crate) fn mail_view(m: Mail) -> MailView {
    MailView {
        id: m.id,
        kind: m.kind,
        sender: m.sender,
        recipient: m.recipient,
        subject: m.subject,
        body: m.body,
        deposited_at: m.deposited_at,
        retrieved_at: m.retrieved_at,
    }
}
