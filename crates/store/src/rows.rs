//! Rows ↔ ledger types. One place maps database columns to domain values, so a column added
//! in a migration is decoded (and checked) here only.

use crate::{Dialect, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use tally_kernel::{Currency, Id, Rate, Timestamp};
use tally_ledger::{
    Account, AccountFlags, AccountKind, Transfer, TransferFlags, TransferKind, TransferState,
};

/// The account columns, in [`account_values`]'s order.
macro_rules! account_columns {
    () => {
        "id, owner, currency, kind, flags, limit_minor, debits_pending, debits_posted, \
         credits_pending, credits_posted, created_at, user_data_128, user_data_64, user_data_32, \
         code"
    };
}

pub const ACCOUNT_COLUMNS: &str = account_columns!();

/// How many values [`account_values`] gives.
pub const ACCOUNT_WIDTH: usize = 15;

pub const ACCOUNT_SELECT_BY_ID: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE id = $1"
);

pub const ACCOUNT_SELECT_BY_OWNER: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE owner = $1 ORDER BY created_at, id"
);

/// The transfer columns, in [`transfer_values`]'s order (without `journal_seq`).
macro_rules! transfer_columns {
    () => {
        "id, kind, state, debit_account, credit_account, amount_minor, currency, pending_id, \
         pending_amount_minor, expires_at, link_id, rate_numerator, rate_denominator, memo, \
         created_at, flags, user_data_128, user_data_64, user_data_32, code"
    };
}

pub const TRANSFER_COLUMNS: &str = transfer_columns!();

/// How many values [`transfer_values`] gives (with `journal_seq`).
pub const TRANSFER_WIDTH: usize = 21;

pub const TRANSFER_SELECT_BY_ID: &str = concat!(
    "SELECT ",
    transfer_columns!(),
    " FROM transfers WHERE id = $1"
);

pub const TRANSFER_SELECT_BY_ACCOUNT: &str = concat!(
    "SELECT ",
    transfer_columns!(),
    " FROM transfers WHERE debit_account = $1 OR credit_account = $1 \
     ORDER BY created_at DESC, id DESC LIMIT $2"
);

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub fn id(bytes: &[u8]) -> Result<Id, StoreError> {
    Id::from_slice(bytes).ok_or_else(|| corrupt("id is not 16 bytes"))
}

fn currency(code: &str) -> Result<Currency, StoreError> {
    Currency::from_code(code).map_err(|_| corrupt("currency"))
}

/// A column of 16 bytes (an id of the pads' tables).
pub fn bytes16(r: &AnyRow, column: &str) -> Result<[u8; 16], StoreError> {
    r.try_get::<Vec<u8>, _>(column)?
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{column} is not 16 bytes")))
}

pub fn account(r: &AnyRow) -> Result<Account, StoreError> {
    let kind: String = r.try_get("kind")?;
    Ok(Account {
        id: id(&r.try_get::<Vec<u8>, _>("id")?)?,
        owner: r.try_get("owner")?,
        currency: currency(&r.try_get::<String, _>("currency")?)?,
        kind: AccountKind::parse(&kind).ok_or_else(|| corrupt("account kind"))?,
        flags: AccountFlags::from_bits(r.try_get("flags")?),
        limit_minor: r.try_get("limit_minor")?,
        debits_pending: r.try_get("debits_pending")?,
        debits_posted: r.try_get("debits_posted")?,
        credits_pending: r.try_get("credits_pending")?,
        credits_posted: r.try_get("credits_posted")?,
        created_at: Timestamp(r.try_get("created_at")?),
        user_data_128: user_data_128(r)?,
        user_data_64: user_data_64(r)?,
        user_data_32: u32::try_from(r.try_get::<i64, _>("user_data_32")?)
            .map_err(|_| corrupt("user_data_32"))?,
        code: u16::try_from(r.try_get::<i64, _>("code")?).map_err(|_| corrupt("code"))?,
    })
}

/// The 128-bit reference column: 16 bytes big-endian, NULL for none.
fn user_data_128(r: &AnyRow) -> Result<u128, StoreError> {
    match r.try_get::<Option<Vec<u8>>, _>("user_data_128")? {
        None => Ok(0),
        Some(b) => Ok(u128::from_be_bytes(
            b.try_into()
                .map_err(|_| corrupt("user_data_128 is not 16 bytes"))?,
        )),
    }
}

/// The 64-bit reference column: the same 64 bits in a signed column.
fn user_data_64(r: &AnyRow) -> Result<u64, StoreError> {
    Ok(u64::from_ne_bytes(
        r.try_get::<i64, _>("user_data_64")?.to_ne_bytes(),
    ))
}

/// The values of the four reference columns, in column order.
fn reference_values(u128_: u128, u64_: u64, u32_: u32, code: u16) -> [Value; 4] {
    [
        match u128_ {
            0 => Value::NullBlob,
            v => Value::Blob(v.to_be_bytes().to_vec()),
        },
        Value::Int(i64::from_ne_bytes(u64_.to_ne_bytes())),
        Value::Int(i64::from(u32_)),
        Value::Int(i64::from(code)),
    ]
}

pub fn transfer(r: &AnyRow) -> Result<Transfer, StoreError> {
    let kind: String = r.try_get("kind")?;
    let state: String = r.try_get("state")?;
    let opt_id = |name: &str| -> Result<Option<Id>, StoreError> {
        r.try_get::<Option<Vec<u8>>, _>(name)?
            .map(|b| id(&b))
            .transpose()
    };
    let rate = match (
        r.try_get::<Option<i64>, _>("rate_numerator")?,
        r.try_get::<Option<i64>, _>("rate_denominator")?,
    ) {
        (Some(numerator), Some(denominator)) => Some(Rate {
            numerator,
            denominator,
        }),
        _ => None,
    };
    let t = Transfer {
        id: id(&r.try_get::<Vec<u8>, _>("id")?)?,
        kind: TransferKind::parse(&kind).ok_or_else(|| corrupt("transfer kind"))?,
        state: TransferState::parse(&state).ok_or_else(|| corrupt("transfer state"))?,
        debit_account: id(&r.try_get::<Vec<u8>, _>("debit_account")?)?,
        credit_account: id(&r.try_get::<Vec<u8>, _>("credit_account")?)?,
        amount_minor: r.try_get("amount_minor")?,
        currency: currency(&r.try_get::<String, _>("currency")?)?,
        pending_id: opt_id("pending_id")?,
        pending_amount_minor: r.try_get("pending_amount_minor")?,
        expires_at: r.try_get::<Option<i64>, _>("expires_at")?.map(Timestamp),
        link_id: opt_id("link_id")?,
        rate,
        memo: r.try_get("memo")?,
        created_at: Timestamp(r.try_get("created_at")?),
        flags: TransferFlags::from_bits(r.try_get("flags")?),
        user_data_128: user_data_128(r)?,
        user_data_64: user_data_64(r)?,
        user_data_32: u32::try_from(r.try_get::<i64, _>("user_data_32")?)
            .map_err(|_| corrupt("user_data_32"))?,
        code: u16::try_from(r.try_get::<i64, _>("code")?).map_err(|_| corrupt("code"))?,
    };
    // Pair assertion with the ledger's own check before writing: a stored transfer is positive.
    if t.amount_minor <= 0 {
        return Err(corrupt("transfer amount is not positive"));
    }
    Ok(t)
}

/// A value to bind in a generated multi-row statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Blob(Vec<u8>),
    Int(i64),
    NullBlob,
    NullInt,
    NullText,
    Text(String),
}

impl Value {
    pub fn opt_id(v: Option<Id>) -> Value {
        v.map_or(Value::NullBlob, |i| Value::Blob(i.as_bytes().to_vec()))
    }

    pub fn opt_int(v: Option<i64>) -> Value {
        v.map_or(Value::NullInt, Value::Int)
    }

    pub fn opt_text(v: Option<String>) -> Value {
        v.map_or(Value::NullText, Value::Text)
    }
}

pub fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    values: Vec<Value>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for v in values {
        q = match v {
            Value::Blob(b) => q.bind(b),
            Value::Int(i) => q.bind(i),
            Value::NullBlob => q.bind(None::<Vec<u8>>),
            Value::NullInt => q.bind(None::<i64>),
            Value::NullText => q.bind(None::<String>),
            Value::Text(s) => q.bind(s),
        };
    }
    q
}

/// One bind placeholder. SQLite gets anonymous `?`: it resolves a numbered `$N` by a linear
/// scan of the statement's parameter names, which makes binding N parameters O(N²) and a
/// 16 000-parameter batch insert take most of a second. PostgreSQL needs `$N`.
fn placeholder(sql: &mut String, dialect: Dialect, n: usize) {
    match dialect {
        Dialect::Sqlite => sql.push('?'),
        Dialect::Postgres => {
            sql.push('$');
            sql.push_str(&n.to_string());
        }
    }
}

/// `INSERT INTO table (cols) VALUES ($1..),($n..)…` for `rows` rows of `width` values,
/// with an optional tail such as `ON CONFLICT …`.
pub fn multi_insert(
    dialect: Dialect,
    table: &str,
    columns: &str,
    width: usize,
    rows: usize,
    tail: &str,
) -> String {
    let mut sql = String::with_capacity(64 + rows * width * 5);
    sql.push_str("INSERT INTO ");
    sql.push_str(table);
    sql.push_str(" (");
    sql.push_str(columns);
    sql.push_str(") VALUES ");
    let mut n = 1;
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..width {
            if c > 0 {
                sql.push(',');
            }
            placeholder(&mut sql, dialect, n);
            n += 1;
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

/// `$1,$2,…,$n` (or `?,?,…` on SQLite) for an `IN (…)` list.
pub fn placeholders(dialect: Dialect, n: usize) -> String {
    placeholders_from(dialect, 1, n)
}

/// `n` placeholders numbered from `first` (for statements with several lists).
pub fn placeholders_from(dialect: Dialect, first: usize, n: usize) -> String {
    let mut sql = String::with_capacity(n * 6);
    for i in first..first + n {
        if i > first {
            sql.push(',');
        }
        placeholder(&mut sql, dialect, i);
    }
    sql
}

pub fn account_values(a: &Account) -> Vec<Value> {
    let mut row = vec![
        Value::Blob(a.id.as_bytes().to_vec()),
        Value::Text(a.owner.clone()),
        Value::Text(a.currency.code().to_string()),
        Value::Text(a.kind.as_str().to_string()),
        Value::Int(a.flags.bits()),
        Value::Int(a.limit_minor),
        Value::Int(a.debits_pending),
        Value::Int(a.debits_posted),
        Value::Int(a.credits_pending),
        Value::Int(a.credits_posted),
        Value::Int(a.created_at.as_micros()),
    ];
    row.extend(reference_values(
        a.user_data_128,
        a.user_data_64,
        a.user_data_32,
        a.code,
    ));
    row
}

pub fn transfer_values(t: &Transfer, journal_seq: i64) -> Vec<Value> {
    let mut row = vec![
        Value::Blob(t.id.as_bytes().to_vec()),
        Value::Text(t.kind.as_str().to_string()),
        Value::Text(t.state.as_str().to_string()),
        Value::Blob(t.debit_account.as_bytes().to_vec()),
        Value::Blob(t.credit_account.as_bytes().to_vec()),
        Value::Int(t.amount_minor),
        Value::Text(t.currency.code().to_string()),
        Value::opt_id(t.pending_id),
        Value::opt_int(t.pending_amount_minor),
        Value::opt_int(t.expires_at.map(|x| x.as_micros())),
        Value::opt_id(t.link_id),
        Value::opt_int(t.rate.map(|r| r.numerator)),
        Value::opt_int(t.rate.map(|r| r.denominator)),
        Value::Text(t.memo.clone()),
        Value::Int(t.created_at.as_micros()),
        Value::Int(t.flags.bits()),
    ];
    row.extend(reference_values(
        t.user_data_128,
        t.user_data_64,
        t.user_data_32,
        t.code,
    ));
    row.push(Value::Int(journal_seq));
    row
}

/// A stored state name decoded, or a corrupt-row error naming the column.
pub(crate) fn state<T>(
    r: &AnyRow,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let text: String = r.try_get(column)?;
    parse(&text).ok_or_else(|| StoreError::Corrupt(format!("unknown {column} `{text}`")))
}
