//! The applications of out-of-band authentication (SPEC A5): what a session is opened for,
//! and what runs, in the verifying step, once its code came back right. The machine decides
//! the money (the hold posted, the transfer made); an application adds its rows (a token, a
//! register line, a certificate, a mail) and names the step's journal record.

use super::directory::mail_view;
use super::{Oob, Payload};
use crate::Result;
use crate::access::corrupt;
use crate::identity::{getrandom_fill, setup};
use tally_kernel::crypto::canonical::SignedRecord;
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::{Id, Secret, Timestamp};
use tally_proto::effects::{Effects, Outgoing};
use tally_proto::oob::{Purpose, Session};
use tally_store::Attachment;
use tally_store::oob::{
    CertificateRow, Mail, RegisterEntry, SessionRow, TokenRow, insert_certificate, insert_mail,
    insert_register, insert_token, mark_retrieved, verify_address,
};
use tally_wire::oob::{AppRequest, ResultMail, SessionResult};

/// A result carrying only the session's certificate.
fn certified(certificate: SignedRecord) -> SessionResult {
    SessionResult {
        certificate: Some(certificate),
        ..SessionResult::default()
    }
}

/// What an application adds to the verifying step.
pub(crate) struct AppEffect {
    /// The machine's effects, with the application's record name and messages.
    pub(crate) effects: Effects,
    /// Rows written with the step.
    pub(crate) rows: Vec<Attachment>,
    /// What verification produced (stored with the session, shown to channel A).
    pub(crate) result: SessionResult,
    /// For a login: the access token (returned once, stored only as a hash).
    pub(crate) token: Option<Secret<String>>,
}

impl Oob {
    /// The application's part of the verifying step of `row`, whose machine verified with
    /// `effects`.
    pub(crate) async fn application(
        &self,
        row: &SessionRow,
        session: &Session,
        payload: &Payload,
        effects: Effects,
        hold: Option<Id>,
        now: Timestamp,
    ) -> Result<AppEffect> {
        let hex_number = session.number_hex();
        let user = row.user_id.as_str();
        let duration_s = (now.as_micros() - row.created_at.as_micros()) / 1_000_000;
        let transaction = match &session.purpose {
            Purpose::Transaction(t) => Some(t.clone()),
            Purpose::Login | Purpose::Message(_) => None,
        };
        let mut rows = Vec::new();
        // A register line for every secured transaction and session.
        let register = |kind: &str| -> Result<Attachment> {
            let t = transaction.as_ref();
            Ok(insert_register(&RegisterEntry {
                id: Id::new(),
                user_id: user.to_string(),
                session: hex_number.clone(),
                kind: kind.into(),
                amount_minor: t.map_or(0, |t| t.amount.minor),
                currency: t.map_or(String::new(), |t| t.amount.currency.code().into()),
                duration_s,
                payee: t.map_or(String::new(), |t| t.payee.clone()),
                payee_account: t.and_then(|t| t.payee_account),
                description: t.map_or_else(|| row.application.clone(), |t| t.description.clone()),
                created_at: now,
                settled_at: None,
                settlement_id: None,
            })?)
        };
        let certificate = |kind: &str,
                           owner: &str,
                           what: serde_json::Value|
         -> Result<(Attachment, SignedRecord)> {
            let body = serde_json::json!({
                "kind": kind,
                "session": hex_number,
                "user": user,
                "application": row.application,
                "purpose": session.purpose,
                "opened_at": row.created_at,
                "verified_at": now,
                "what": what,
            });
            let signed = SignedRecord::sign(super::CERTIFICATE_DOMAIN, &body, self.core.node_key())
                .map_err(|e| setup(e.to_string()))?;
            let json = serde_json::to_value(&signed).map_err(corrupt)?;
            let row = CertificateRow {
                id: Id::new(),
                session: hex_number.clone(),
                user_id: owner.to_string(),
                kind: kind.into(),
                body: json.clone(),
                created_at: now,
            };
            Ok((insert_certificate(&row)?, signed))
        };
        let done = |effects: Effects, rows, result| AppEffect {
            effects,
            rows,
            result,
            token: None,
        };
        if row.application == super::guest::GUEST_LOGIN
            && let Some(id) = payload.address_id
        {
            // A sign-in by an address nobody had verified: the code proved it, so the address
            // is this user's now (even if another user had registered it and never proved it).
            rows.push(tally_store::oob::claim_address(id, user, now));
        } else if row.application == "verify_address" {
            let id = payload
                .address_id
                .ok_or_else(|| corrupt("address session without address"))?;
            rows.push(verify_address(id, now));
            let effects = effects.renamed(
                "address_verified",
                serde_json::json!({ "session": hex_number, "address": id }),
            );
            return Ok(done(
                effects,
                rows,
                SessionResult {
                    address_verified: Some(id),
                    ..SessionResult::default()
                },
            ));
        }
        let data = serde_json::json!({ "session": hex_number, "user": user, "application": row.application });
        Ok(match &payload.app {
            AppRequest::Login => {
                let mut raw = [0_u8; 32];
                getrandom_fill(&mut raw)?;
                let token = Secret::new(format!(
                    "{}{}",
                    super::SESSION_TOKEN_PREFIX,
                    hex::encode(raw)
                ));
                raw.fill(0);
                let expires_at = now.plus_seconds(self.settings.token_ttl_s);
                rows.push(insert_token(&TokenRow {
                    token_hash: sha256(token.expose().as_bytes()),
                    user_id: user.into(),
                    session_id: session.number,
                    expires_at,
                }));
                rows.push(register("login")?);
                AppEffect {
                    effects: effects.renamed("oob_login", data),
                    rows,
                    result: SessionResult {
                        access_token_expires_at: Some(expires_at),
                        ..SessionResult::default()
                    },
                    token: Some(token),
                }
            }
            AppRequest::Confirm { .. } => {
                // No register line: the payment it confirms may still be refused by the
                // ledger; the payment's own transfer is the record of it.
                let (cert, json) = certificate("confirm", user, serde_json::json!({}))?;
                rows.push(cert);
                done(
                    effects.renamed("oob_confirmed", data),
                    rows,
                    certified(json),
                )
            }
            AppRequest::Transfer { .. } | AppRequest::Bet { .. } => {
                let kind = payload.app.name();
                rows.push(register(kind)?);
                let (cert, json) = certificate(kind, user, serde_json::json!({}))?;
                rows.push(cert);
                done(effects, rows, certified(json))
            }
            AppRequest::Payment { .. } => {
                let hold = hold.ok_or_else(|| corrupt("payment session without hold"))?;
                rows.push(register("payment")?);
                let (cert, json) =
                    certificate("payment", user, serde_json::json!({ "hold": hold }))?;
                rows.push(cert);
                done(
                    effects,
                    rows,
                    SessionResult {
                        hold: Some(hold),
                        ..certified(json)
                    },
                )
            }
            AppRequest::Trustee { .. } => {
                rows.push(register("trustee")?);
                let (cert, json) = certificate("trustee", user, serde_json::json!({}))?;
                rows.push(cert);
                done(effects.renamed("trustee_debt", data), rows, certified(json))
            }
            AppRequest::MailSend {
                recipient,
                subject,
                body,
            } => {
                let mail = Mail {
                    id: Id::new(),
                    kind: "registered".into(),
                    sender: user.into(),
                    recipient: recipient.clone(),
                    subject: subject.clone(),
                    body: body.clone(),
                    deposited_at: now,
                    retrieved_at: None,
                };
                rows.push(insert_mail(&mail));
                let (cert, json) = certificate(
                    "mail_deposit",
                    user,
                    serde_json::json!({ "mail": mail.id, "recipient": recipient, "subject": subject }),
                )?;
                rows.push(cert);
                let mut effects = effects.renamed(
                    "mail_deposited",
                    serde_json::json!({ "session": hex_number, "mail": mail.id, "sender": user, "recipient": recipient }),
                );
                if let Ok((channel, address)) = self.channel_b(recipient, None).await {
                    effects = effects.send(Outgoing {
                        dedup_key: format!(":mail:{}:alert", mail.id),
                        channel,
                        address,
                        subject: format!("Registered mail from {user}"),
                        body: format!(
                            "{user} sent you registered mail: {subject}\nMail id: {}\nRetrieve it with `tally mail retrieve --user {recipient} {}`; you will confirm with a code.",
                            mail.id, mail.id
                        ),
                        secret: None,
                        data: serde_json::json!({ "mail": mail.id, "sender": user }),
                    });
                }
                done(
                    effects,
                    rows,
                    SessionResult {
                        mail: Some(ResultMail::Deposited(mail.id)),
                        ..certified(json)
                    },
                )
            }
            AppRequest::MailRetrieve { mail_id } => {
                let mail = self
                    .core
                    .store()
                    .mail(*mail_id)
                    .await?
                    .ok_or_else(|| corrupt("mail vanished"))?;
                rows.push(mark_retrieved(mail.id, now));
                let what = serde_json::json!({ "mail": mail.id, "sender": mail.sender, "subject": mail.subject });
                let (cert, json) = certificate("mail_retrieval", user, what.clone())?;
                rows.push(cert);
                // The sender keeps a copy of the retrieval certificate too.
                let (cert_sender, _) = certificate("mail_retrieval", &mail.sender, what)?;
                rows.push(cert_sender);
                let mut effects = effects.renamed(
                    "mail_retrieved",
                    serde_json::json!({ "session": hex_number, "mail": mail.id }),
                );
                if let Ok((channel, address)) = self.channel_b(&mail.sender, None).await {
                    effects = effects.send(Outgoing {
                        dedup_key: format!(":mail:{}:retrieved", mail.id),
                        channel,
                        address,
                        subject: format!("{user} retrieved your registered mail"),
                        body: format!(
                            "{user} retrieved your registered mail \"{}\" at {}.",
                            mail.subject,
                            now.to_rfc3339()
                        ),
                        secret: None,
                        data: serde_json::json!({ "mail": mail.id, "recipient": user }),
                    });
                }
                done(
                    effects,
                    rows,
                    SessionResult {
                        mail: Some(ResultMail::Retrieved(mail_view(mail))),
                        ..certified(json)
                    },
                )
            }
            AppRequest::Declaration { title, form } => {
                let (cert, json) = certificate(
                    "declaration_receipt",
                    user,
                    serde_json::json!({ "title": title, "form_sha256": hex::encode(sha256(form.as_bytes())) }),
                )?;
                rows.push(cert);
                done(effects.renamed("declaration", data), rows, certified(json))
            }
            AppRequest::Offers => {
                let offers = self.core.store().unread_offers(user).await?;
                for o in &offers {
                    rows.push(mark_retrieved(o.id, now));
                }
                rows.push(register("offers")?);
                done(
                    effects.renamed("offers_opened", data),
                    rows,
                    SessionResult {
                        offers: Some(offers.into_iter().map(mail_view).collect()),
                        ..SessionResult::default()
                    },
                )
            }
        })
    }
}
