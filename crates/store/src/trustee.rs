//! Trustee credit (SPEC A5, issue [6] item 2): where a user's trustee debt is booked. The
//! debt and its limit are a ledger account's counters and limit, so the ledger decides them
//! inside the write transaction; this table maps (user, currency) to that account.

use crate::oob::{blob, row};
use crate::rows::{Value, id as decode_id};
use crate::{Attachment, Store, StoreError};
use sqlx::Row;
use tally_kernel::{Id, Timestamp};

/// A user's trustee account in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrusteeCredit {
    /// The user.
    pub user_id: String,
    /// ISO-4217 code.
    pub currency: String,
    /// The ledger account holding the debt (owned by the operator).
    pub account: Id,
}

/// Names `account` as the user's trustee account for `currency` (with the limit's command).
pub fn upsert_credit(user_id: &str, currency: &str, account: Id, now: Timestamp) -> Attachment {
    row(
        "INSERT INTO trustee_credit (user_id, currency, account, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, currency) DO UPDATE SET updated_at = excluded.updated_at",
        vec![
            Value::Text(user_id.into()),
            Value::Text(currency.into()),
            blob(&account),
            Value::Int(now.as_micros()),
        ],
    )
}

impl Store {
    /// The user's trustee accounts, by currency.
    pub async fn trustee_credit(&self, user_id: &str) -> Result<Vec<TrusteeCredit>, StoreError> {
        self.credits(
            "SELECT user_id, currency, account FROM trustee_credit WHERE user_id = $1 \
             ORDER BY currency",
            vec![Value::Text(user_id.into())],
        )
        .await
    }

    /// Every trustee account, by user and currency (for the settlement's collection).
    pub async fn trustee_credits(&self) -> Result<Vec<TrusteeCredit>, StoreError> {
        self.credits(
            "SELECT user_id, currency, account FROM trustee_credit ORDER BY user_id, currency",
            vec![],
        )
        .await
    }

    async fn credits(
        &self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Vec<TrusteeCredit>, StoreError> {
        let rows = self.fetch_all(sql.into(), params).await?;
        rows.iter()
            .map(|r| {
                Ok(TrusteeCredit {
                    user_id: r.try_get("user_id")?,
                    currency: r.try_get("currency")?,
                    account: decode_id(&r.try_get::<Vec<u8>, _>("account")?)?,
                })
            })
            .collect()
    }
}
