//! Out-of-band authentication (WO 99/23617, SPEC A1–A7) as node operations.
//!
//! A session is opened on channel A (the API, the CLI or the web page) for a user and an
//! application; the protocol core ([`tally_proto::oob`]) makes the code, bound to the session
//! number, the time and what is being authorised; the code goes out on channel B through the
//! outbox with the transaction in clear; the user types it back on channel A and the
//! application's effect runs.
//!
//! Decisions:
//! * Every open, wrong code, lock and success is one ledger command (a `Record`, or the money
//!   movement itself) whose journal entry commits with the session row under a guard on the
//!   state the decision was made from. So "code verified" and "hold posted" are one
//!   transaction, and with several nodes on one database two verifications of one session
//!   cannot both succeed: the database decides, the loser re-reads and is refused.
//! * Payments place the "bank authorisation" hold when the session opens, with a timeout of
//!   the code's lifetime plus a grace period, so an abandoned session releases the money
//!   through the node's expiry sweeper with no extra state.
//! * The code key lives in the data directory (`oob.key`), never in the database, so a
//!   database leak leaks no live codes; the database keeps its fingerprint, so a node started
//!   with another key refuses to run instead of sending codes nobody can verify.
//! * Every node-signed certificate is a [`SignedRecord`] under the node's Ed25519 key.

use crate::node::{NodeFiles, check_name, getrandom_fill, namespaced, require_admin, setup};
use crate::{Node, Principal, Result, Role, ServiceError};
use serde::{Deserialize, Serialize};
use tally_kernel::crypto::canonical::SignedRecord;
use tally_kernel::crypto::kdf::sha256;
use tally_kernel::{Amount, Id, Secret, Timestamp};
use tally_ledger::{Command, Request};
use tally_proto::oob::{Certified, OobError, Policy, Purpose, Session, State, Transaction};
use tally_store::oob::{
    Address, CertificateRow, Mail, RegisterEntry, SessionRow, TokenRow, insert_address,
    insert_certificate, insert_mail, insert_register, insert_session, insert_token, mark_retrieved,
    settle_register, update_session, upsert_rule, upsert_subscriber, verify_address,
};
use tally_store::outbox::NewMessage;
use tally_store::{Attachment, Outcome, StoreError};

/// Domain of the certificates of verified sessions.
pub const CERTIFICATE_DOMAIN: &str = "tally/oob-certificate/v1";
/// Most bytes of a registered mail, declaration or offer body.
pub const BODY_LEN_MAX: usize = 16 * 1024;
/// Stands for the code in a stored message: the code is put in at delivery (and when the dev
/// inbox is read), recomputed from the session and the key, so no live code is ever stored.
pub const CODE_PLACEHOLDER: &str = "{{code}}";
/// How often a verification is re-decided after losing a race to another request.
const CONFLICT_RETRIES: usize = 8;

/// How out-of-band authentication behaves on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OobSettings {
    /// Code length, lifetime and attempts.
    pub policy: Policy,
    /// Lifetime of a login's access token, seconds.
    pub token_ttl_s: i64,
    /// Most sessions one address may receive per `quota_window_s`.
    pub address_quota: i64,
    /// The window of `address_quota`, seconds.
    pub quota_window_s: i64,
    /// Operator's fee on trustee payments, basis points (150 = 1.5 %).
    pub trustee_fee_bps: i64,
    /// Extra seconds a payment hold lives after its code expired.
    pub hold_grace_s: i64,
}

impl Default for OobSettings {
    fn default() -> Self {
        OobSettings {
            policy: Policy::default(),
            token_ttl_s: 900,
            address_quota: 20,
            quota_window_s: 600,
            trustee_fee_bps: 150,
            hold_grace_s: 120,
        }
    }
}

/// The node's code key and settings.
pub(crate) struct OobState {
    key: Secret<Vec<u8>>,
    settings: OobSettings,
}

impl OobState {
    /// Loads `oob.key` (creating it on first start) and checks it against the database.
    pub(crate) async fn load(
        files: &NodeFiles,
        store: &tally_store::Store,
        settings: OobSettings,
    ) -> Result<OobState> {
        let key = crate::node::load_node_secret(files, store, "oob.key", "oob_key_id").await?;
        Ok(OobState { key, settings })
    }
}

/// What a session is opened for, as requested. Amounts are `"12.50 EUR"` strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "application", rename_all = "snake_case", deny_unknown_fields)]
pub enum AppRequest {
    /// Access control: a short-lived access token on success.
    Login,
    /// Message certification of an inter-account transfer (or an order): posts on success.
    Transfer {
        /// The user's account.
        debit_account: Id,
        /// The beneficiary.
        credit_account: Id,
        /// How much.
        #[serde(with = "amount_text")]
        amount: Amount,
        /// What for (shown on channel B).
        #[serde(default)]
        memo: String,
    },
    /// A bet: a certified message with a stake paid to the bookmaker on success.
    Bet {
        /// The user's account.
        debit_account: Id,
        /// The bookmaker's account.
        credit_account: Id,
        /// The stake.
        #[serde(with = "amount_text")]
        stake: Amount,
        /// The bet as the user sees it.
        bet: String,
    },
    /// A merchant's payment request: a hold on the payer's account now, posted to the
    /// merchant on success. Without `payer_account` the subscriber's stored account is used
    /// (payment with contract). With `terminal`, the merchant's terminal opened it.
    Payment {
        /// The payer's account as given in the session (payment without contract).
        #[serde(default)]
        payer_account: Option<Id>,
        /// The merchant's account.
        merchant_account: Id,
        /// How much.
        #[serde(with = "amount_text")]
        amount: Amount,
        /// What is being bought.
        description: String,
        /// The terminal's name when a payment terminal opened the session.
        #[serde(default)]
        terminal: Option<String>,
    },
    /// Payment through the operator as trustee: the merchant is guaranteed, the user's
    /// register is debited, the merchant paid (less a fee) when the period is settled.
    Trustee {
        /// The merchant's account.
        merchant_account: Id,
        /// How much.
        #[serde(with = "amount_text")]
        amount: Amount,
        /// What is being bought.
        description: String,
    },
    /// Registered mail: deposited for `recipient` once the sender authenticated.
    MailSend {
        /// Who receives it.
        recipient: String,
        /// Subject line.
        subject: String,
        /// Text.
        body: String,
    },
    /// The recipient retrieves a registered mail.
    MailRetrieve {
        /// Which mail.
        mail_id: Id,
    },
    /// A remote declaration: a form submitted, answered with a receipt certificate.
    Declaration {
        /// What the form is.
        title: String,
        /// The filled-in form (text or JSON).
        form: String,
    },
    /// Opens the personalised offers mailbox.
    Offers,
}

impl AppRequest {
    /// The stored name.
    pub fn name(&self) -> &'static str {
        match self {
            AppRequest::Login => "login",
            AppRequest::Transfer { .. } => "transfer",
            AppRequest::Bet { .. } => "bet",
            AppRequest::Payment { .. } => "payment",
            AppRequest::Trustee { .. } => "trustee",
            AppRequest::MailSend { .. } => "mail_send",
            AppRequest::MailRetrieve { .. } => "mail_retrieve",
            AppRequest::Declaration { .. } => "declaration",
            AppRequest::Offers => "offers",
        }
    }
}

/// Serde for [`Amount`] as `"12.50 EUR"`.
pub mod amount_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use tally_kernel::Amount;

    /// As text.
    pub fn serialize<S: Serializer>(a: &Amount, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_string())
    }

    /// From text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A session request: `user`, `channel`, `certificate` and the application's fields side by
/// side (`{"user": "alice", "application": "login"}`). Unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct OpenSession {
    /// The user (the invariant of the code).
    pub user: String,
    /// What for.
    #[serde(flatten)]
    pub app: AppRequest,
    /// Preferred channel B kind among the user's verified addresses.
    #[serde(default)]
    pub channel: Option<String>,
    /// A PEM certificate issued by this node's CA whose address extension names channel B
    /// (instead of the directory).
    #[serde(default)]
    pub certificate: Option<String>,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for OpenSession {
    type Error = String;

    fn try_from(mut map: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let mut text = |name: &str| -> Result<Option<String>, String> {
            match map.remove(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(format!("`{name}` must be a string")),
            }
        };
        let user = text("user")?.ok_or("missing field `user`")?;
        let channel = text("channel")?;
        let certificate = text("certificate")?;
        let fields = map.len();
        let app: AppRequest =
            serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())?;
        // serde lets fields pass beside a unit variant's tag; refuse them like the others.
        if matches!(app, AppRequest::Login | AppRequest::Offers) && fields > 1 {
            return Err(format!("unknown field for application `{}`", app.name()));
        }
        Ok(OpenSession {
            user,
            app,
            channel,
            certificate,
        })
    }
}

/// What the session stores besides the protocol state (which already holds the accounts and
/// payee shown; a payment's hold is found through the journal, see `hold_of`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payload {
    app: AppRequest,
    /// Address verification: the address.
    #[serde(default)]
    address_id: Option<Id>,
}

/// A session as shown to channel A (never the code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// The session number, hex: the capability to confirm it on channel A.
    pub session: String,
    /// The user.
    pub user: String,
    /// The application.
    pub application: String,
    /// `open`, `verified`, `locked` or `closed`.
    pub state: String,
    /// What is being authorised, in clear (as sent on channel B).
    pub purpose: Purpose,
    /// Wrong codes left.
    pub attempts_left: u32,
    /// When the code expires.
    pub expires_at: Timestamp,
    /// Channel B kind.
    pub channel: String,
    /// Channel B address, masked.
    pub address: String,
    /// Delivery of the code: `pending` (retried while it fails), `sent` or `failed` (given
    /// up: open a new session).
    pub delivery: String,
    /// Why the last delivery attempt failed, if it did.
    pub delivery_error: Option<String>,
    /// The payment hold, if any.
    pub hold_id: Option<Id>,
    /// What verification produced, once verified.
    pub result: Option<serde_json::Value>,
}

/// What opening produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Opened {
    /// A session waits for the code.
    Secured {
        /// The session.
        session: SessionView,
        /// True when this replays an earlier request with the same idempotency key.
        replayed: bool,
    },
    /// Below the threshold: executed at once on channel A alone ("normal" transaction).
    Normal {
        /// The transfer made.
        transfer: tally_ledger::Transfer,
        /// True when this replays an earlier request with the same idempotency key.
        replayed: bool,
    },
}

/// What a successful verification returns.
#[derive(Debug)]
pub struct Verified {
    /// The session afterwards (with its `result`).
    pub session: SessionView,
    /// For a login: the access token (returned once, stored only as a hash).
    pub token: Option<Secret<String>>,
}

/// A user's statement: register lines and totals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statement {
    /// Whose.
    pub user: String,
    /// From (inclusive).
    pub from: Timestamp,
    /// To (exclusive).
    pub to: Timestamp,
    /// The lines, oldest first.
    pub entries: Vec<RegisterEntry>,
    /// Totals per currency, minor units (`"EUR": 1250`).
    pub totals: std::collections::BTreeMap<String, i64>,
    /// Seconds of authenticated sessions.
    pub duration_s: i64,
}

/// One trustee payout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payout {
    /// The merchant's account.
    pub merchant_account: Id,
    /// Sum of the register lines.
    pub gross_minor: i64,
    /// The operator's fee kept.
    pub fee_minor: i64,
    /// The transfer paying the rest.
    pub transfer: Id,
    /// Currency.
    pub currency: String,
    /// Lines settled.
    pub lines: usize,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn oob(e: OobError) -> ServiceError {
    ServiceError::Oob(e)
}

fn text_field(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max || value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(invalid(field, format!("1 to {max} bytes of text")));
    }
    Ok(())
}

fn channel_kind(channel: &str, dev: bool) -> Result<()> {
    match channel {
        "email" | "sms" | "webhook" => Ok(()),
        "dev" if dev => Ok(()),
        "dev" => Err(ServiceError::Disabled("the dev channel needs --dev")),
        _ => Err(invalid("channel", "email, sms, webhook or dev")),
    }
}

/// `alice@example.com` → `a***@example.com`; `+4915112345678` → `***5678`.
fn mask(channel: &str, address: &str) -> String {
    match (channel, address.split_once('@')) {
        ("email", Some((local, domain))) => {
            format!("{}***@{domain}", local.chars().next().unwrap_or('*'))
        }
        ("dev", _) => address.to_string(),
        _ => {
            let tail: String = address
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("***{tail}")
        }
    }
}

fn parse_number(hex_number: &str) -> Result<[u8; 16]> {
    hex::decode(hex_number)
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .ok_or(ServiceError::NotFound {
            what: "session",
            id: "(malformed)".into(),
        })
}

fn session_state(s: State) -> &'static str {
    match s {
        State::Closed => "closed",
        State::Locked => "locked",
        State::Open => "open",
        State::Verified => "verified",
    }
}

impl Node {
    fn oob_key(&self) -> &[u8] {
        self.inner.oob.key.expose()
    }

    /// The out-of-band settings.
    pub fn oob_settings(&self) -> &OobSettings {
        &self.inner.oob.settings
    }

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
            let a = self.inner.store.account(account).await?;
            if a.is_none_or(|a| a.owner != user) {
                return Err(invalid(
                    "contract_account",
                    "must be an account of the user",
                ));
            }
        }
        let now = self.now();
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
    ) -> Result<SessionView> {
        check_name("user", user)?;
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden(
                "you can only add your own addresses",
            ));
        }
        channel_kind(channel, self.inner.dev)?;
        text_field("address", address, 256)?;
        if address.contains('\n') {
            return Err(invalid("address", "one line"));
        }
        let existing = self.inner.store.address(channel, address).await?;
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
                created_at: self.now(),
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
        extra.push(upsert_subscriber(user, None, self.now()));
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
                command: None,
                extra,
            })
            .await?;
        Ok(view)
    }

    /// A user's addresses.
    pub async fn addresses(&self, by: &Principal, user: &str) -> Result<Vec<Address>> {
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden(
                "you can only see your own addresses",
            ));
        }
        Ok(self.inner.store.addresses_of(user).await?)
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
        channel_kind(channel, self.inner.dev)?;
        text_field("address", address, 256)?;
        let uri = address_uri(channel, address)?;
        let key = tally_kernel::crypto::SigningKey::generate();
        let now = self.now();
        let not_after = now.plus_seconds(i64::from(days.clamp(1, 3650)) * 86_400);
        let not_after = not_after.min(self.inner.ca.certificate().not_after());
        let cert = self
            .inner
            .ca
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

    fn address_from_certificate(&self, user: &str, pem: &str) -> Result<(String, String)> {
        let bad = |why: &str| invalid("certificate", why.to_string());
        let cert = tally_kernel::crypto::Certificate::from_pem(pem)
            .map_err(|_| bad("not a PEM certificate"))?;
        cert.verify_issued_by(self.inner.ca.certificate(), self.now())
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
        channel_kind(channel, self.inner.dev)?;
        Ok((channel.to_string(), address.to_string()))
    }

    async fn channel_b(&self, user: &str, channel: Option<&str>) -> Result<(String, String)> {
        let addresses = self.inner.store.addresses_of(user).await?;
        if addresses.is_empty() && self.inner.store.subscriber(user).await?.is_none() {
            return Err(ServiceError::NotFound {
                what: "user",
                id: user.to_string(),
            });
        }
        addresses
            .into_iter()
            .filter(|a| a.verified_at.is_some())
            .find(|a| channel.is_none_or(|c| c == a.channel))
            .map(|a| (a.channel, a.address))
            .ok_or_else(|| {
                invalid(
                    "user",
                    "has no verified second-channel address (of that kind)",
                )
            })
    }

    /// Opens a session. `by` is `None` for the web page (logins and declarations only).
    pub async fn oob_open(
        &self,
        by: Option<&Principal>,
        idempotency_key: Option<&str>,
        req: OpenSession,
    ) -> Result<Opened> {
        check_name("user", &req.user)?;
        let client_key = match (by, idempotency_key) {
            (Some(by), Some(k)) => Some(namespaced(by, k)?),
            (None, Some(_)) => return Err(ServiceError::Unauthorized),
            _ => None,
        };
        if let Some(key) = &client_key {
            if let Some(row) = self.inner.store.oob_session_by_key(key).await? {
                return self.replayed_open(&row, &req).await;
            }
            // A retry of a request that ran below the threshold stays that transfer, even if
            // the threshold changed meanwhile: money never moves twice for one key.
            if let Some(tally_ledger::Event::Transfers { transfers }) =
                self.inner.store.journal_event(&normal_key(key)).await?
                && let Some(transfer) = transfers.into_iter().next()
            {
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
                return if same {
                    Ok(Opened::Normal {
                        transfer,
                        replayed: true,
                    })
                } else {
                    Err(ServiceError::IdempotencyKeyReused)
                };
            }
        }
        let plan = match self.plan(by, &req, client_key.clone()).await {
            // Anonymous callers (the web page) learn nothing about which users exist or have
            // an address: both refusals read the same.
            Err(ServiceError::NotFound { what: "user", .. })
            | Err(ServiceError::Invalid { field: "user", .. })
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
            Planned::Secured(plan) => plan,
            Planned::Normal(command) => {
                let key = match &client_key {
                    Some(k) => normal_key(k),
                    None => format!(":oob_normal:{}", Id::new()),
                };
                let outcome = self.execute(key, command, Vec::new()).await?;
                let (transfer, replayed) = crate::node::first_transfer(outcome)?;
                return Ok(Opened::Normal { transfer, replayed });
            }
        };
        match self.open_with(*plan).await {
            Ok((session, replayed)) => Ok(Opened::Secured { session, replayed }),
            // Two retries with one key raced: the loser returns the winner's session.
            Err(ServiceError::Ledger(tally_ledger::LedgerError::IdempotencyConflict))
                if client_key.is_some() =>
            {
                let key = client_key.as_deref().unwrap_or_default();
                match self.inner.store.oob_session_by_key(key).await? {
                    Some(row) => self.replayed_open(&row, &req).await,
                    None => Err(ServiceError::IdempotencyKeyReused),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn replayed_open(&self, row: &SessionRow, req: &OpenSession) -> Result<Opened> {
        let payload: Payload = serde_json::from_str(&row.payload).map_err(corrupt)?;
        if row.user_id != req.user || payload.app != req.app {
            return Err(ServiceError::IdempotencyKeyReused);
        }
        Ok(Opened::Secured {
            session: self.present(row).await?,
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
        let mut command = None;
        let purpose = match &req.app {
            AppRequest::Login | AppRequest::Declaration { .. } if by.is_none() => {
                self.purpose_simple(&req.app)?
            }
            _ if by.is_none() => return Err(ServiceError::Unauthorized),
            AppRequest::Login | AppRequest::Offers | AppRequest::Declaration { .. } => {
                if !is_self(by) {
                    return Err(ServiceError::Forbidden("only the user opens this session"));
                }
                self.purpose_simple(&req.app)?
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
                    return Err(invalid("debit_account", "must be an account of the user"));
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
                let transfer = Command::Transfer {
                    debit_account: *debit_account,
                    credit_account: *credit_account,
                    amount_minor: amount.minor,
                    currency: amount.currency,
                    timeout_s: None,
                    memo: description.clone(),
                };
                if matches!(req.app, AppRequest::Transfer { .. })
                    && !self.secured(&credit.owner, *amount).await?
                {
                    return Ok(Planned::Normal(transfer));
                }
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
                        .inner
                        .store
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
                let purpose = Purpose::Transaction(Transaction {
                    amount: *amount,
                    payer_account: Some(payer),
                    payee: merchant.owner.clone(),
                    payee_account: Some(*merchant_account),
                    description: shown,
                });
                let memo = format!("payment to {}: {description}", merchant.owner);
                if !self.secured(&merchant.owner, *amount).await? {
                    return Ok(Planned::Normal(Command::Transfer {
                        debit_account: payer,
                        credit_account: *merchant_account,
                        amount_minor: amount.minor,
                        currency: amount.currency,
                        timeout_s: None,
                        memo,
                    }));
                }
                let policy = self.inner.oob.settings.policy;
                command = Some(Command::Transfer {
                    debit_account: payer,
                    credit_account: *merchant_account,
                    amount_minor: amount.minor,
                    currency: amount.currency,
                    timeout_s: Some(policy.ttl_s + self.inner.oob.settings.hold_grace_s),
                    memo,
                });
                purpose
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
                self.trustee_account(amount.currency).await?;
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
                text_field("body", body, BODY_LEN_MAX)?;
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
                    .inner
                    .store
                    .mail(*mail_id)
                    .await?
                    .filter(|m| m.recipient == user && m.kind == "registered")
                    .ok_or(ServiceError::NotFound {
                        what: "mail",
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
            channel,
            address,
            client_key,
            command,
            extra: Vec::new(),
        })))
    }

    fn purpose_simple(&self, app: &AppRequest) -> Result<Purpose> {
        Ok(match app {
            AppRequest::Declaration { title, form } => {
                text_field("title", title, 200)?;
                text_field("form", form, BODY_LEN_MAX)?;
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
        self.inner
            .store
            .account(id)
            .await?
            .ok_or_else(|| invalid(field, "no such account"))
    }

    /// True when `amount` to `payee` needs out-of-band confirmation: above the payee's own
    /// threshold for the currency, else the operator's, else always.
    pub async fn secured(&self, payee: &str, amount: Amount) -> Result<bool> {
        let code = amount.currency.code();
        let limit = match self.inner.store.rule(payee, code).await? {
            Some(l) => l,
            None => self.inner.store.rule("operator", code).await?.unwrap_or(0),
        };
        Ok(amount.minor > limit)
    }

    /// Sets the threshold of `owner` (a merchant itself, or the operator for anyone).
    pub async fn set_rule(&self, by: &Principal, owner: &str, amount: Amount) -> Result<()> {
        check_name("owner", owner)?;
        if !by.is_admin() && by.owner != owner {
            return Err(ServiceError::Forbidden(
                "you can only set your own threshold",
            ));
        }
        if amount.minor < 0 {
            return Err(invalid("secured_above", "must not be negative"));
        }
        let now = self.now();
        self.record(
            format!(":oob_rule:{owner}:{}", Id::new()),
            "oob_rule_set",
            serde_json::json!({ "owner": owner, "currency": amount.currency.code(), "secured_above_minor": amount.minor }),
            vec![upsert_rule(owner, amount.currency.code(), amount.minor, now)],
        )
        .await?;
        Ok(())
    }

    async fn trustee_account(&self, currency: tally_kernel::Currency) -> Result<Id> {
        self.inner
            .store
            .accounts_of("operator")
            .await?
            .into_iter()
            .find(|a| a.kind == tally_ledger::AccountKind::Settlement && a.currency == currency)
            .map(|a| a.id)
            .ok_or(ServiceError::Disabled(
                "trustee payments need an operator settlement account in this currency",
            ))
    }

    async fn record(
        &self,
        key: String,
        kind: &str,
        data: serde_json::Value,
        attachments: Vec<Attachment>,
    ) -> Result<Outcome> {
        self.execute(
            key,
            Command::Record {
                kind: kind.into(),
                data,
            },
            attachments,
        )
        .await
    }

    /// Runs one ledger command with its attachments through the writer.
    pub(crate) async fn execute(
        &self,
        key: String,
        command: Command,
        attachments: Vec<Attachment>,
    ) -> Result<Outcome> {
        Ok(self
            .inner
            .store
            .execute_with(
                Request {
                    idempotency_key: key,
                    command,
                },
                attachments,
            )
            .await?)
    }

    async fn open_with(&self, plan: OpenPlan) -> Result<(SessionView, bool)> {
        let settings = &self.inner.oob.settings;
        let mut number = [0_u8; 16];
        getrandom_fill(&mut number)?;
        let now = self.now();
        let (session, _notice) = Session::open(
            &plan.user,
            plan.purpose,
            settings.policy,
            number,
            now,
            self.oob_key(),
        )
        .map_err(oob)?;
        let hex_number = session.number_hex();
        let row = SessionRow {
            id: number,
            user_id: plan.user.clone(),
            opened_by: plan.opened_by,
            application: plan.application.into(),
            state: "open".into(),
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
        };
        let message = NewMessage {
            dedup_key: format!(":oob:{hex_number}:code"),
            kind: plan.channel.clone(),
            address: plan.address.clone(),
            subject: match &session.purpose {
                Purpose::Login => "Your Tally sign-in code".into(),
                Purpose::Message(_) => "Confirm with your Tally code".into(),
                Purpose::Transaction(t) => format!("Confirm {} to {}", t.amount, t.payee),
            },
            body: session.notice_text(CODE_PLACEHOLDER),
            // The session number is channel A's capability: only the dev inbox (a test
            // harness's channel B) names it, so scripts can match a code to its session.
            data: if plan.channel == "dev" {
                serde_json::json!({ "session": hex_number, "expires_at": session.expires_at })
            } else {
                serde_json::json!({ "expires_at": session.expires_at })
            },
        };
        let key = open_key(&row);
        let command = plan.command.unwrap_or_else(|| Command::Record {
            kind: "oob_session_opened".into(),
            data: serde_json::json!({
                "session": hex_number, "user": plan.user, "application": plan.application,
                "channel": plan.channel,
            }),
        });
        let since = now.plus_seconds(-settings.quota_window_s);
        let mut attachments: Vec<Attachment> = plan.extra;
        attachments.extend(insert_session(&row, since, settings.address_quota));
        attachments.push(Attachment::Message(message));
        let outcome = self
            .execute(key, command, attachments)
            .await
            .map_err(|e| match e {
                ServiceError::Store(StoreError::Conflict(what)) => ServiceError::RateLimited(what),
                other => other,
            })?;
        if outcome.replayed {
            let row = self
                .inner
                .store
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
        Ok((view(&row, Delivery(delivery.into(), None), hold)?, false))
    }

    async fn delivery(&self, hex_number: &str) -> Result<Delivery> {
        Ok(self
            .inner
            .store
            .message(&format!(":oob:{hex_number}:code"))
            .await?
            .map_or_else(
                || Delivery("pending".into(), None),
                |m| Delivery(m.state, m.last_error),
            ))
    }

    /// The session as shown, with its code's delivery state and its hold.
    async fn present(&self, row: &SessionRow) -> Result<SessionView> {
        let delivery = self.delivery(&hex::encode(row.id)).await?;
        let hold = self.hold_of(row).await?;
        view(row, delivery, hold)
    }

    /// A payment session's hold: the transfer its opening command made (found through the
    /// journal entry of that command, so it is never missing after a crash).
    async fn hold_of(&self, row: &SessionRow) -> Result<Option<Id>> {
        if row.application != "payment" {
            return Ok(None);
        }
        let event = self.inner.store.journal_event(&open_key(row)).await?;
        Ok(match event {
            Some(tally_ledger::Event::Transfers { transfers }) => transfers.first().map(|t| t.id),
            _ => None,
        })
    }
}

/// The idempotency key of a below-threshold transfer opened with the (namespaced) client key.
fn normal_key(client_key: &str) -> String {
    format!("{client_key}:normal")
}

/// `row` moved to the protocol state `next` at `now` (state, attempts, session JSON).
fn advanced(row: &SessionRow, next: &Session, now: Timestamp) -> Result<SessionRow> {
    Ok(SessionRow {
        state: session_state(next.state).into(),
        attempts: i64::from(next.attempts),
        session: serde_json::to_string(next).map_err(corrupt)?,
        updated_at: now,
        ..row.clone()
    })
}

/// The idempotency key of a session's opening command.
fn open_key(row: &SessionRow) -> String {
    row.client_key
        .clone()
        .unwrap_or_else(|| format!(":oob_open:{}", hex::encode(row.id)))
}

/// A code message's delivery state and last error.
struct Delivery(String, Option<String>);

fn view(row: &SessionRow, delivery: Delivery, hold_id: Option<Id>) -> Result<SessionView> {
    {
        let session: Session = serde_json::from_str(&row.session).map_err(corrupt)?;
        Ok(SessionView {
            session: hex::encode(row.id),
            user: row.user_id.clone(),
            application: row.application.clone(),
            state: row.state.clone(),
            attempts_left: session.policy.attempts_max.saturating_sub(session.attempts),
            expires_at: row.expires_at,
            channel: row.channel.clone(),
            address: mask(&row.channel, &row.address),
            delivery: delivery.0,
            delivery_error: delivery.1,
            hold_id,
            purpose: session.purpose,
            result: row
                .result
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(corrupt)?,
        })
    }
}

impl Node {
    /// Puts the code into an out-of-band message about to be delivered (or read from the dev
    /// inbox). Other messages are left as they are.
    pub async fn render_code(&self, message: &NewMessage) -> Result<Secret<String>> {
        if let Some(body) = self.render_unlock_key(message).await? {
            return Ok(Secret::new(body));
        }
        let body = &message.body;
        let number = message
            .dedup_key
            .strip_prefix(":oob:")
            .and_then(|k| k.strip_suffix(":code"));
        let Some(number) = number.filter(|_| body.contains(CODE_PLACEHOLDER)) else {
            return Ok(Secret::new(body.to_string()));
        };
        let row = self.session_row(number).await?;
        let session: Session = serde_json::from_str(&row.session).map_err(corrupt)?;
        let code = session.code(self.oob_key()).map_err(oob)?;
        Ok(Secret::new(body.replace(CODE_PLACEHOLDER, code.expose())))
    }

    /// A session as channel A sees it. The session number is the capability.
    pub async fn oob_session(&self, number: &str) -> Result<SessionView> {
        let row = self.session_row(number).await?;
        self.present(&row).await
    }

    async fn session_row(&self, number: &str) -> Result<SessionRow> {
        let id = parse_number(number)?;
        self.inner
            .store
            .oob_session(&id)
            .await?
            .ok_or(ServiceError::NotFound {
                what: "session",
                id: number.chars().take(32).collect(),
            })
    }

    /// Checks a code typed back on channel A. `confirm` is the transaction the confirming
    /// client displays: it must be the one the code was sent for.
    pub async fn oob_verify(
        &self,
        number: &str,
        code: &str,
        confirm: Option<&Transaction>,
    ) -> Result<Verified> {
        if code.len() > 32 {
            return Err(invalid("code", "at most 32 characters"));
        }
        for _ in 0..CONFLICT_RETRIES {
            let row = self.session_row(number).await?;
            match self.decide(&row, code, confirm).await {
                Err(ServiceError::Store(StoreError::Conflict(_))) => continue,
                other => return other,
            }
        }
        Err(ServiceError::Oob(OobError::SessionClosed))
    }

    async fn decide(
        &self,
        row: &SessionRow,
        code: &str,
        confirm: Option<&Transaction>,
    ) -> Result<Verified> {
        let session: Session = serde_json::from_str(&row.session).map_err(corrupt)?;
        let payload: Payload = serde_json::from_str(&row.payload).map_err(corrupt)?;
        let hold = self.hold_of(row).await?;
        let now = self.now();
        let before_attempts = session.attempts;
        let before_state = session.state;
        let (next, verdict) = session.verify(now, code, confirm, self.oob_key());
        let hex_number = next.number_hex();
        let changed = next.state != before_state || next.attempts != before_attempts;
        let mut after = advanced(row, &next, now)?;
        let mut token = None;
        let (key, command, mut attachments) = match &verdict {
            Err(_) if !changed => {
                return Err(oob(verdict.err().unwrap_or(OobError::SessionClosed)));
            }
            Err(OobError::TooManyAttempts) => {
                let command = match hold {
                    Some(hold) => Command::Void { pending_id: hold },
                    None => Command::Record {
                        kind: "oob_session_locked".into(),
                        data: serde_json::json!({ "session": hex_number }),
                    },
                };
                (format!(":oob:{hex_number}:locked"), command, Vec::new())
            }
            Err(_) => (
                format!(":oob:{hex_number}:attempt:{}", next.attempts),
                Command::Record {
                    kind: "oob_code_refused".into(),
                    data: serde_json::json!({ "session": hex_number, "attempts": next.attempts }),
                },
                Vec::new(),
            ),
            Ok(()) => {
                let effect = self.effect(row, &next, &payload, hold, now).await?;
                after.result = Some(effect.result.to_string());
                token = effect.token;
                (
                    format!(":oob:{hex_number}:verified"),
                    effect.command,
                    effect.attachments,
                )
            }
        };
        attachments.extend(update_session(row, &after));
        let outcome = self.execute(key, command, attachments).await?;
        if outcome.replayed {
            return Err(oob(OobError::SessionClosed));
        }
        // The code was typed back, so it was delivered; refusals return no view.
        let view = view(&after, Delivery("sent".into(), None), hold)?;
        match verdict {
            Ok(()) => Ok(Verified {
                session: view,
                token,
            }),
            Err(e) => Err(oob(e)),
        }
    }

    async fn effect(
        &self,
        row: &SessionRow,
        session: &Session,
        payload: &Payload,
        hold: Option<Id>,
        now: Timestamp,
    ) -> Result<Effect> {
        let hex_number = session.number_hex();
        let user = row.user_id.as_str();
        let duration_s = (now.as_micros() - row.created_at.as_micros()) / 1_000_000;
        let record = |kind: &str, data: serde_json::Value| Command::Record {
            kind: kind.into(),
            data,
        };
        let mut attachments = Vec::new();
        let transaction = match &session.purpose {
            Purpose::Transaction(t) => Some(t.clone()),
            Purpose::Login | Purpose::Message(_) => None,
        };
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
         -> Result<(Attachment, serde_json::Value)> {
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
            let signed = SignedRecord::sign(CERTIFICATE_DOMAIN, &body, &self.inner.node_key)
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
            Ok((insert_certificate(&row)?, json))
        };
        if row.application == "verify_address" {
            let id = payload
                .address_id
                .ok_or_else(|| corrupt("address session without address"))?;
            attachments.push(verify_address(id, now));
            return Ok(Effect {
                command: record(
                    "address_verified",
                    serde_json::json!({ "session": hex_number, "address": id }),
                ),
                attachments,
                result: serde_json::json!({ "address_verified": id }),
                token: None,
            });
        }
        let data = serde_json::json!({ "session": hex_number, "user": user, "application": row.application });
        Ok(match &payload.app {
            AppRequest::Login => {
                let mut raw = [0_u8; 32];
                getrandom_fill(&mut raw)?;
                let token = Secret::new(format!("tally_session_{}", hex::encode(raw)));
                raw.fill(0);
                let expires_at = now.plus_seconds(self.inner.oob.settings.token_ttl_s);
                attachments.push(insert_token(&TokenRow {
                    token_hash: sha256(token.expose().as_bytes()),
                    user_id: user.into(),
                    session_id: session.number,
                    expires_at,
                }));
                attachments.push(register("login")?);
                Effect {
                    command: record("oob_login", data),
                    attachments,
                    result: serde_json::json!({ "access_token_expires_at": expires_at }),
                    token: Some(token),
                }
            }
            AppRequest::Transfer {
                debit_account,
                credit_account,
                amount,
                ..
            }
            | AppRequest::Bet {
                debit_account,
                credit_account,
                stake: amount,
                ..
            } => {
                let kind = payload.app.name();
                attachments.push(register(kind)?);
                let (cert, json) = certificate(kind, user, serde_json::json!({}))?;
                attachments.push(cert);
                let memo = transaction
                    .as_ref()
                    .map(|t| t.description.clone())
                    .unwrap_or_default();
                Effect {
                    command: Command::Transfer {
                        debit_account: *debit_account,
                        credit_account: *credit_account,
                        amount_minor: amount.minor,
                        currency: amount.currency,
                        timeout_s: None,
                        memo,
                    },
                    attachments,
                    result: serde_json::json!({ "certificate": json }),
                    token: None,
                }
            }
            AppRequest::Payment { .. } => {
                let hold = hold.ok_or_else(|| corrupt("payment session without hold"))?;
                attachments.push(register("payment")?);
                let (cert, json) =
                    certificate("payment", user, serde_json::json!({ "hold": hold }))?;
                attachments.push(cert);
                Effect {
                    command: Command::Post {
                        pending_id: hold,
                        amount_minor: None,
                    },
                    attachments,
                    result: serde_json::json!({ "hold": hold, "certificate": json }),
                    token: None,
                }
            }
            AppRequest::Trustee { .. } => {
                attachments.push(register("trustee")?);
                let (cert, json) = certificate("trustee", user, serde_json::json!({}))?;
                attachments.push(cert);
                Effect {
                    command: record("trustee_debt", data),
                    attachments,
                    result: serde_json::json!({ "certificate": json }),
                    token: None,
                }
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
                attachments.push(insert_mail(&mail));
                let (cert, json) = certificate(
                    "mail_deposit",
                    user,
                    serde_json::json!({ "mail": mail.id, "recipient": recipient, "subject": subject }),
                )?;
                attachments.push(cert);
                if let Ok((channel, address)) = self.channel_b(recipient, None).await {
                    attachments.push(Attachment::Message(NewMessage {
                        dedup_key: format!(":mail:{}:alert", mail.id),
                        kind: channel,
                        address,
                        subject: format!("Registered mail from {user}"),
                        body: format!(
                            "{user} sent you registered mail: {subject}\nMail id: {}\nRetrieve it with `tally mail retrieve --user {recipient} {}`; you will confirm with a code.",
                            mail.id, mail.id
                        ),
                        data: serde_json::json!({ "mail": mail.id, "sender": user }),
                    }));
                }
                Effect {
                    command: record(
                        "mail_deposited",
                        serde_json::json!({ "session": hex_number, "mail": mail.id, "sender": user, "recipient": recipient }),
                    ),
                    attachments,
                    result: serde_json::json!({ "mail": mail.id, "certificate": json }),
                    token: None,
                }
            }
            AppRequest::MailRetrieve { mail_id } => {
                let mail = self
                    .inner
                    .store
                    .mail(*mail_id)
                    .await?
                    .ok_or_else(|| corrupt("mail vanished"))?;
                attachments.push(mark_retrieved(mail.id, now));
                let what = serde_json::json!({ "mail": mail.id, "sender": mail.sender, "subject": mail.subject });
                let (cert, json) = certificate("mail_retrieval", user, what.clone())?;
                attachments.push(cert);
                // The sender keeps a copy of the retrieval certificate too.
                let (cert_sender, _) = certificate("mail_retrieval", &mail.sender, what)?;
                attachments.push(cert_sender);
                if let Ok((channel, address)) = self.channel_b(&mail.sender, None).await {
                    attachments.push(Attachment::Message(NewMessage {
                        dedup_key: format!(":mail:{}:retrieved", mail.id),
                        kind: channel,
                        address,
                        subject: format!("{user} retrieved your registered mail"),
                        body: format!(
                            "{user} retrieved your registered mail \"{}\" at {}.",
                            mail.subject,
                            now.to_rfc3339()
                        ),
                        data: serde_json::json!({ "mail": mail.id, "recipient": user }),
                    }));
                }
                Effect {
                    command: record(
                        "mail_retrieved",
                        serde_json::json!({ "session": hex_number, "mail": mail.id }),
                    ),
                    attachments,
                    result: serde_json::json!({ "mail": mail, "certificate": json }),
                    token: None,
                }
            }
            AppRequest::Declaration { title, form } => {
                let (cert, json) = certificate(
                    "declaration_receipt",
                    user,
                    serde_json::json!({ "title": title, "form_sha256": hex::encode(sha256(form.as_bytes())) }),
                )?;
                attachments.push(cert);
                Effect {
                    command: record("declaration", data),
                    attachments,
                    result: serde_json::json!({ "certificate": json }),
                    token: None,
                }
            }
            AppRequest::Offers => {
                let offers = self.inner.store.unread_offers(user).await?;
                for o in &offers {
                    attachments.push(mark_retrieved(o.id, now));
                }
                attachments.push(register("offers")?);
                Effect {
                    command: record("offers_opened", data),
                    attachments,
                    result: serde_json::json!({ "offers": offers }),
                    token: None,
                }
            }
        })
    }

    /// Cancels an open session (the payment hold is released).
    pub async fn oob_cancel(&self, number: &str) -> Result<SessionView> {
        for _ in 0..CONFLICT_RETRIES {
            let row = self.session_row(number).await?;
            let session: Session = serde_json::from_str(&row.session).map_err(corrupt)?;
            if session.state != State::Open {
                return Err(oob(OobError::SessionClosed));
            }
            let hold = self.hold_of(&row).await?;
            let next = session.close();
            let hex_number = next.number_hex();
            let after = advanced(&row, &next, self.now())?;
            // A hold the sweeper already expired needs no void: the session just closes.
            let pending = match hold {
                Some(id) => self
                    .inner
                    .store
                    .transfer(id)
                    .await?
                    .filter(|t| t.state == tally_ledger::TransferState::Pending)
                    .map(|t| t.id),
                None => None,
            };
            let command = match pending {
                Some(hold) => Command::Void { pending_id: hold },
                None => Command::Record {
                    kind: "oob_session_closed".into(),
                    data: serde_json::json!({ "session": hex_number }),
                },
            };
            let attachments = update_session(&row, &after).into_iter().collect();
            match self
                .execute(format!(":oob:{hex_number}:closed"), command, attachments)
                .await
            {
                Err(ServiceError::Store(StoreError::Conflict(_))) => continue,
                Err(e) => return Err(e),
                Ok(_) => return self.present(&after).await,
            }
        }
        Err(oob(OobError::SessionClosed))
    }

    /// The user an access token was granted to, and until when.
    pub async fn token_user(&self, token: &str) -> Result<(String, Timestamp)> {
        if token.is_empty() || token.len() > 200 {
            return Err(ServiceError::Unauthorized);
        }
        self.inner
            .store
            .oob_token(&sha256(token.as_bytes()), self.now())
            .await?
            .ok_or(ServiceError::Unauthorized)
    }

    /// A user's sessions (the user or the operator).
    pub async fn oob_sessions(&self, by: &Principal, user: &str) -> Result<Vec<SessionView>> {
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden(
                "you can only list your own sessions",
            ));
        }
        let rows = self.inner.store.oob_sessions_of(user, 100).await?;
        rows.iter()
            .map(|r| view(r, Delivery("-".into(), None), None))
            .collect()
    }

    /// A user's certificates (the user or the operator).
    pub async fn certificates(&self, by: &Principal, user: &str) -> Result<Vec<CertificateRow>> {
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden(
                "you can only list your own certificates",
            ));
        }
        Ok(self.inner.store.certificates_of(user, 200).await?)
    }

    /// Mail for or from a user; bodies of registered mail not yet retrieved are withheld.
    pub async fn mailbox(&self, by: &Principal, user: &str) -> Result<Vec<Mail>> {
        if !by.is_admin() && by.owner != user {
            return Err(ServiceError::Forbidden("you can only list your own mail"));
        }
        let mut mail = self.inner.store.mail_of(user, 200).await?;
        for m in &mut mail {
            if m.retrieved_at.is_none() || m.recipient != user {
                m.body.clear();
            }
        }
        Ok(mail)
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
        text_field("body", body, BODY_LEN_MAX)?;
        let mail = Mail {
            id: Id::new(),
            kind: "offer".into(),
            sender: by.owner.clone(),
            recipient: recipient.into(),
            subject: subject.into(),
            body: body.into(),
            deposited_at: self.now(),
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
        let entries = self.inner.store.register_of(user, from, to).await?;
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
            entries,
            totals,
            duration_s,
        })
    }

    /// Ends a trustee period (operator only): every unsettled trustee line before `until` is
    /// paid to its merchant from the operator's settlement account, less the fee. One ledger
    /// transfer per merchant account; each settles its lines under a guard, so running this
    /// twice (or on two nodes) pays once.
    pub async fn settle_trustee(&self, by: &Principal, until: Timestamp) -> Result<Vec<Payout>> {
        require_admin(by)?;
        let lines = self.inner.store.unsettled_trustee(until, 10_000).await?;
        let mut groups: std::collections::BTreeMap<(Id, String), Vec<RegisterEntry>> =
            std::collections::BTreeMap::new();
        for l in lines {
            let Some(account) = l.payee_account else {
                continue;
            };
            groups
                .entry((account, l.currency.clone()))
                .or_default()
                .push(l);
        }
        let fee_bps = self.inner.oob.settings.trustee_fee_bps;
        let mut payouts = Vec::new();
        for ((merchant_account, currency), lines) in groups {
            let currency_code = tally_kernel::Currency::from_code(&currency)?;
            let gross: i64 = lines.iter().map(|l| l.amount_minor).sum();
            // The fee rounds down: the merchant is never paid less than the stated rate.
            let fee = i64::try_from(i128::from(gross) * i128::from(fee_bps) / 10_000)
                .map_err(|_| invalid("amount", "too large"))?;
            let net = gross - fee;
            let source = self.trustee_account(currency_code).await?;
            let settlement = Id::new();
            let mut attachments = Vec::new();
            for l in &lines {
                attachments.extend(settle_register(l.id, settlement, self.now()));
            }
            if net <= 0 {
                continue;
            }
            let outcome = self
                .execute(
                    format!(":trustee_payout:{settlement}"),
                    Command::Transfer {
                        debit_account: source,
                        credit_account: merchant_account,
                        amount_minor: net,
                        currency: currency_code,
                        timeout_s: None,
                        memo: format!("trustee payout: {} payments, fee {fee_bps} bp", lines.len()),
                    },
                    attachments,
                )
                .await;
            match outcome {
                Err(ServiceError::Store(StoreError::Conflict(_))) => continue,
                Err(e) => return Err(e),
                Ok(o) => payouts.push(Payout {
                    merchant_account,
                    gross_minor: gross,
                    fee_minor: fee,
                    transfer: o.transfer().map_or(settlement, |t| t.id),
                    currency,
                    lines: lines.len(),
                }),
            }
        }
        Ok(payouts)
    }
}

enum Planned {
    Secured(Box<OpenPlan>),
    Normal(Command),
}

struct OpenPlan {
    user: String,
    opened_by: String,
    application: &'static str,
    purpose: Purpose,
    payload: Payload,
    channel: String,
    address: String,
    client_key: Option<String>,
    /// The command journaling the open: the payment hold, or a record by default.
    command: Option<Command>,
    /// More rows to write with the session.
    extra: Vec<Attachment>,
}

struct Effect {
    command: Command,
    attachments: Vec<Attachment>,
    result: serde_json::Value,
    token: Option<Secret<String>>,
}

fn corrupt(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Store(StoreError::Corrupt(e.to_string()))
}

fn check_money(
    amount: Amount,
    debit: tally_kernel::Currency,
    credit: tally_kernel::Currency,
) -> Result<()> {
    if amount.minor <= 0 {
        return Err(invalid("amount", "must be positive"));
    }
    if amount.currency != debit || amount.currency != credit {
        return Err(invalid("amount", "currency differs from the accounts'"));
    }
    Ok(())
}

/// A second-channel address as a certificate URI (the seed's "telephone number coded in a
/// field of the certificate"): `mailto:`, `tel:`, the webhook's own `https:` URL, or
/// `tally-dev:` for the development inbox.
fn address_uri(channel: &str, address: &str) -> Result<String> {
    Ok(match channel {
        "email" => format!("mailto:{address}"),
        "sms" => format!("tel:{address}"),
        "webhook" if address.starts_with("https://") => address.to_string(),
        "webhook" => return Err(invalid("address", "a webhook address is an https:// URL")),
        "dev" => format!("tally-dev:{address}"),
        _ => return Err(invalid("channel", "email, sms, webhook or dev")),
    })
}

/// A delivery address that a channel can use.
pub(crate) fn check_address(channel: &str, address: &str) -> Result<()> {
    if address.is_empty() || address.len() > 320 || address.chars().any(char::is_control) {
        return Err(invalid("address", "1 to 320 printable bytes"));
    }
    address_uri(channel, address).map(|_| ())
}

/// The inverse of [`address_uri`].
fn uri_address(uri: &str) -> Option<(String, String)> {
    let (channel, address) = if let Some(a) = uri.strip_prefix("mailto:") {
        ("email", a)
    } else if let Some(a) = uri.strip_prefix("tel:") {
        ("sms", a)
    } else if let Some(a) = uri.strip_prefix("tally-dev:") {
        ("dev", a)
    } else if uri.starts_with("https://") {
        ("webhook", uri)
    } else {
        return None;
    };
    (!address.is_empty()).then(|| (channel.to_string(), address.to_string()))
}
