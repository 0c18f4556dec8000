//! Tables of out-of-band authentication (SPEC A1–A7): the subscriber directory, sessions,
//! access tokens, certificates, the mailbox (registered mail, offers), billing registers,
//! threshold rules and node-wide settings.
//!
//! Writes are [`Attachment`]s of a ledger command, so each commits with the journal entry that
//! records it and only if that command succeeds. State that decides (a session's attempts and
//! state, a mail's retrieval, a register's settlement) changes under a [`Guard`] inside the
//! writer's transaction: with several nodes on one database, the database decides.
//! Reads are plain queries.

use crate::guarded::{Conflict, Guard, GuardKind, RowWrite};
use crate::rows::{Value, id as decode_id};
use crate::{Attachment, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use tally_kernel::{Id, Timestamp};
use tally_proto::oob::State;

pub(crate) fn blob(id: &Id) -> Value {
    Value::Blob(id.as_bytes().to_vec())
}

/// An inline statement (rare writes).
pub(crate) fn row(sql: &'static str, params: Vec<Value>) -> Attachment {
    Attachment::Row(RowWrite::Statement {
        sql,
        params,
        touches: None,
    })
}

/// A batched insert (hot writes).
pub(crate) fn insert(table: &'static str, columns: &'static str, values: Vec<Value>) -> Attachment {
    Attachment::Row(RowWrite::Insert {
        table,
        columns,
        values,
        tail: "",
        key: None,
    })
}

/// `SELECT COUNT(*)` + this batch's additions to `bucket` must stay below `max`.
pub(crate) fn count_below(
    sql: &'static str,
    params: Vec<Value>,
    bucket: String,
    max: i64,
    conflict: Conflict,
) -> Attachment {
    Attachment::Guard(Guard {
        kind: GuardKind::Count {
            sql,
            params,
            bucket,
            max,
        },
        conflict,
    })
}

/// Row `key` of `table` has these values.
pub(crate) fn row_is(
    table: &'static str,
    key_column: &'static str,
    key: Value,
    expect: Vec<(&'static str, Value)>,
    conflict: Conflict,
) -> Attachment {
    Attachment::Guard(Guard {
        kind: GuardKind::Row {
            table,
            key_column,
            key,
            expect,
        },
        conflict,
    })
}

pub(crate) fn opt_id(r: &AnyRow, name: &str) -> Result<Option<Id>, StoreError> {
    r.try_get::<Option<Vec<u8>>, _>(name)?
        .map(|b| decode_id(&b))
        .transpose()
}

// ----- subscribers -------------------------------------------------------------------------

/// A user of the directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscriber {
    /// The user's identifier (the invariant of the code).
    pub user_id: String,
    /// The stored account used by payments with contract.
    pub contract_account: Option<Id>,
    /// When the user was added.
    pub created_at: Timestamp,
}

/// A second-channel address of a user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Address {
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

/// Creates the subscriber or sets its contract account.
pub fn upsert_subscriber(
    user_id: &str,
    contract_account: Option<Id>,
    now: Timestamp,
) -> Attachment {
    row(
        "INSERT INTO subscribers (user_id, contract_account, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET contract_account = \
         COALESCE(excluded.contract_account, subscribers.contract_account)",
        vec![
            Value::Text(user_id.into()),
            Value::opt_id(contract_account),
            Value::Int(now.as_micros()),
        ],
    )
}

/// Adds an unverified address; the guard refuses one that another user already has.
pub fn insert_address(a: &Address) -> [Attachment; 2] {
    [
        count_below(
            "SELECT COUNT(*) FROM subscriber_addresses \
             WHERE channel = $1 AND address = $2 AND user_id <> $3",
            vec![
                Value::Text(a.channel.clone()),
                Value::Text(a.address.clone()),
                Value::Text(a.user_id.clone()),
            ],
            format!("address-owner:{}:{}:{}", a.channel, a.address, a.user_id),
            1,
            Conflict::Taken("the address belongs to another user"),
        ),
        row(
            "INSERT INTO subscriber_addresses (id, user_id, channel, address, verified_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (channel, address) DO NOTHING",
            vec![
                blob(&a.id),
                Value::Text(a.user_id.clone()),
                Value::Text(a.channel.clone()),
                Value::Text(a.address.clone()),
                Value::opt_int(a.verified_at.map(|t| t.as_micros())),
                Value::Int(a.created_at.as_micros()),
            ],
        ),
    ]
}

/// Marks an address verified.
pub fn verify_address(id: Id, now: Timestamp) -> Attachment {
    row(
        "UPDATE subscriber_addresses SET verified_at = $1 WHERE id = $2 AND verified_at IS NULL",
        vec![Value::Int(now.as_micros()), blob(&id)],
    )
}

/// Verifies an unverified address for `user`, moving it to `user` if someone else had
/// registered it without ever proving it: whoever types the code sent there holds the
/// address. Nothing happens to an address verified meanwhile.
pub fn claim_address(id: Id, user: &str, now: Timestamp) -> Attachment {
    row(
        "UPDATE subscriber_addresses SET user_id = $1, verified_at = $2 \
         WHERE id = $3 AND verified_at IS NULL",
        vec![
            Value::Text(user.to_string()),
            Value::Int(now.as_micros()),
            blob(&id),
        ],
    )
}

/// Removes an address.
pub fn delete_address(id: Id) -> Attachment {
    row(
        "DELETE FROM subscriber_addresses WHERE id = $1",
        vec![blob(&id)],
    )
}

const ADDRESS_SELECT: &str =
    "SELECT id, user_id, channel, address, verified_at, created_at FROM subscriber_addresses";

fn address(r: &AnyRow) -> Result<Address, StoreError> {
    Ok(Address {
        id: decode_id(&r.try_get::<Vec<u8>, _>("id")?)?,
        user_id: r.try_get("user_id")?,
        channel: r.try_get("channel")?,
        address: r.try_get("address")?,
        verified_at: r.try_get::<Option<i64>, _>("verified_at")?.map(Timestamp),
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

// ----- sessions ----------------------------------------------------------------------------

/// A stored session. `session` and `payload` are JSON owned by the service (the protocol
/// state of `tally_proto::oob::Session` and the application's data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The session number.
    pub id: [u8; 16],
    /// The user (the invariant).
    pub user_id: String,
    /// Owner of the API key that opened it, or `web`.
    pub opened_by: String,
    /// Which application.
    pub application: String,
    /// Where the session stands.
    pub state: State,
    /// Wrong codes so far.
    pub attempts: i64,
    /// Protocol state (JSON).
    pub session: String,
    /// Application data (JSON).
    pub payload: String,
    /// What verification produced (JSON), once verified.
    pub result: Option<String>,
    /// Channel B kind.
    pub channel: String,
    /// Channel B address.
    pub address: String,
    /// The opener's idempotency key (namespaced), if any.
    pub client_key: Option<String>,
    /// Opened.
    pub created_at: Timestamp,
    /// The code's expiry.
    pub expires_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When the session next needs a step without input (its machine's `poll_timeout`).
    pub wake_at: Option<Timestamp>,
}

const SESSION_SELECT: &str = "SELECT id, user_id, opened_by, application, state, attempts, session, \
     payload, result, channel, address, client_key, created_at, expires_at, updated_at, wake_at \
     FROM oob_sessions";

fn session(r: &AnyRow) -> Result<SessionRow, StoreError> {
    let id: Vec<u8> = r.try_get("id")?;
    Ok(SessionRow {
        id: id
            .try_into()
            .map_err(|_| StoreError::Corrupt("session id is not 16 bytes".into()))?,
        user_id: r.try_get("user_id")?,
        opened_by: r.try_get("opened_by")?,
        application: r.try_get("application")?,
        state: crate::rows::state(r, "state", State::parse)?,
        attempts: r.try_get("attempts")?,
        session: r.try_get("session")?,
        payload: r.try_get("payload")?,
        result: r.try_get("result")?,
        channel: r.try_get("channel")?,
        address: r.try_get("address")?,
        client_key: r.try_get("client_key")?,
        created_at: Timestamp(r.try_get("created_at")?),
        expires_at: Timestamp(r.try_get("expires_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
        wake_at: r.try_get::<Option<i64>, _>("wake_at")?.map(Timestamp),
    })
}

/// Inserts a new session, refused when `address` already had `quota` sessions opened since
/// `since` (a per-address limit decided in the database).
pub fn insert_session(s: &SessionRow, since: Timestamp, quota: i64) -> [Attachment; 2] {
    [
        Attachment::Guard(Guard {
            kind: GuardKind::Recent {
                table: "oob_sessions",
                a: ("channel", Value::Text(s.channel.clone())),
                b: ("address", Value::Text(s.address.clone())),
                time: ("created_at", since.as_micros()),
                bucket: format!("sessions:{}:{}", s.channel, s.address),
                max: quota,
            },
            conflict: Conflict::Limit("too many sessions for this address; try again later"),
        }),
        session_write(s, ""),
    ]
}

const SESSION_COLUMNS: &str = "id, user_id, opened_by, application, state, attempts, session, \
     payload, result, channel, address, client_key, created_at, expires_at, updated_at, wake_at";

fn session_write(s: &SessionRow, tail: &'static str) -> Attachment {
    Attachment::Row(RowWrite::Insert {
        table: "oob_sessions",
        columns: SESSION_COLUMNS,
        values: vec![
            Value::Blob(s.id.to_vec()),
            Value::Text(s.user_id.clone()),
            Value::Text(s.opened_by.clone()),
            Value::Text(s.application.clone()),
            Value::Text(s.state.as_str().into()),
            Value::Int(s.attempts),
            Value::Text(s.session.clone()),
            Value::Text(s.payload.clone()),
            Value::opt_text(s.result.clone()),
            Value::Text(s.channel.clone()),
            Value::Text(s.address.clone()),
            Value::opt_text(s.client_key.clone()),
            Value::Int(s.created_at.as_micros()),
            Value::Int(s.expires_at.as_micros()),
            Value::Int(s.updated_at.as_micros()),
            Value::opt_int(s.wake_at.map(|t| t.as_micros())),
        ],
        tail,
        key: Some(("id", Value::Blob(s.id.to_vec()))),
    })
}

/// Moves a session from the state the caller read (`state`, `attempts` of `before`) to `after`.
/// If another request changed it first, the job fails with [`StoreError::Conflict`].
pub fn update_session(before: &SessionRow, after: &SessionRow) -> [Attachment; 2] {
    [
        row_is(
            "oob_sessions",
            "id",
            Value::Blob(before.id.to_vec()),
            vec![
                ("state", Value::Text(before.state.as_str().into())),
                ("attempts", Value::Int(before.attempts)),
            ],
            Conflict::Moved("the session changed meanwhile"),
        ),
        session_write(
            after,
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts, \
             session = excluded.session, result = excluded.result, updated_at = excluded.updated_at, \
             wake_at = excluded.wake_at",
        ),
    ]
}

/// A code about to be sent (a session opening), as the caps on sends count it.
#[derive(Debug, Clone)]
pub struct Send {
    /// The session.
    pub session: [u8; 16],
    /// Whose code.
    pub user: String,
    /// The client that asked, when known.
    pub client_ip: Option<String>,
    /// Counted by the per-client-address and node-wide caps (anonymous sign-ins and address
    /// verifications).
    pub capped: bool,
    /// When.
    pub at: Timestamp,
}

/// The caps a send must stay under, decided in the database.
#[derive(Debug, Clone, Copy)]
pub struct SendCaps {
    /// Codes per user since `day_since`.
    pub user_per_day: i64,
    /// A day ago.
    pub day_since: Timestamp,
    /// Capped sends per client address since `window_since`.
    pub per_client: i64,
    /// Capped sends on the whole node since `window_since`.
    pub per_node: i64,
    /// The start of the window.
    pub window_since: Timestamp,
}

/// The send's row and its guards: the user's daily cap, and for capped sends the client
/// address's and the node's.
pub fn record_send(s: &Send, caps: &SendCaps) -> Vec<Attachment> {
    // The user's and the client's counts are loaded once per write batch (the hot path: every
    // session opens with one); the node-wide count, for anonymous sign-ins only, runs inline.
    let recent = |a: (&'static str, Value), capped: bool, since: Timestamp, bucket, max, why| {
        Attachment::Guard(Guard {
            kind: GuardKind::Recent {
                table: "oob_sends",
                a,
                b: ("capped", Value::Int(i64::from(capped))),
                time: ("created_at", since.as_micros()),
                bucket,
                max,
            },
            conflict: Conflict::Limit(why),
        })
    };
    let mut out = Vec::new();
    if !s.capped {
        // Anonymous sends are bounded by the address, client and node caps instead: anyone
        // may ask the web page for a user's code, and must not use up the user's day.
        out.push(recent(
            ("user_id", Value::Text(s.user.clone())),
            false,
            caps.day_since,
            format!("sends:user:{}", s.user),
            caps.user_per_day,
            "too many codes for this user today; try again tomorrow",
        ));
    }
    if s.capped {
        if let Some(ip) = &s.client_ip {
            out.push(recent(
                ("client_ip", Value::Text(ip.clone())),
                true,
                caps.window_since,
                format!("sends:ip:{ip}"),
                caps.per_client,
                "too many codes requested from your address; try again later",
            ));
        }
        out.push(Attachment::Guard(Guard {
            kind: GuardKind::Count {
                sql: "SELECT COUNT(*) FROM oob_sends WHERE capped = 1 AND created_at >= $1",
                params: vec![Value::Int(caps.window_since.as_micros())],
                bucket: "sends:node".to_string(),
                max: caps.per_node,
            },
            conflict: Conflict::Limit(
                "the node is sending too many codes right now; try again later",
            ),
        }));
    }
    out.push(Attachment::Row(RowWrite::Insert {
        table: "oob_sends",
        columns: "session, user_id, client_ip, capped, created_at",
        values: vec![
            Value::Blob(s.session.to_vec()),
            Value::Text(s.user.clone()),
            Value::opt_text(s.client_ip.clone()),
            Value::Int(i64::from(s.capped)),
            Value::Int(s.at.as_micros()),
        ],
        tail: "",
        key: None,
    }));
    out
}

/// Revokes a sign-in's access token (by hash).
pub fn revoke_token(token_hash: [u8; 32]) -> Attachment {
    Attachment::Row(RowWrite::Statement {
        sql: "DELETE FROM oob_tokens WHERE token_hash = $1",
        params: vec![Value::Blob(token_hash.to_vec())],
        touches: None,
    })
}

/// Uses a verified confirmation session, once: the guard fails (`Conflict::Moved`) when the
/// session is not verified or was used meanwhile, so one confirmation moves money once.
pub fn use_session(id: [u8; 16], now: Timestamp) -> [Attachment; 2] {
    [
        row_is(
            "oob_sessions",
            "id",
            Value::Blob(id.to_vec()),
            vec![
                ("state", Value::Text(State::Verified.as_str().into())),
                ("used_at", Value::NullInt),
            ],
            Conflict::Moved("the confirmation was used meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE oob_sessions SET used_at = $2 WHERE id = $1",
            params: vec![Value::Blob(id.to_vec()), Value::Int(now.as_micros())],
            touches: Some(("oob_sessions", Value::Blob(id.to_vec()))),
        }),
    ]
}

// ----- tokens, certificates ----------------------------------------------------------------

/// A login session's access token (by hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// SHA-256 of the token.
    pub token_hash: [u8; 32],
    /// Whose.
    pub user_id: String,
    /// The session that granted it.
    pub session_id: [u8; 16],
    /// Until when.
    pub expires_at: Timestamp,
}

/// Stores an access token.
pub fn insert_token(t: &TokenRow) -> Attachment {
    insert(
        "oob_tokens",
        "token_hash, user_id, session_id, expires_at",
        vec![
            Value::Blob(t.token_hash.to_vec()),
            Value::Text(t.user_id.clone()),
            Value::Blob(t.session_id.to_vec()),
            Value::Int(t.expires_at.as_micros()),
        ],
    )
}

/// A certificate kept for a user: a node-signed record (JSON) of what a session certified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertificateRow {
    /// Its id.
    pub id: Id,
    /// The session number, hex.
    pub session: String,
    /// Whose.
    pub user_id: String,
    /// What it certifies (`transfer`, `payment`, `mail_deposit`, `mail_retrieval`, …).
    pub kind: String,
    /// The signed record (JSON).
    pub body: serde_json::Value,
    /// When.
    pub created_at: Timestamp,
}

/// Keeps a certificate.
pub fn insert_certificate(c: &CertificateRow) -> Result<Attachment, StoreError> {
    let session = hex::decode(&c.session)
        .map_err(|_| StoreError::Corrupt("certificate session is not hex".into()))?;
    Ok(insert(
        "certificates",
        "id, session_id, user_id, kind, body, created_at",
        vec![
            blob(&c.id),
            Value::Blob(session),
            Value::Text(c.user_id.clone()),
            Value::Text(c.kind.clone()),
            Value::Text(c.body.to_string()),
            Value::Int(c.created_at.as_micros()),
        ],
    ))
}

fn certificate(r: &AnyRow) -> Result<CertificateRow, StoreError> {
    let body: String = r.try_get("body")?;
    Ok(CertificateRow {
        id: decode_id(&r.try_get::<Vec<u8>, _>("id")?)?,
        session: hex::encode(r.try_get::<Vec<u8>, _>("session_id")?),
        user_id: r.try_get("user_id")?,
        kind: r.try_get("kind")?,
        body: serde_json::from_str(&body)
            .map_err(|_| StoreError::Corrupt("certificate body".into()))?,
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

// ----- mailbox -----------------------------------------------------------------------------

/// A registered mail or an offer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mail {
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
    /// Text (withheld from listings).
    pub body: String,
    /// Deposited.
    pub deposited_at: Timestamp,
    /// Retrieved by the recipient, after authenticating.
    pub retrieved_at: Option<Timestamp>,
}

/// Deposits a mail.
pub fn insert_mail(m: &Mail) -> Attachment {
    insert(
        "mailbox",
        "id, kind, sender, recipient, subject, body, deposited_at, retrieved_at",
        vec![
            blob(&m.id),
            Value::Text(m.kind.clone()),
            Value::Text(m.sender.clone()),
            Value::Text(m.recipient.clone()),
            Value::Text(m.subject.clone()),
            Value::Text(m.body.clone()),
            Value::Int(m.deposited_at.as_micros()),
            Value::opt_int(m.retrieved_at.map(|t| t.as_micros())),
        ],
    )
}

/// Marks mails retrieved (those not retrieved yet).
pub fn mark_retrieved(id: Id, now: Timestamp) -> Attachment {
    row(
        "UPDATE mailbox SET retrieved_at = $1 WHERE id = $2 AND retrieved_at IS NULL",
        vec![Value::Int(now.as_micros()), blob(&id)],
    )
}

const MAIL_SELECT: &str =
    "SELECT id, kind, sender, recipient, subject, body, deposited_at, retrieved_at FROM mailbox";

fn mail(r: &AnyRow) -> Result<Mail, StoreError> {
    Ok(Mail {
        id: decode_id(&r.try_get::<Vec<u8>, _>("id")?)?,
        kind: r.try_get("kind")?,
        sender: r.try_get("sender")?,
        recipient: r.try_get("recipient")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        deposited_at: Timestamp(r.try_get("deposited_at")?),
        retrieved_at: r.try_get::<Option<i64>, _>("retrieved_at")?.map(Timestamp),
    })
}

// ----- registers ---------------------------------------------------------------------------

/// One line of a user's billing register.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegisterEntry {
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

/// Adds a register line.
pub fn insert_register(e: &RegisterEntry) -> Result<Attachment, StoreError> {
    let session = hex::decode(&e.session)
        .map_err(|_| StoreError::Corrupt("register session is not hex".into()))?;
    Ok(insert(
        "registers",
        "id, user_id, session_id, kind, amount_minor, currency, duration_s, payee, \
         payee_account, description, created_at, settled_at, settlement_id",
        vec![
            blob(&e.id),
            Value::Text(e.user_id.clone()),
            Value::Blob(session),
            Value::Text(e.kind.clone()),
            Value::Int(e.amount_minor),
            Value::Text(e.currency.clone()),
            Value::Int(e.duration_s),
            Value::Text(e.payee.clone()),
            Value::opt_id(e.payee_account),
            Value::Text(e.description.clone()),
            Value::Int(e.created_at.as_micros()),
            Value::NullInt,
            Value::NullBlob,
        ],
    ))
}

/// Marks one unsettled register line settled by `settlement`; the guard makes a second
/// settlement of the same line fail.
pub fn settle_register(id: Id, settlement: Id, now: Timestamp) -> [Attachment; 2] {
    [
        row_is(
            "registers",
            "id",
            blob(&id),
            vec![("settled_at", Value::NullInt)],
            Conflict::Moved("the register line was settled meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE registers SET settled_at = $1, settlement_id = $2 WHERE id = $3",
            params: vec![Value::Int(now.as_micros()), blob(&settlement), blob(&id)],
            touches: Some(("registers", blob(&id))),
        }),
    ]
}

const REGISTER_SELECT: &str = "SELECT id, user_id, session_id, kind, amount_minor, currency, \
     duration_s, payee, payee_account, description, created_at, settled_at, settlement_id FROM registers";

fn register(r: &AnyRow) -> Result<RegisterEntry, StoreError> {
    Ok(RegisterEntry {
        id: decode_id(&r.try_get::<Vec<u8>, _>("id")?)?,
        user_id: r.try_get("user_id")?,
        session: hex::encode(r.try_get::<Vec<u8>, _>("session_id")?),
        kind: r.try_get("kind")?,
        amount_minor: r.try_get("amount_minor")?,
        currency: r.try_get("currency")?,
        duration_s: r.try_get("duration_s")?,
        payee: r.try_get("payee")?,
        payee_account: opt_id(r, "payee_account")?,
        description: r.try_get("description")?,
        created_at: Timestamp(r.try_get("created_at")?),
        settled_at: r.try_get::<Option<i64>, _>("settled_at")?.map(Timestamp),
        settlement_id: opt_id(r, "settlement_id")?,
    })
}

// ----- rules -------------------------------------------------------------------------------

/// Sets a threshold rule (a payee's, or `operator`'s default).
pub fn upsert_rule(
    owner: &str,
    currency: &str,
    secured_above_minor: i64,
    now: Timestamp,
) -> Attachment {
    threshold_row(
        "INSERT INTO oob_rules (owner, currency, secured_above_minor, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (owner, currency) DO UPDATE SET secured_above_minor = excluded.secured_above_minor, \
         updated_at = excluded.updated_at",
        [owner, currency],
        secured_above_minor,
        now,
    )
}

/// Sets a payer's own threshold.
pub fn upsert_payer_rule(
    owner: &str,
    currency: &str,
    secured_above_minor: i64,
    now: Timestamp,
) -> Attachment {
    threshold_row(
        "INSERT INTO oob_payer_rules (owner, currency, secured_above_minor, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (owner, currency) DO UPDATE SET secured_above_minor = excluded.secured_above_minor, \
         updated_at = excluded.updated_at",
        [owner, currency],
        secured_above_minor,
        now,
    )
}

fn threshold_row(
    sql: &'static str,
    [owner, currency]: [&str; 2],
    secured_above_minor: i64,
    now: Timestamp,
) -> Attachment {
    row(
        sql,
        vec![
            Value::Text(owner.into()),
            Value::Text(currency.into()),
            Value::Int(secured_above_minor),
            Value::Int(now.as_micros()),
        ],
    )
}

// ----- reads -------------------------------------------------------------------------------

impl Store {
    /// A subscriber.
    pub async fn subscriber(&self, user_id: &str) -> Result<Option<Subscriber>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT user_id, contract_account, created_at FROM subscribers WHERE user_id = $1"
                    .into(),
                vec![Value::Text(user_id.into())],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(Subscriber {
                    user_id: r.try_get("user_id")?,
                    contract_account: opt_id(r, "contract_account")?,
                    created_at: Timestamp(r.try_get("created_at")?),
                })
            })
            .transpose()
    }

    /// A user's addresses, oldest first.
    pub async fn addresses_of(&self, user_id: &str) -> Result<Vec<Address>, StoreError> {
        let sql = format!("{ADDRESS_SELECT} WHERE user_id = $1 ORDER BY created_at, id");
        let rows = self
            .fetch_all(sql, vec![Value::Text(user_id.into())])
            .await?;
        rows.iter().map(address).collect()
    }

    /// The address row for a channel and address, whoever has it.
    pub async fn address(&self, channel: &str, addr: &str) -> Result<Option<Address>, StoreError> {
        let sql = format!("{ADDRESS_SELECT} WHERE channel = $1 AND address = $2");
        let rows = self
            .fetch_all(
                sql,
                vec![Value::Text(channel.into()), Value::Text(addr.into())],
            )
            .await?;
        rows.first().map(address).transpose()
    }

    /// The event of the journal entry made under an idempotency key.
    pub async fn journal_event(
        &self,
        key: &str,
    ) -> Result<Option<tally_ledger::Event>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT body FROM journal WHERE idempotency_key = $1".into(),
                vec![Value::Text(key.into())],
            )
            .await?;
        rows.first()
            .map(|r| {
                let body: Vec<u8> = r.try_get("body")?;
                tally_ledger::body::decode(&body).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .transpose()
    }

    /// One session by number.
    pub async fn oob_session(&self, number: &[u8; 16]) -> Result<Option<SessionRow>, StoreError> {
        let sql = format!("{SESSION_SELECT} WHERE id = $1");
        let rows = self
            .fetch_all(sql, vec![Value::Blob(number.to_vec())])
            .await?;
        rows.first().map(session).transpose()
    }

    /// The session opened with a (namespaced) idempotency key.
    pub async fn oob_session_by_key(&self, key: &str) -> Result<Option<SessionRow>, StoreError> {
        let sql = format!("{SESSION_SELECT} WHERE client_key = $1");
        let rows = self.fetch_all(sql, vec![Value::Text(key.into())]).await?;
        rows.first().map(session).transpose()
    }

    /// Sessions whose machine is due for a step at `now` (`wake_at` passed), earliest first.
    pub async fn due_sessions(
        &self,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let sql = format!(
            "{SESSION_SELECT} WHERE wake_at IS NOT NULL AND wake_at <= $1 ORDER BY wake_at LIMIT $2"
        );
        let rows = self
            .fetch_all(sql, vec![Value::Int(now.as_micros()), Value::Int(limit)])
            .await?;
        rows.iter().map(session).collect()
    }

    /// A user's sessions, newest first.
    pub async fn oob_sessions_of(
        &self,
        user_id: &str,
        limit: i64,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let sql = format!("{SESSION_SELECT} WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2");
        let rows = self
            .fetch_all(sql, vec![Value::Text(user_id.into()), Value::Int(limit)])
            .await?;
        rows.iter().map(session).collect()
    }

    /// The live token with this hash: (user, expiry).
    pub async fn oob_token(
        &self,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<(String, Timestamp)>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT user_id, expires_at FROM oob_tokens WHERE token_hash = $1 AND expires_at > $2"
                    .into(),
                vec![Value::Blob(token_hash.to_vec()), Value::Int(now.as_micros())],
            )
            .await?;
        rows.first()
            .map(|r| Ok((r.try_get("user_id")?, Timestamp(r.try_get("expires_at")?))))
            .transpose()
    }

    /// A user's certificates, newest first.
    pub async fn certificates_of(
        &self,
        user_id: &str,
        limit: i64,
    ) -> Result<Vec<CertificateRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT id, session_id, user_id, kind, body, created_at FROM certificates \
                 WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
                    .into(),
                vec![Value::Text(user_id.into()), Value::Int(limit)],
            )
            .await?;
        rows.iter().map(certificate).collect()
    }

    /// One mail.
    pub async fn mail(&self, id: Id) -> Result<Option<Mail>, StoreError> {
        let sql = format!("{MAIL_SELECT} WHERE id = $1");
        let rows = self.fetch_all(sql, vec![blob(&id)]).await?;
        rows.first().map(mail).transpose()
    }

    /// Mail for or from `user`, newest first.
    pub async fn mail_of(&self, user: &str, limit: i64) -> Result<Vec<Mail>, StoreError> {
        let sql = format!(
            "{MAIL_SELECT} WHERE recipient = $1 OR sender = $1 ORDER BY deposited_at DESC, id DESC LIMIT $2"
        );
        let rows = self
            .fetch_all(sql, vec![Value::Text(user.into()), Value::Int(limit)])
            .await?;
        rows.iter().map(mail).collect()
    }

    /// Offers for `user` not yet opened, oldest first.
    pub async fn unread_offers(&self, user: &str) -> Result<Vec<Mail>, StoreError> {
        let sql = format!(
            "{MAIL_SELECT} WHERE recipient = $1 AND kind = 'offer' AND retrieved_at IS NULL \
             ORDER BY deposited_at, id LIMIT 100"
        );
        let rows = self.fetch_all(sql, vec![Value::Text(user.into())]).await?;
        rows.iter().map(mail).collect()
    }

    /// A user's register lines in `[from, to)`, oldest first.
    pub async fn register_of(
        &self,
        user_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RegisterEntry>, StoreError> {
        let sql = format!(
            "{REGISTER_SELECT} WHERE user_id = $1 AND created_at >= $2 AND created_at < $3 \
             ORDER BY created_at, id"
        );
        let rows = self
            .fetch_all(
                sql,
                vec![
                    Value::Text(user_id.into()),
                    Value::Int(from.as_micros()),
                    Value::Int(to.as_micros()),
                ],
            )
            .await?;
        rows.iter().map(register).collect()
    }

    /// Trustee lines not yet paid out, made before `until`, oldest first.
    pub async fn unsettled_trustee(
        &self,
        until: Timestamp,
        limit: i64,
    ) -> Result<Vec<RegisterEntry>, StoreError> {
        let sql = format!(
            "{REGISTER_SELECT} WHERE kind = 'trustee' AND settled_at IS NULL AND created_at < $1 \
             ORDER BY created_at, id LIMIT $2"
        );
        let rows = self
            .fetch_all(sql, vec![Value::Int(until.as_micros()), Value::Int(limit)])
            .await?;
        rows.iter().map(register).collect()
    }

    /// The threshold of `owner` as a payee for `currency`, if set.
    pub async fn rule(&self, owner: &str, currency: &str) -> Result<Option<i64>, StoreError> {
        self.threshold("oob_rules", owner, currency).await
    }

    /// The threshold of `owner` as a payer for `currency`, if set.
    pub async fn payer_rule(&self, owner: &str, currency: &str) -> Result<Option<i64>, StoreError> {
        self.threshold("oob_payer_rules", owner, currency).await
    }

    async fn threshold(
        &self,
        table: &str,
        owner: &str,
        currency: &str,
    ) -> Result<Option<i64>, StoreError> {
        let rows = self
            .fetch_all(
                format!(
                    "SELECT secured_above_minor FROM {table} WHERE owner = $1 AND currency = $2"
                ),
                vec![Value::Text(owner.into()), Value::Text(currency.into())],
            )
            .await?;
        rows.first()
            .map(|r| Ok(r.try_get("secured_above_minor")?))
            .transpose()
    }

    /// The threshold rules (at most `limit`): `(payer, owner, currency, secured_above_minor)`,
    /// `payer` false for a payee's rule (the operator's is the default for every payee).
    pub async fn rules(&self, limit: i64) -> Result<Vec<(bool, String, String, i64)>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT CAST(0 AS BIGINT) AS payer, owner, currency, secured_above_minor \
                 FROM oob_rules \
                 UNION ALL \
                 SELECT CAST(1 AS BIGINT) AS payer, owner, currency, secured_above_minor \
                 FROM oob_payer_rules \
                 ORDER BY owner, currency, payer LIMIT $1"
                    .into(),
                vec![Value::Int(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("payer")? != 0,
                    r.try_get("owner")?,
                    r.try_get("currency")?,
                    r.try_get("secured_above_minor")?,
                ))
            })
            .collect()
    }

    /// When a confirmation session was used by the payment it confirmed, if it was.
    pub async fn session_used_at(&self, id: [u8; 16]) -> Result<Option<Timestamp>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT used_at FROM oob_sessions WHERE id = $1".into(),
                vec![Value::Blob(id.to_vec())],
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| r.try_get::<Option<i64>, _>("used_at"))
            .transpose()?
            .flatten()
            .map(Timestamp))
    }

    /// Stores `value` under `name` unless a value is there, and returns the stored value:
    /// the first process to start decides, the others must agree.
    pub async fn setting_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        sqlx::query(
            "INSERT INTO node_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.to_string())
        .bind(value.to_vec())
        .execute(self.pool())
        .await?;
        let (stored,): (Vec<u8>,) =
            sqlx::query_as("SELECT value FROM node_settings WHERE name = $1")
                .bind(name.to_string())
                .fetch_one(self.pool())
                .await?;
        Ok(stored)
    }
}
