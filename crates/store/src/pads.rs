//! Tables of anonymous prepaid pads (issue [8]; `docs/protocols/pads.md`): the pads, their
//! twins in sealed chunks, their records (with the last answers kept for resends) and, per
//! currency, the clearing account and tariff.
//!
//! A pad's state and both cursors are columns, and every frame's step moves them under a
//! guard on the values it was decided from ([`update`]): with several nodes on one database
//! the writer's transaction decides, so no pad byte is handed out twice. The rest of the
//! machine is JSON.

use crate::guarded::{Conflict, RowWrite};
use crate::oob::{blob, row, row_is};
use crate::rows::{Value, id as decode_id};
use crate::{Attachment, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use tally_kernel::{Currency, Id, Timestamp};

/// A pad's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PadRow {
    /// The pad id's 16 bytes.
    pub id: [u8; 16],
    /// The machine's state, by its stored name.
    pub state: String,
    /// The first unused up byte.
    pub up_next: u64,
    /// The lowest down byte used.
    pub down_low: u64,
    /// `one_time` or `session_key`.
    pub mode: String,
    /// The value's currency.
    pub currency: Currency,
    /// The pad's value account.
    pub value_account: Id,
    /// The value it was sold with.
    pub face_minor: i64,
    /// The sale's namespaced idempotency key.
    pub issue_key: String,
    /// The machine (JSON).
    pub machine: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

const COLUMNS: &str = "id, state, up_next, down_low, mode, currency, value_account, face_minor, \
     issue_key, machine, created_at, updated_at";

fn write(r: &PadRow, tail: &'static str) -> Attachment {
    Attachment::Row(RowWrite::Insert {
        table: "pads",
        columns: COLUMNS,
        values: vec![
            Value::Blob(r.id.to_vec()),
            Value::Text(r.state.clone()),
            Value::Int(r.up_next as i64),
            Value::Int(r.down_low as i64),
            Value::Text(r.mode.clone()),
            Value::Text(r.currency.code().into()),
            blob(&r.value_account),
            Value::Int(r.face_minor),
            Value::Text(r.issue_key.clone()),
            Value::Text(r.machine.clone()),
            Value::Int(r.created_at.as_micros()),
            Value::Int(r.updated_at.as_micros()),
        ],
        tail,
        key: Some(("id", Value::Blob(r.id.to_vec()))),
    })
}

/// A new pad (a second row with the same id or sale key fails the job).
pub fn insert(r: &PadRow) -> Attachment {
    write(r, "")
}

/// Moves a pad from what the caller read (`before`) to `after`, under a guard on its state and
/// both cursors: if another request moved it first, the job fails with
/// [`Conflict::Moved`].
pub fn update(before: &PadRow, after: &PadRow) -> [Attachment; 2] {
    [
        row_is(
            "pads",
            "id",
            Value::Blob(before.id.to_vec()),
            vec![
                ("state", Value::Text(before.state.clone())),
                ("up_next", Value::Int(before.up_next as i64)),
                ("down_low", Value::Int(before.down_low as i64)),
            ],
            Conflict::Moved("the pad moved meanwhile"),
        ),
        write(
            after,
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, up_next = excluded.up_next, \
             down_low = excluded.down_low, machine = excluded.machine, \
             updated_at = excluded.updated_at",
        ),
    ]
}

/// One sealed chunk of a pad's twin.
pub fn insert_chunk(pad: &[u8; 16], idx: u64, sealed: Vec<u8>) -> Attachment {
    Attachment::Row(RowWrite::Insert {
        table: "pad_chunks",
        columns: "pad, idx, sealed",
        values: vec![
            Value::Blob(pad.to_vec()),
            Value::Int(idx as i64),
            Value::Blob(sealed),
        ],
        tail: "",
        key: None,
    })
}

/// Deletes a pad's twin (a cancelled pad keeps none).
pub fn delete_chunks(pad: &[u8; 16]) -> Attachment {
    row(
        "DELETE FROM pad_chunks WHERE pad = $1",
        vec![Value::Blob(pad.to_vec())],
    )
}

/// A record line and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PadRecord {
    /// The line's number, from 0.
    pub n: u64,
    /// The up frame's offset.
    pub up_offset: u64,
    /// SHA-256 of the up frame.
    pub digest: [u8; 32],
    /// The 65-byte line.
    pub line: Vec<u8>,
    /// The sealed down frame (kept for the last frames only).
    pub reply: Option<Vec<u8>>,
    /// The refusal's JSON, for a burned frame.
    pub refusal: Option<String>,
}

/// How many recent answers each pad keeps for resends.
pub const REPLIES_KEPT: u64 = 16;

/// A frame's record line and answer; drops the reply kept for the frame `REPLIES_KEPT` before.
pub fn insert_record(pad: &[u8; 16], r: &PadRecord) -> [Attachment; 2] {
    [
        Attachment::Row(RowWrite::Insert {
            table: "pad_records",
            columns: "pad, n, up_offset, digest, line, reply, refusal",
            values: vec![
                Value::Blob(pad.to_vec()),
                Value::Int(r.n as i64),
                Value::Int(r.up_offset as i64),
                Value::Blob(r.digest.to_vec()),
                Value::Blob(r.line.clone()),
                r.reply.clone().map_or(Value::NullBlob, Value::Blob),
                Value::opt_text(r.refusal.clone()),
            ],
            tail: "",
            key: None,
        }),
        row(
            "UPDATE pad_records SET reply = NULL WHERE pad = $1 AND n = $2",
            vec![
                Value::Blob(pad.to_vec()),
                Value::Int(r.n as i64 - REPLIES_KEPT as i64),
            ],
        ),
    ]
}

/// A currency's pad clearing account and tariff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PadCurrency {
    /// The currency.
    pub currency: Currency,
    /// Its clearing account.
    pub clearing_account: Id,
    /// Minor units per KiB of charged pad bytes.
    pub byte_price_minor_per_kib: i64,
    /// Minor units per `post`.
    pub post_price_minor: i64,
    /// The operator's share of providers' prices.
    pub commission_bps: i64,
}

/// Names a currency's clearing account (with its opening): the first one stays.
pub fn insert_currency(c: &PadCurrency) -> Attachment {
    row(
        "INSERT INTO pad_currencies (currency, clearing_account, byte_price_minor_per_kib, \
         post_price_minor, commission_bps) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (currency) DO NOTHING",
        vec![
            Value::Text(c.currency.code().into()),
            blob(&c.clearing_account),
            Value::Int(c.byte_price_minor_per_kib),
            Value::Int(c.post_price_minor),
            Value::Int(c.commission_bps),
        ],
    )
}

/// Sets a currency's tariff.
pub fn set_tariff(c: &PadCurrency) -> Attachment {
    row(
        "UPDATE pad_currencies SET byte_price_minor_per_kib = $2, post_price_minor = $3, \
         commission_bps = $4 WHERE currency = $1",
        vec![
            Value::Text(c.currency.code().into()),
            Value::Int(c.byte_price_minor_per_kib),
            Value::Int(c.post_price_minor),
            Value::Int(c.commission_bps),
        ],
    )
}

fn pad_row(r: &AnyRow) -> Result<PadRow, StoreError> {
    let bytes: Vec<u8> = r.try_get("id")?;
    let currency: String = r.try_get("currency")?;
    Ok(PadRow {
        id: bytes
            .try_into()
            .map_err(|_| StoreError::Corrupt("pad id is not 16 bytes".into()))?,
        state: r.try_get("state")?,
        up_next: r.try_get::<i64, _>("up_next")? as u64,
        down_low: r.try_get::<i64, _>("down_low")? as u64,
        mode: r.try_get("mode")?,
        currency: Currency::from_code(&currency)
            .map_err(|_| StoreError::Corrupt("pad currency".into()))?,
        value_account: decode_id(&r.try_get::<Vec<u8>, _>("value_account")?)?,
        face_minor: r.try_get("face_minor")?,
        issue_key: r.try_get("issue_key")?,
        machine: r.try_get("machine")?,
        created_at: Timestamp(r.try_get("created_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
    })
}

fn record(r: &AnyRow) -> Result<PadRecord, StoreError> {
    let digest: Vec<u8> = r.try_get("digest")?;
    Ok(PadRecord {
        n: r.try_get::<i64, _>("n")? as u64,
        up_offset: r.try_get::<i64, _>("up_offset")? as u64,
        digest: digest
            .try_into()
            .map_err(|_| StoreError::Corrupt("pad record digest".into()))?,
        line: r.try_get("line")?,
        reply: r.try_get("reply")?,
        refusal: r.try_get("refusal")?,
    })
}

fn currency_row(r: &AnyRow) -> Result<PadCurrency, StoreError> {
    let code: String = r.try_get("currency")?;
    Ok(PadCurrency {
        currency: Currency::from_code(&code)
            .map_err(|_| StoreError::Corrupt("pad currency".into()))?,
        clearing_account: decode_id(&r.try_get::<Vec<u8>, _>("clearing_account")?)?,
        byte_price_minor_per_kib: r.try_get("byte_price_minor_per_kib")?,
        post_price_minor: r.try_get("post_price_minor")?,
        commission_bps: r.try_get("commission_bps")?,
    })
}

const SELECT: &str = "SELECT id, state, up_next, down_low, mode, currency, value_account, \
     face_minor, issue_key, machine, created_at, updated_at FROM pads";

impl Store {
    /// A pad.
    pub async fn pad(&self, id: &[u8; 16]) -> Result<Option<PadRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{SELECT} WHERE id = $1"),
                vec![Value::Blob(id.to_vec())],
            )
            .await?;
        rows.first().map(pad_row).transpose()
    }

    /// The pad a sale made, by the sale's idempotency key.
    pub async fn pad_by_issue_key(&self, key: &str) -> Result<Option<PadRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{SELECT} WHERE issue_key = $1"),
                vec![Value::Text(key.into())],
            )
            .await?;
        rows.first().map(pad_row).transpose()
    }

    /// The sealed chunks `first ..= last` of a pad's twin, in order.
    pub async fn pad_chunks(
        &self,
        pad: &[u8; 16],
        first: u64,
        last: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT idx, sealed FROM pad_chunks WHERE pad = $1 AND idx >= $2 AND idx <= $3 \
                 ORDER BY idx"
                    .into(),
                vec![
                    Value::Blob(pad.to_vec()),
                    Value::Int(first as i64),
                    Value::Int(last as i64),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>("idx")? as u64, r.try_get("sealed")?)))
            .collect()
    }

    /// The record of the frame taken at `up_offset`, if one starts there.
    pub async fn pad_record_at(
        &self,
        pad: &[u8; 16],
        up_offset: u64,
    ) -> Result<Option<PadRecord>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT n, up_offset, digest, line, reply, refusal FROM pad_records \
                 WHERE pad = $1 AND up_offset = $2"
                    .into(),
                vec![Value::Blob(pad.to_vec()), Value::Int(up_offset as i64)],
            )
            .await?;
        rows.first().map(record).transpose()
    }

    /// Record lines `from ..` of a pad, at most `max`.
    pub async fn pad_records(
        &self,
        pad: &[u8; 16],
        from: u64,
        max: u64,
    ) -> Result<Vec<PadRecord>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT n, up_offset, digest, line, reply, refusal FROM pad_records \
                 WHERE pad = $1 AND n >= $2 ORDER BY n LIMIT $3"
                    .into(),
                vec![
                    Value::Blob(pad.to_vec()),
                    Value::Int(from.min(i64::MAX as u64) as i64),
                    Value::Int(max as i64),
                ],
            )
            .await?;
        rows.iter().map(record).collect()
    }

    /// A currency's pad clearing account and tariff, if pads were sold in it.
    pub async fn pad_currency(
        &self,
        currency: Currency,
    ) -> Result<Option<PadCurrency>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT currency, clearing_account, byte_price_minor_per_kib, post_price_minor, \
                 commission_bps FROM pad_currencies WHERE currency = $1"
                    .into(),
                vec![Value::Text(currency.code().into())],
            )
            .await?;
        rows.first().map(currency_row).transpose()
    }
}
