//! Ledger queries (issue [10]): transfers filtered by account and side, time range, the
//! client's references and code, in either order, a page at a time; and an account's history
//! (its counters after each transfer, for accounts opened with `history`).
//!
//! Pages are keyed, not numbered: a cursor is the last row's sort key, so a page never skips or
//! repeats a row when transfers arrive between two requests. Transfers sort by
//! `(created_at, id)`, history rows by `(journal_seq, ordinal)`. Filters by account use the
//! per-account indexes of `transfers` and the primary key of `account_balances`; a query
//! without an account reads the table in time order (the operator's, rarely).

use crate::rows::{self, Value, placeholders_from};
use crate::{Dialect, Store, StoreError};
use sqlx::Row;
use tally_kernel::{Id, Timestamp};
use tally_ledger::{Account, AccountBalance, Transfer};

/// Which of an account's sides a query takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Side {
    /// Debits and credits.
    #[default]
    Both,
    /// Transfers that debit the account.
    Debit,
    /// Transfers that credit the account.
    Credit,
}

/// What a transfer query asks for; `None` filters nothing.
#[derive(Debug, Clone, Default)]
pub struct TransferFilter {
    /// Only transfers on this account.
    pub account: Option<Id>,
    /// With `account`: which side.
    pub side: Side,
    /// Created at or after.
    pub since: Option<Timestamp>,
    /// Created at or before.
    pub until: Option<Timestamp>,
    /// The client's 128-bit reference.
    pub user_data_128: Option<u128>,
    /// The client's 64-bit reference.
    pub user_data_64: Option<u64>,
    /// The client's 32-bit reference.
    pub user_data_32: Option<u32>,
    /// The client's reason code.
    pub code: Option<u16>,
    /// Newest first.
    pub reversed: bool,
    /// Rows after this one in the query's order (the last row of the previous page).
    pub after: Option<(Timestamp, Id)>,
    /// Most rows.
    pub limit: i64,
}

/// What an account query asks for: one owner's accounts, filtered, a page at a time.
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    /// Whose accounts.
    pub owner: String,
    /// Opened at or after.
    pub since: Option<Timestamp>,
    /// Opened at or before.
    pub until: Option<Timestamp>,
    /// The client's 128-bit reference.
    pub user_data_128: Option<u128>,
    /// The client's 64-bit reference.
    pub user_data_64: Option<u64>,
    /// The client's 32-bit reference.
    pub user_data_32: Option<u32>,
    /// The client's code.
    pub code: Option<u16>,
    /// Newest first.
    pub reversed: bool,
    /// Accounts after this one (the last of the previous page) in the query's order.
    pub after: Option<Id>,
    /// Most rows.
    pub limit: i64,
}

/// One row of an account's history and its place in the journal (the page cursor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// The counters after the transfer.
    pub balance: AccountBalance,
    /// The journal entry that recorded the transfer.
    pub journal_seq: i64,
    /// Its place among that entry's history rows.
    pub ordinal: i64,
}

/// What a history query asks for.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// At or after.
    pub since: Option<Timestamp>,
    /// At or before.
    pub until: Option<Timestamp>,
    /// Newest first.
    pub reversed: bool,
    /// Rows after this `(journal_seq, ordinal)` in the query's order.
    pub after: Option<(i64, i64)>,
    /// Most rows.
    pub limit: i64,
}

/// A `WHERE` clause built one condition at a time, with its values in bind order.
struct Conditions {
    dialect: Dialect,
    sql: Vec<String>,
    values: Vec<Value>,
}

impl Conditions {
    fn new(dialect: Dialect) -> Conditions {
        Conditions {
            dialect,
            sql: Vec::new(),
            values: Vec::new(),
        }
    }

    /// The next placeholder, bound to `v`.
    fn param(&mut self, v: Value) -> String {
        self.values.push(v);
        placeholders_from(self.dialect, self.values.len(), 1)
    }

    fn push(&mut self, condition: String) {
        self.sql.push(condition);
    }

    /// `(a > x OR (a = x AND b > y))` (or `<` when reversed): rows after a cursor.
    fn after(&mut self, (a, b): (&str, &str), (x, y): (Value, Value), reversed: bool) {
        let op = if reversed { "<" } else { ">" };
        let (x1, x2, y1) = (self.param(x.clone()), self.param(x), self.param(y));
        self.push(format!("({a} {op} {x1} OR ({a} = {x2} AND {b} {op} {y1}))"));
    }

    /// `column` between two times, inclusive, where given.
    fn range(&mut self, column: &str, since: Option<Timestamp>, until: Option<Timestamp>) {
        if let Some(t) = since {
            let p = self.param(Value::Int(t.as_micros()));
            self.push(format!("{column} >= {p}"));
        }
        if let Some(t) = until {
            let p = self.param(Value::Int(t.as_micros()));
            self.push(format!("{column} <= {p}"));
        }
    }

    /// The client's references and code, where given (a 128-bit 0 asks for none).
    fn references(
        &mut self,
        user_data_128: Option<u128>,
        user_data_64: Option<u64>,
        user_data_32: Option<u32>,
        code: Option<u16>,
    ) {
        match user_data_128 {
            None => {}
            Some(0) => self.push("user_data_128 IS NULL".to_string()),
            Some(v) => {
                let p = self.param(Value::Blob(v.to_be_bytes().to_vec()));
                self.push(format!("user_data_128 = {p}"));
            }
        }
        if let Some(v) = user_data_64 {
            let p = self.param(Value::Int(i64::from_ne_bytes(v.to_ne_bytes())));
            self.push(format!("user_data_64 = {p}"));
        }
        if let Some(v) = user_data_32 {
            let p = self.param(Value::Int(i64::from(v)));
            self.push(format!("user_data_32 = {p}"));
        }
        if let Some(v) = code {
            let p = self.param(Value::Int(i64::from(v)));
            self.push(format!("code = {p}"));
        }
    }

    fn clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.sql.join(" AND "))
        }
    }
}

impl Store {
    /// Wakes when this process's writer commits a journal entry (other processes' commits are
    /// not seen here: a reader of several nodes' database also re-reads on a timer).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<i64> {
        self.writer.journal_head()
    }

    /// The journal entries that recorded transfers, from position `from` on (inclusive), at
    /// most `limit` entries, each with its transfers in order: the change stream's source.
    pub async fn transfer_entries(
        &self,
        from: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<Transfer>)>, StoreError> {
        let found = self
            .fetch_all(
                "SELECT seq, body FROM journal WHERE seq >= $1 AND kind = 'transfers' \
                 ORDER BY seq LIMIT $2"
                    .into(),
                vec![Value::Int(from), Value::Int(limit)],
            )
            .await?;
        found
            .iter()
            .map(|r| {
                let seq: i64 = r.try_get("seq")?;
                let body: Vec<u8> = r.try_get("body")?;
                match tally_ledger::body::decode(&body) {
                    Ok(tally_ledger::Event::Transfers { transfers }) => Ok((seq, transfers)),
                    Ok(_) => Err(StoreError::Corrupt(format!("entry {seq} is not transfers"))),
                    Err(e) => Err(StoreError::Corrupt(format!("entry {seq}: {e}"))),
                }
            })
            .collect()
    }

    /// Accounts matching `f`, in `(created_at, id)` order (or reversed), at most `f.limit`.
    pub async fn query_accounts(&self, f: &AccountFilter) -> Result<Vec<Account>, StoreError> {
        let mut w = Conditions::new(self.dialect);
        let p = w.param(Value::Text(f.owner.clone()));
        w.push(format!("owner = {p}"));
        w.references(f.user_data_128, f.user_data_64, f.user_data_32, f.code);
        w.range("created_at", f.since, f.until);
        if let Some(after) = f.after {
            // The cursor is an account id: its own sort key is read in the same statement.
            let op = if f.reversed { "<" } else { ">" };
            let (a, b, c) = (
                w.param(Value::Blob(after.as_bytes().to_vec())),
                w.param(Value::Blob(after.as_bytes().to_vec())),
                w.param(Value::Blob(after.as_bytes().to_vec())),
            );
            w.push(format!(
                "(created_at {op} (SELECT created_at FROM accounts WHERE id = {a}) OR \
                 (created_at = (SELECT created_at FROM accounts WHERE id = {b}) AND id {op} {c}))"
            ));
        }
        let order = if f.reversed { "DESC" } else { "ASC" };
        let limit = w.param(Value::Int(f.limit));
        let sql = format!(
            "SELECT {} FROM accounts{} ORDER BY created_at {order}, id {order} LIMIT {limit}",
            rows::ACCOUNT_COLUMNS,
            w.clause()
        );
        let found = self.fetch_all(sql, w.values).await?;
        found.iter().map(rows::account).collect()
    }

    /// Transfers matching `f`, in `(created_at, id)` order (or reversed), at most `f.limit`.
    pub async fn query_transfers(&self, f: &TransferFilter) -> Result<Vec<Transfer>, StoreError> {
        let mut w = Conditions::new(self.dialect);
        let id = |i: Id| Value::Blob(i.as_bytes().to_vec());
        if let Some(account) = f.account {
            let c = match f.side {
                Side::Debit => format!("debit_account = {}", w.param(id(account))),
                Side::Credit => format!("credit_account = {}", w.param(id(account))),
                Side::Both => {
                    let (d, c) = (w.param(id(account)), w.param(id(account)));
                    format!("(debit_account = {d} OR credit_account = {c})")
                }
            };
            w.push(c);
        }
        w.range("created_at", f.since, f.until);
        w.references(f.user_data_128, f.user_data_64, f.user_data_32, f.code);
        if let Some((at, after)) = f.after {
            w.after(
                ("created_at", "id"),
                (Value::Int(at.as_micros()), id(after)),
                f.reversed,
            );
        }
        let order = if f.reversed { "DESC" } else { "ASC" };
        let limit = w.param(Value::Int(f.limit));
        let sql = format!(
            "SELECT {} FROM transfers{} ORDER BY created_at {order}, id {order} LIMIT {limit}",
            rows::TRANSFER_COLUMNS,
            w.clause()
        );
        let found = self.fetch_all(sql, w.values).await?;
        found.iter().map(rows::transfer).collect()
    }

    /// The history of `account` (rows only if it was opened with `history`), in journal order
    /// (or reversed), at most `f.limit`.
    pub async fn account_history(
        &self,
        account: Id,
        f: &HistoryFilter,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let mut w = Conditions::new(self.dialect);
        let p = w.param(Value::Blob(account.as_bytes().to_vec()));
        w.push(format!("account_id = {p}"));
        w.range("at", f.since, f.until);
        if let Some((seq, ordinal)) = f.after {
            w.after(
                ("journal_seq", "ordinal"),
                (Value::Int(seq), Value::Int(ordinal)),
                f.reversed,
            );
        }
        let order = if f.reversed { "DESC" } else { "ASC" };
        let limit = w.param(Value::Int(f.limit));
        let sql = format!(
            "SELECT account_id, journal_seq, ordinal, transfer_id, at, debits_pending, \
             debits_posted, credits_pending, credits_posted FROM account_balances{} \
             ORDER BY journal_seq {order}, ordinal {order} LIMIT {limit}",
            w.clause()
        );
        let found = self.fetch_all(sql, w.values).await?;
        found
            .iter()
            .map(|r| {
                Ok(HistoryRow {
                    balance: AccountBalance {
                        account: rows::id(&r.try_get::<Vec<u8>, _>("account_id")?)?,
                        transfer: rows::id(&r.try_get::<Vec<u8>, _>("transfer_id")?)?,
                        at: Timestamp(r.try_get("at")?),
                        debits_pending: r.try_get("debits_pending")?,
                        debits_posted: r.try_get("debits_posted")?,
                        credits_pending: r.try_get("credits_pending")?,
                        credits_posted: r.try_get("credits_posted")?,
                    },
                    journal_seq: r.try_get("journal_seq")?,
                    ordinal: r.try_get("ordinal")?,
                })
            })
            .collect()
    }
}
