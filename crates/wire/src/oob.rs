//! Out-of-band authentication (`docs/protocols/oob.md`): sessions and what they authorise,
//! the directory, certificates, the mailbox, statements and the trustee settlement.

use crate::amount_text;
use serde::{Deserialize, Serialize};
use tally_kernel::crypto::canonical::SignedRecord;
use tally_kernel::{Amount, Id, Timestamp};
use tally_proto::oob::{Purpose, State, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

/// What a session is opened for, as requested. Amounts are `"12.50 EUR"` strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "application", rename_all = "snake_case", deny_unknown_fields)]
pub enum AppRequest {
    /// Access control: a short-lived access token on success.
    Login,
    /// Message certification of an inter-account transfer (or an order): posts on success.
    Transfer {
        /// The user's account.
        #[schema(value_type = uuid::Uuid)]
        debit_account: Id,
        /// The beneficiary.
        #[schema(value_type = uuid::Uuid)]
        credit_account: Id,
        /// How much.
        #[serde(with = "amount_text")]
        #[schema(value_type = String, example = "9.90 EUR")]
        amount: Amount,
        /// What for (shown on channel B).
        #[serde(default)]
        memo: String,
    },
    /// A bet: a certified message with a stake paid to the bookmaker on success.
    Bet {
        /// The user's account.
        #[schema(value_type = uuid::Uuid)]
        debit_account: Id,
        /// The bookmaker's account.
        #[schema(value_type = uuid::Uuid)]
        credit_account: Id,
        /// The stake.
        #[serde(with = "amount_text")]
        #[schema(value_type = String, example = "9.90 EUR")]
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
        #[schema(value_type = Option<uuid::Uuid>)]
        payer_account: Option<Id>,
        /// The merchant's account.
        #[schema(value_type = uuid::Uuid)]
        merchant_account: Id,
        /// How much.
        #[serde(with = "amount_text")]
        #[schema(value_type = String, example = "9.90 EUR")]
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
        #[schema(value_type = uuid::Uuid)]
        merchant_account: Id,
        /// How much.
        #[serde(with = "amount_text")]
        #[schema(value_type = String, example = "9.90 EUR")]
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
        #[schema(value_type = uuid::Uuid)]
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
    /// Confirmation of a payment above a threshold, opened by the node itself when a request
    /// that moves the user's money (a transfer, a hold, a payment by reference, an auto-debit)
    /// needs it; verified, it lets that request run once. Not opened through the API.
    Confirm {
        /// What is being confirmed (`transfer`, `hold`, `sale_payment`, `auto_debit`).
        operation: String,
        /// The user's account debited.
        #[schema(value_type = uuid::Uuid)]
        payer_account: Id,
        /// The account credited.
        #[schema(value_type = uuid::Uuid)]
        payee_account: Id,
        /// How much.
        #[serde(with = "amount_text")]
        #[schema(value_type = String, example = "9.90 EUR")]
        amount: Amount,
        /// What for (shown on channel B).
        description: String,
    },
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
            AppRequest::Confirm { .. } => "confirm",
        }
    }
}

/// A session request: `user`, `channel`, `certificate` and the application's fields side by
/// side (`{"user": "alice", "application": "login"}`). Unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

/// What opening produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Opened {
    /// A session waits for the code.
    Secured {
        /// The session.
        session: Box<SessionView>,
        /// True when this replays an earlier request with the same idempotency key.
        replayed: bool,
    },
    /// Below the threshold: executed at once on channel A alone ("normal" transaction).
    Normal {
        /// The transfer made.
        transfer: Box<crate::ledger::TransferDto>,
        /// True when this replays an earlier request with the same idempotency key.
        replayed: bool,
    },
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
    /// Where the session stands.
    pub state: State,
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
    pub result: Option<SessionResult>,
}

/// What a verified session produced, shown to channel A: each application sets its own
/// fields, the others are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionResult {
    /// Login: until when the access token works (the token itself comes once, in the
    /// verification's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_expires_at: Option<Timestamp>,
    /// Address verification: the address now verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_verified: Option<Id>,
    /// Payment: the hold posted to the merchant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Id>,
    /// Registered mail: the mail deposited, or the mail retrieved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<ResultMail>,
    /// Offers: the offers opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offers: Option<Vec<MailView>>,
    /// The node-signed certificate of what the session certified (also kept in the user's
    /// certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<SignedRecord>,
}

/// The mail of a registered-mail session's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResultMail {
    /// `mail_send`: the deposited mail's id.
    Deposited(Id),
    /// `mail_retrieve`: the mail itself, now readable.
    Retrieved(MailView),
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
    pub entries: Vec<RegisterLine>,
    /// Totals per currency, minor units (`"EUR": 1250`).
    pub totals: std::collections::BTreeMap<String, i64>,
    /// Seconds of authenticated sessions.
    pub duration_s: i64,
}

/// One trustee payout.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Payout {
    /// The merchant's account.
    #[schema(value_type = uuid::Uuid)]
    pub merchant_account: Id,
    /// Sum of the register lines.
    pub gross_minor: i64,
    /// The operator's fee kept.
    pub fee_minor: i64,
    /// The transfer paying the rest.
    #[schema(value_type = uuid::Uuid)]
    pub transfer: Id,
    /// Currency.
    pub currency: String,
    /// Lines settled.
    pub lines: usize,
}

/// What `POST /v1/trustee/settle` did: merchants paid and users' debts collected.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Settlement {
    /// One payout per merchant account and currency.
    pub payouts: Vec<Payout>,
    /// One collection per user and currency with a debt.
    pub collections: Vec<Collection>,
}

/// A user's trustee debt collected at the end of a period (from the operator's settlement
/// account: the seed's payment "between the bank entities of the purchaser and the trustee").
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Collection {
    /// The user.
    pub user: String,
    /// The debt collected, minor units.
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
    /// The ledger transfer that collected it.
    #[schema(value_type = uuid::Uuid)]
    pub transfer: Id,
}

/// `PUT /v1/trustee/credit/{user}`: the user's trustee limit in one currency.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrusteeLimitRequest {
    /// The most the user may owe and hold through the trustee (`"100.00 EUR"`); never below
    /// what it owes and holds now (set it to exactly that to stop new payments).
    #[serde(with = "amount_text")]
    #[schema(value_type = String, example = "100.00 EUR")]
    pub limit: Amount,
}

/// A user's trustee credit in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrusteeCredit {
    /// The user.
    pub user: String,
    /// Currency.
    pub currency: String,
    /// The limit set by the operator, minor units.
    pub limit_minor: i64,
    /// Owed for verified payments, not yet collected.
    pub owed_minor: i64,
    /// Held for payments whose code is still awaited.
    pub held_minor: i64,
    /// What the user can still pay through the trustee.
    pub available_minor: i64,
    /// The ledger account holding the debt (the operator's).
    #[schema(value_type = uuid::Uuid)]
    pub account: Id,
}

/// `POST /v1/subscribers/{user}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberRequest {
    /// The stored account for payments with contract.
    #[serde(default)]
    pub contract_account: Option<Uuid>,
}

/// `POST /v1/subscribers/{user}/addresses`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    /// `email`, `sms`, `webhook` or `dev`.
    pub channel: String,
    /// Where.
    pub address: String,
}

/// `POST /v1/subscribers/{user}/certificate`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// Channel B kind written into the certificate.
    pub channel: String,
    /// Channel B address written into the certificate.
    pub address: String,
    /// Validity in days (default 365).
    #[serde(default)]
    pub days: Option<u32>,
}

/// `POST /v1/oob/sessions/{session}/verify`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The code from channel B.
    pub code: String,
    /// The transaction the confirming client shows; must be the session's.
    #[serde(default)]
    #[schema(value_type = Option<TransactionDoc>)]
    pub confirm: Option<Transaction>,
}

/// Answer of a successful verification.
#[derive(Clone, Serialize, Deserialize)]
pub struct VerifyResponse {
    /// The session afterwards.
    pub session: SessionView,
    /// A login's access token (once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

/// `?user=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserQuery {
    /// Whose.
    pub user: String,
}

/// `?from=&to=` (RFC 3339; default: the last 31 days).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeriodQuery {
    /// From (inclusive).
    pub from: Option<String>,
    /// To (exclusive).
    pub to: Option<String>,
}

/// `PUT /v1/oob/rules/{owner}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    /// Amounts above this need out-of-band confirmation (`"50.00 EUR"`).
    #[serde(with = "amount_text")]
    #[schema(value_type = String, example = "9.90 EUR")]
    pub secured_above: Amount,
    /// Whose side the rule is on: `payee` (payments to the owner, the default) or `payer`
    /// (payments by the owner).
    #[serde(default)]
    pub side: RuleSide,
}

/// The side of a payment a threshold rule is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleSide {
    /// Payments to the owner (the merchant's rule; `operator` is the default for everyone).
    #[default]
    Payee,
    /// Payments by the owner, whoever is paid.
    Payer,
}

/// `POST /v1/offers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferRequest {
    /// For whom.
    pub recipient: String,
    /// Subject.
    pub subject: String,
    /// Text.
    pub body: String,
}

/// `POST /v1/trustee/settle`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettleRequest {
    /// Settle lines made before this time (RFC 3339; default now).
    #[serde(default)]
    pub until: Option<String>,
}

/// A second-channel address of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressView {
    /// Its id.
    pub id: Id,
    /// Whose.
    pub user_id: String,
    /// `email`, `sms`, `webhook` or `dev`.
    pub channel: String,
    /// Where.
    pub address: String,
    /// When the user proved it receives there; unverified addresses get only the code that
    /// verifies them.
    pub verified_at: Option<Timestamp>,
    /// When it was added.
    pub created_at: Timestamp,
}

/// A certificate kept for a user: a node-signed record (JSON) of what a session certified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateView {
    /// Its id.
    pub id: Id,
    /// The session number, hex.
    pub session: String,
    /// Whose.
    pub user_id: String,
    /// What it certifies (`transfer`, `payment`, `mail_deposit`, `mail_retrieval`, …).
    pub kind: String,
    /// The node-signed record (verify it with the node's key).
    pub body: SignedRecord,
    /// When.
    pub created_at: Timestamp,
}

/// A registered mail or an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailView {
    /// Its id.
    pub id: Id,
    /// `registered` or `offer`.
    pub kind: String,
    /// Who deposited it.
    pub sender: String,
    /// For whom.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Text (withheld until retrieved).
    pub body: String,
    /// Deposited.
    pub deposited_at: Timestamp,
    /// Retrieved by the recipient, after authenticating.
    pub retrieved_at: Option<Timestamp>,
}

/// One line of a user's billing register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterLine {
    /// Its id.
    pub id: Id,
    /// Whose register.
    pub user_id: String,
    /// The session, hex.
    pub session: String,
    /// `login`, `transfer`, `payment`, `trustee`, `bet`, …
    pub kind: String,
    /// Amount in minor units (0 for sessions billed by time).
    pub amount_minor: i64,
    /// ISO-4217 code, empty for sessions billed by time.
    pub currency: String,
    /// Seconds from opening to verification.
    pub duration_s: i64,
    /// Who was paid, as shown.
    pub payee: String,
    /// The payee's account, if any.
    pub payee_account: Option<Id>,
    /// What for.
    pub description: String,
    /// When.
    pub created_at: Timestamp,
    /// For trustee entries: when the operator paid the merchant.
    pub settled_at: Option<Timestamp>,
    /// For trustee entries: the payout transfer.
    pub settlement_id: Option<Id>,
}

/// `POST /v1/subscribers/{user}/certificate`: the certificate and its key, once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub certificate: String,
    /// Its private key, PKCS#8 PEM (returned once).
    pub private_key: String,
}

/// `GET /v1/oob/whoami`: the user an access token was granted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The user.
    pub user: String,
    /// Until when the token works.
    pub expires_at: Timestamp,
}

/// `POST /v1/offers`: the deposited offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferDeposited {
    /// The offer's mail id.
    pub id: Id,
}

debug_hiding!(VerifyResponse { session } hides { access_token });

debug_hiding!(IssuedCertificate { certificate } hides { private_key });

/// The schema of [`Transaction`] (a `proto` type, which does not depend on utoipa); a test
/// checks the two have the same fields.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only
pub struct TransactionDoc {
    /// The amount in minor units and its currency.
    amount: crate::ledger::Money,
    /// Account debited, when known at this point.
    payer_account: Option<Uuid>,
    /// Who is paid, as shown to the user.
    payee: String,
    /// Account credited, when known.
    payee_account: Option<Uuid>,
    /// What is being bought or certified.
    description: String,
}
