//! The transactional outbox: messages to people are rows written in the same transaction as
//! the state change that caused them, and delivered afterwards by a worker.
//!
//! Delivery is at-least-once: a worker leases due rows (moving `next_attempt_at` forward so
//! another process skips them; `FOR UPDATE SKIP LOCKED` on PostgreSQL), delivers, then marks
//! them sent, or schedules a retry with exponential backoff, or gives up after
//! `ATTEMPTS_MAX`. A crash between delivery and marking means one more delivery; each message
//! carries a stable `dedup_key` so receivers can drop the repeat, and the same key can never
//! be enqueued twice.
//!
//! Messages for the development inbox (`kind = 'dev'`) are "delivered" by marking them sent:
//! the row itself is the inbox, readable through [`Store::dev_inbox`].

use crate::rows::{self, Value};
use crate::{Dialect, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use tally_kernel::{Id, Timestamp};
pub use tally_proto::effects::SecretRef;

/// Attempts before a message is marked failed.
pub const ATTEMPTS_MAX: i64 = 8;
/// How long a message to a peer node stays leased to the worker sending it, seconds (its
/// request times out after 10).
pub const PEER_LEASE_S: i64 = 15;
/// Attempts before a message to a peer node is marked failed (about a week at one a minute).
pub const PEER_ATTEMPTS_MAX: i64 = 10_080;
/// Longest subject/address we store, in bytes.
pub const FIELD_LEN_MAX: usize = 1024;
/// Longest body we store, in bytes.
pub const BODY_LEN_MAX: usize = 64 * 1024;

pub(crate) const COLUMNS: &str = "id, dedup_key, kind, address, subject, body, data, state, attempts, next_attempt_at, created_at, secret";
pub(crate) const WIDTH: usize = 12;

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewMessage {
    /// Stable across retries; the same key is enqueued once only.
    pub dedup_key: String,
    /// `email`, `webhook`, `sms` or `dev`.
    pub kind: String,
    /// Where to: an e-mail address, URL, E.164 number, or dev-inbox name.
    pub address: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// Structured payload (JSON) for webhooks.
    pub data: serde_json::Value,
    /// The secret the body needs (its placeholder is replaced at delivery), if any. Only a
    /// reference is stored, never the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    /// Not delivered before then (the pad relay's release time); `None`: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
}

impl NewMessage {
    pub(crate) fn values(&self, now: Timestamp) -> Vec<Value> {
        vec![
            Value::Blob(Id::new().as_bytes().to_vec()),
            Value::Text(self.dedup_key.clone()),
            Value::Text(self.kind.clone()),
            Value::Text(self.address.clone()),
            Value::Text(self.subject.clone()),
            Value::Text(self.body.clone()),
            Value::Text(self.data.to_string()),
            // The dev inbox is the outbox itself: a `dev` message is delivered when it commits.
            Value::Text(
                if self.kind == "dev" {
                    "sent"
                } else {
                    "pending"
                }
                .into(),
            ),
            Value::Int(0),
            Value::Int(self.not_before.unwrap_or(now).as_micros()),
            Value::Int(now.as_micros()),
            self.secret
                .as_ref()
                .and_then(|s| serde_json::to_string(s).ok())
                .map_or(Value::NullText, Value::Text),
        ]
    }

    /// Checks sizes before anything is written.
    pub fn validate(&self) -> Result<(), StoreError> {
        // PostgreSQL's TEXT refuses NUL; the short fields take no control characters at all.
        let control = |v: &str| v.chars().any(char::is_control);
        if control(&self.dedup_key)
            || control(&self.address)
            || control(&self.kind)
            || self.subject.contains('\0')
            || self.body.contains('\0')
        {
            return Err(StoreError::Ledger(tally_ledger::LedgerError::Invalid {
                field: "message".into(),
                reason: "control characters in a key or address, or NUL in the text".into(),
            }));
        }
        let too_long = self.dedup_key.len() > FIELD_LEN_MAX
            || self.address.len() > FIELD_LEN_MAX
            || self.subject.len() > FIELD_LEN_MAX
            || self.body.len() > BODY_LEN_MAX;
        if too_long || self.dedup_key.is_empty() || self.address.is_empty() {
            return Err(StoreError::Ledger(tally_ledger::LedgerError::Invalid {
                field: "message".into(),
                reason: "empty key/address or a field too long".into(),
            }));
        }
        Ok(())
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredMessage {
    /// Row id.
    pub id: Id,
    /// The message.
    #[serde(flatten)]
    pub message: NewMessage,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// Last delivery error, if any.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When it was delivered.
    pub sent_at: Option<Timestamp>,
}

const SELECT: &str = "SELECT id, dedup_key, kind, address, subject, body, data, state, attempts, \
     last_error, created_at, sent_at, secret FROM outbox";

fn message(r: &AnyRow) -> Result<StoredMessage, StoreError> {
    let data: String = r.try_get("data")?;
    let secret = r
        .try_get::<Option<String>, _>("secret")?
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("outbox secret: {e}")))?;
    Ok(StoredMessage {
        id: rows::id(&r.try_get::<Vec<u8>, _>("id")?)?,
        message: NewMessage {
            dedup_key: r.try_get("dedup_key")?,
            kind: r.try_get("kind")?,
            address: r.try_get("address")?,
            subject: r.try_get("subject")?,
            body: r.try_get("body")?,
            data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            secret,
            not_before: None,
        },
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        created_at: Timestamp(r.try_get("created_at")?),
        sent_at: r.try_get::<Option<i64>, _>("sent_at")?.map(Timestamp),
    })
}

/// Writes `messages` inside an open transaction (the caller's state change commits with them).
pub async fn enqueue_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    messages: &[NewMessage],
    now: Timestamp,
) -> Result<(), StoreError> {
    for m in messages {
        m.validate()?;
        // One row: `$N` placeholders are cheap at this size and serve both dialects.
        let sql = rows::multi_insert(
            Dialect::Postgres,
            "outbox",
            COLUMNS,
            WIDTH,
            1,
            " ON CONFLICT (dedup_key) DO NOTHING",
        );
        rows::bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), m.values(now))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Leases up to `limit` due messages for `lease_s` seconds inside `tx`.
pub(crate) async fn claim_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    dialect: Dialect,
    now: Timestamp,
    limit: i64,
    lease_s: i64,
) -> Result<Vec<StoredMessage>, StoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let lock = match dialect {
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    // A message to a peer is one HTTP request of at most 10 s: its lease is short, so a node
    // killed while sending it sends it again soon after its restart.
    let sql = format!(
        "UPDATE outbox SET next_attempt_at = CASE WHEN kind = 'peer' THEN $4 ELSE $1 END \
         WHERE id IN (SELECT id FROM outbox \
         WHERE state = 'pending' AND next_attempt_at <= $2 ORDER BY next_attempt_at LIMIT $3{lock}) \
         RETURNING id, dedup_key, kind, address, subject, body, data, state, attempts, last_error, \
         created_at, sent_at, secret"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now.plus_seconds(lease_s).as_micros())
        .bind(now.as_micros())
        .bind(limit)
        .bind(now.plus_seconds(lease_s.min(PEER_LEASE_S)).as_micros())
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(message).collect()
}

/// Records deliveries inside `tx`.
pub(crate) async fn mark_sent_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ids: &[Id],
    now: Timestamp,
) -> Result<(), StoreError> {
    for chunk in ids.chunks(500) {
        // `$N` throughout: on SQLite a bare `?` after `$1` was bound to the first argument
        // (the time), so no row matched and delivered messages were leased and sent again.
        let list = rows::placeholders_from(Dialect::Postgres, 2, chunk.len());
        let sql = format!(
            "UPDATE outbox SET state = 'sent', sent_at = $1, attempts = attempts + 1 \
             WHERE state = 'pending' AND id IN ({list})"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now.as_micros());
        for id in chunk {
            query = query.bind(id.as_bytes().to_vec());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    /// Enqueues messages in a transaction of their own (for changes that are only messages).
    pub async fn enqueue(&self, messages: &[NewMessage], now: Timestamp) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        enqueue_in(&mut tx, messages, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Leases up to `limit` due messages for `lease_s` seconds and returns them (in the ledger
    /// writer's next transaction: see [`crate::writer`]).
    pub async fn claim_due(
        &self,
        now: Timestamp,
        limit: i64,
        lease_s: i64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.writer.claim(now, limit, lease_s).await
    }

    /// Records a successful delivery.
    pub async fn mark_sent(&self, id: Id, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET state = 'sent', sent_at = $1, attempts = attempts + 1 \
             WHERE id = $2 AND state = 'pending'",
        )
        .bind(now.as_micros())
        .bind(id.as_bytes().to_vec())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records several successful deliveries (in the ledger writer's next transaction).
    pub async fn mark_sent_many(&self, ids: &[Id], now: Timestamp) -> Result<(), StoreError> {
        self.writer.sent(ids.to_vec(), now).await
    }

    /// Records a failed attempt: retried later with backoff, or failed for good when
    /// `permanent` or out of attempts. Returns the new state.
    pub async fn mark_attempt_failed(
        &self,
        id: Id,
        now: Timestamp,
        error: &str,
        permanent: bool,
    ) -> Result<String, StoreError> {
        let row = sqlx::query("SELECT attempts, kind FROM outbox WHERE id = $1")
            .bind(id.as_bytes().to_vec())
            .fetch_one(self.pool())
            .await?;
        let attempts: i64 = row.try_get::<i64, _>("attempts")? + 1;
        // A peer node that is down is waited for (a week at most), and tried at least every
        // minute; it also wakes its messages when it is heard from again.
        let (most, backoff_s) = if row.try_get::<String, _>("kind")? == crate::federation::PEER_KIND
        {
            (PEER_ATTEMPTS_MAX, (1_i64 << attempts.min(6)))
        } else {
            (ATTEMPTS_MAX, 1_i64 << attempts.min(12))
        };
        let state = if permanent || attempts >= most {
            "failed"
        } else {
            "pending"
        };
        let error: String = error.chars().take(FIELD_LEN_MAX).collect();
        sqlx::query(
            "UPDATE outbox SET state = $1, attempts = $2, last_error = $3, next_attempt_at = $4 \
             WHERE id = $5 AND state = 'pending'",
        )
        .bind(state.to_string())
        .bind(attempts)
        .bind(error)
        .bind(now.plus_seconds(backoff_s).as_micros())
        .bind(id.as_bytes().to_vec())
        .execute(self.pool())
        .await?;
        Ok(state.to_string())
    }

    /// Messages in the outbox, in any state (the dev inbox included). Read-only; a test
    /// compares two counts to prove a refused request enqueued nothing.
    pub async fn outbox_len(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM outbox")
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }

    /// How many messages are `pending`, how many of those failed at least once (`retrying`),
    /// how many were `sent` and how many `failed` for good.
    pub async fn outbox_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, CAST(COUNT(*) AS BIGINT) FROM outbox GROUP BY state ORDER BY state",
        )
        .fetch_all(self.pool())
        .await?;
        let (retrying,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM outbox WHERE state = 'pending' AND attempts > 0",
        )
        .fetch_one(self.pool())
        .await?;
        // Every state, in the order a message goes through them (zero when none is there).
        let count = |state: &str| rows.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
        Ok(vec![
            ("pending".into(), count("pending")),
            ("retrying".into(), retrying),
            ("sent".into(), count("sent")),
            ("failed".into(), count("failed")),
        ])
    }

    /// The newest messages that failed for good or are being retried after a failure (at most
    /// `limit`), with their last error.
    pub async fn outbox_failures(&self, limit: i64) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "{SELECT} WHERE state = 'failed' OR (state = 'pending' AND attempts > 0) \
             ORDER BY created_at DESC LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(message).collect()
    }

    /// One message by dedup key.
    pub async fn message(&self, dedup_key: &str) -> Result<Option<StoredMessage>, StoreError> {
        let sql = format!("{SELECT} WHERE dedup_key = $1");
        let rows = self
            .fetch_all(sql, vec![Value::Text(dedup_key.to_string())])
            .await?;
        rows.first().map(message).transpose()
    }

    /// The development inbox of `address`: delivered `dev` messages, newest first.
    pub async fn dev_inbox(
        &self,
        address: &str,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "{SELECT} WHERE kind = 'dev' AND address = $1 AND state = 'sent' ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = self
            .fetch_all(
                sql,
                vec![Value::Text(address.to_string()), Value::Int(limit)],
            )
            .await?;
        rows.iter().map(message).collect()
    }
}
