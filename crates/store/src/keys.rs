//! API keys: only a SHA-256 hash of each key is stored. Keys are 256-bit random strings, so a
//! fast hash is enough (no password stretching needed) and lookups go by hash; the clear key
//! is shown once, when it is made. Keys are created and revoked through the ledger writer,
//! with a journal record in the same transaction, so the journal holds these changes too.

use crate::rows;
use crate::{Store, StoreError};
use sqlx::Row;
use tally_kernel::{Id, Timestamp};

/// A stored API key (without the key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyRecord {
    /// Key id (not secret).
    pub id: Id,
    /// `admin`, `merchant` or `customer`.
    pub role: String,
    /// The customer or merchant the key acts for (`operator` for admins).
    pub owner: String,
    /// A note for people.
    pub label: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

fn record(r: &sqlx::any::AnyRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: rows::id(&r.try_get::<Vec<u8>, _>("id")?)?,
        role: r.try_get("role")?,
        owner: r.try_get("owner")?,
        label: r.try_get("label")?,
        created_at: Timestamp(r.try_get("created_at")?),
        revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp),
    })
}

/// The guard of an admin key's revocation: another live admin key remains, counting the admin
/// keys revoked earlier in the same batch, so two revocations racing (from two nodes of one
/// database, too) cannot both remove the last but one.
pub fn another_admin_remains() -> crate::Attachment {
    crate::Attachment::Guard(crate::Guard {
        kind: crate::guarded::GuardKind::Count {
            // 1 - live admins + revoked in this batch < 0  ⇔  more than one would stay live.
            sql: "SELECT 1 - COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL",
            params: Vec::new(),
            bucket: "admin_key_revocations".into(),
            max: 0,
        },
        conflict: crate::Conflict::Limit("the last admin key cannot be revoked"),
    })
}

impl Store {
    /// The live (not revoked) key with this hash.
    pub async fn api_key_by_hash(
        &self,
        key_hash: &[u8; 32],
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT id, role, owner, label, created_at, revoked_at FROM api_keys \
                 WHERE key_hash = $1 AND revoked_at IS NULL"
                    .into(),
                vec![rows::Value::Blob(key_hash.to_vec())],
            )
            .await?;
        rows.first().map(record).transpose()
    }

    /// Whether `owner` holds a live (not revoked) key of `role`.
    pub async fn has_live_key(&self, owner: &str, role: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_keys \
             WHERE owner = $1 AND role = $2 AND revoked_at IS NULL",
        )
        .bind(owner.to_string())
        .bind(role.to_string())
        .fetch_one(self.pool())
        .await?;
        let n: i64 = sqlx::Row::try_get(&row, "n")?;
        Ok(n > 0)
    }

    /// All keys, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, role, owner, label, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record).collect()
    }
}

/// Stores a key by its hash, inside the writer's transaction (see `Attachment`).
pub(crate) async fn insert_api_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    key_hash: &[u8; 32],
    rec: &ApiKeyRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_keys (id, key_hash, role, owner, label, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(rec.id.as_bytes().to_vec())
    .bind(key_hash.to_vec())
    .bind(rec.role.clone())
    .bind(rec.owner.clone())
    .bind(rec.label.clone())
    .bind(rec.created_at.as_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Revokes a key inside the writer's transaction; revoking twice changes nothing.
pub(crate) async fn revoke_api_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: Id,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now.as_micros())
        .bind(id.as_bytes().to_vec())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
