//! Out-of-band authentication (WO 99/23617, SPEC A1–A7) on the node: the driver of
//! [`tally_proto::oob::Session`] and the applications a verified session runs.
//!
//! A session is opened on channel A (the API, the CLI or the web page) for a user and an
//! application; the machine makes the code, bound to the session number, the time and what
//! is being authorised; the code goes out on channel B through the outbox with the transaction
//! in clear (the code by reference, computed only at delivery); the user types it back on
//! channel A, and the application's effect runs in the same step.
//!
//! * [`open`]: planning a session from a request (who may open what, the threshold rule,
//!   channel B) and its opening step.
//! * [`gate`]: the threshold rule on every other path that moves a user's money (a
//!   confirmation session, used up by the payment it confirmed).
//! * [`verify`]: codes, cancellation and timeouts, each a step of the machine.
//! * [`apps`]: what each application does once its session verified.
//! * [`directory`]: subscribers and their addresses, certificates, threshold rules, the
//!   mailbox, statements and the trustee settlement.
//!
//! Decisions:
//! * Every open, wrong code, lock, expiry and success is one step whose journal entry commits
//!   with the session row under a guard on the state the decision was made from. So "code
//!   verified" and "hold posted" are one transaction, and with several nodes on one database
//!   two verifications of one session cannot both succeed: the database decides, the loser
//!   re-reads and is refused.
//! * Payments place the "bank authorisation" hold when the session opens; it is posted on the
//!   right code and released when the session locks, is cancelled or times out (the timer
//!   sweeper feeds the machine its timeout).
//! * The code key lives in the data directory (`oob.key`), never in the database, so a
//!   database leak leaks no live codes; the database keeps its fingerprint, so a node started
//!   with another key refuses to run instead of sending codes nobody can verify.
//! * Every node-signed certificate is a [`tally_kernel::crypto::canonical::SignedRecord`]
//!   under the node's Ed25519 key.

pub mod apps;
pub mod directory;
pub mod gate;
pub mod guest;
pub mod open;
pub mod trustee;
pub mod verify;

use crate::Missing;
use crate::access::corrupt;
use crate::core::Core;
use crate::identity::{Made, node_secret};
use crate::{Result, ServiceError};
use serde::{Deserialize, Serialize};
use tally_kernel::{Amount, Id, Secret, Timestamp};
use tally_proto::oob::{OobError, Policy, Session};
use tally_store::oob::SessionRow;

pub use tally_wire::oob::{
    AddressView, AppRequest, CertificateView, MailView, OpenSession, Opened, Payout, RegisterLine,
    SessionView, Statement,
};
pub use verify::Verified;

/// How a sign-in's access token begins (the rest is 32 random bytes, hex).
pub const SESSION_TOKEN_PREFIX: &str = "tally_session_";

/// Domain of the certificates of verified sessions.
pub const CERTIFICATE_DOMAIN: &str = "tally/oob-certificate/v1";
/// Most bytes of a registered mail, declaration or offer body.
pub const BODY_LEN_MAX: usize = 16 * 1024;

/// How out-of-band authentication behaves on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OobSettings {
    /// Code length, lifetime and attempts.
    pub policy: Policy,
    /// Lifetime of a login's access token, seconds.
    pub token_ttl_s: i64,
    /// Most sessions one address may receive per `quota_window_s`.
    pub address_quota: i64,
    /// The window of `address_quota`, `client_quota` and `node_quota`, seconds.
    pub quota_window_s: i64,
    /// Most codes one user may be sent per day (every application).
    pub user_daily_quota: i64,
    /// Most anonymous sign-ins and address verifications one client address may ask for per
    /// window.
    pub client_quota: i64,
    /// Most anonymous sign-ins and address verifications the node sends per window.
    pub node_quota: i64,
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
            user_daily_quota: 200,
            client_quota: 30,
            node_quota: 2000,
            trustee_fee_bps: 150,
            hold_grace_s: 120,
        }
    }
}

/// Out-of-band authentication on this node: the code key and settings.
pub struct Oob {
    core: Core,
    key: Secret<Vec<u8>>,
    settings: OobSettings,
}

/// What the session stores besides the protocol state (which already holds the accounts and
/// payee shown; a payment's hold is found through the journal, see [`Oob::hold_of`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub(crate) app: AppRequest,
    /// Address verification: the address.
    #[serde(default)]
    pub(crate) address_id: Option<Id>,
}

/// A code message's delivery state and last error.
pub(crate) struct Delivery(pub(crate) String, pub(crate) Option<String>);

impl Oob {
    /// Loads `oob.key` (creating it on first start) and checks it against the database.
    pub(crate) async fn load(core: Core, settings: OobSettings, made: &mut Made) -> Result<Oob> {
        let key = node_secret(core.files(), core.store(), "oob.key", "oob_key_id", made).await?;
        Ok(Oob {
            core,
            key,
            settings,
        })
    }

    fn key(&self) -> &[u8] {
        self.key.expose()
    }

    /// The out-of-band settings.
    pub fn settings(&self) -> &OobSettings {
        &self.settings
    }

    /// The code of a session, recomputed from the session and the code key, for a message
    /// that carries it by reference (never stored).
    pub(crate) async fn code_of(&self, session_hex: &str) -> Result<Secret<String>> {
        let row = self.session_row(session_hex).await?;
        let session = machine(&row)?;
        session.code(self.key()).map_err(ServiceError::Oob)
    }

    /// The hold of a session that places one (a payment, a trustee payment), pending or not:
    /// the transfer its opening step made (found through the journal entry of that step, so
    /// it is never missing after a crash).
    pub(crate) async fn hold_of(&self, row: &SessionRow) -> Result<Option<Id>> {
        if !matches!(
            machine(row)?.money,
            Some(tally_proto::oob::Money::Hold { .. })
        ) {
            return Ok(None);
        }
        self.core.transfer_made_by(&open_key(row)).await
    }

    async fn delivery(&self, hex_number: &str) -> Result<Delivery> {
        Ok(self
            .core
            .store()
            .message(&format!(":oob:{hex_number}:code"))
            .await?
            .map_or_else(
                || Delivery("pending".into(), None),
                |m| Delivery(m.state, m.last_error),
            ))
    }

    /// The session as shown, with its code's delivery state and its hold.
    pub(crate) async fn present(&self, row: &SessionRow) -> Result<SessionView> {
        let delivery = self.delivery(&hex::encode(row.id)).await?;
        let hold = self.hold_of(row).await?;
        view(row, delivery, hold)
    }

    pub(crate) async fn session_row(&self, number: &str) -> Result<SessionRow> {
        let id = parse_number(number)?;
        self.core
            .store()
            .oob_session(&id)
            .await?
            .ok_or(ServiceError::NotFound {
                what: Missing::Session,
                id: number.chars().take(32).collect(),
            })
    }
}

/// The machine stored in a row.
pub(crate) fn machine(row: &SessionRow) -> Result<Session> {
    serde_json::from_str(&row.session).map_err(corrupt)
}

/// The idempotency key of a session's opening step.
pub(crate) fn open_key(row: &SessionRow) -> String {
    row.client_key
        .clone()
        .unwrap_or_else(|| format!(":oob_open:{}", hex::encode(row.id)))
}

/// `row` moved to the machine's state `next` at `now` (state, attempts, session JSON, next
/// wake-up).
pub(crate) fn advanced(row: &SessionRow, next: &Session, now: Timestamp) -> Result<SessionRow> {
    Ok(SessionRow {
        state: next.state,
        attempts: i64::from(next.attempts),
        session: serde_json::to_string(next).map_err(corrupt)?,
        updated_at: now,
        wake_at: next.poll_timeout(),
        ..row.clone()
    })
}

pub(crate) fn view(
    row: &SessionRow,
    delivery: Delivery,
    hold_id: Option<Id>,
) -> Result<SessionView> {
    let session = machine(row)?;
    Ok(SessionView {
        session: hex::encode(row.id),
        user: row.user_id.clone(),
        application: row.application.clone(),
        state: row.state,
        attempts_left: session.attempts_left(),
        expires_at: row.expires_at,
        channel: row.channel.clone(),
        address: crate::access::mask(&row.channel, &row.address),
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

fn parse_number(hex_number: &str) -> Result<[u8; 16]> {
    hex::decode(hex_number)
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .ok_or(ServiceError::NotFound {
            what: Missing::Session,
            id: "(malformed)".into(),
        })
}

pub(crate) fn oob(e: OobError) -> ServiceError {
    ServiceError::Oob(e)
}

/// A positive amount in the currency of both accounts.
pub(crate) fn check_money(
    amount: Amount,
    debit: tally_kernel::Currency,
    credit: tally_kernel::Currency,
) -> Result<()> {
    if amount.minor <= 0 {
        return Err(ServiceError::Ledger(
            tally_ledger::LedgerError::AmountNotPositive {
                amount_minor: amount.minor,
            },
        ));
    }
    if amount.currency != debit || amount.currency != credit {
        return Err(crate::access::invalid(
            "amount",
            "currency differs from the accounts'",
        ));
    }
    Ok(())
}
