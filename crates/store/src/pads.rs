//! Tables of anonymous prepaid pads (issue [8]; `docs/protocols/pads.md`): the pads, their
//! twins in sealed chunks, their records (with the last answers kept for resends), their
//! mailboxes and the messages waiting there, voucher cards, and, per currency, the clearing
//! account, the tariff and the voucher float.
//!
//! A pad's state and both cursors are columns, and every frame's step moves them under a
//! guard on the values it was decided from ([`update`]): with several nodes on one database
//! the writer's transaction decides, so no pad byte is handed out twice. The rest of the
//! machine is JSON.

use crate::guarded::{Conflict, RowWrite};
use crate::oob::{blob, row, row_is};
use crate::rows::{Value, bytes16, id as decode_id};
use crate::{Attachment, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use tally_kernel::{Currency, Id, Timestamp};
use tally_proto::pad::ids::VoucherState;

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
             down_low = excluded.down_low, face_minor = excluded.face_minor, \
             machine = excluded.machine, updated_at = excluded.updated_at",
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

/// Deletes the twin's chunks whose bytes are all used: those wholly below `up_next` (but
/// chunk 0) and those wholly at or above `down_low` ("each bit is used once and then
/// destroyed"): a later leak of the database and `pad.key` opens no used traffic.
pub fn delete_used_chunks(
    pad: &[u8; 16],
    chunk_len: u64,
    up_next: u64,
    down_low: u64,
) -> Attachment {
    row(
        "DELETE FROM pad_chunks WHERE pad = $1 AND ((idx > 0 AND idx < $2) OR idx >= $3)",
        vec![
            Value::Blob(pad.to_vec()),
            Value::Int((up_next / chunk_len) as i64),
            Value::Int(down_low.div_ceil(chunk_len) as i64),
        ],
    )
}

impl Store {
    /// How many sealed chunks of a pad's twin are left.
    pub async fn pad_chunk_count(&self, pad: &[u8; 16]) -> Result<u64, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT COUNT(*) AS n FROM pad_chunks WHERE pad = $1".into(),
                vec![Value::Blob(pad.to_vec())],
            )
            .await?;
        let n: i64 = rows
            .first()
            .map(|r| r.try_get("n"))
            .transpose()?
            .unwrap_or(0);
        Ok(n as u64)
    }
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

/// A pad's mailbox address, named at the sale.
pub fn insert_mailbox(address: &[u8; 16], pad: &[u8; 16]) -> Attachment {
    row(
        "INSERT INTO pad_mailboxes (address, pad) VALUES ($1, $2)",
        vec![Value::Blob(address.to_vec()), Value::Blob(pad.to_vec())],
    )
}

/// A message in a mailbox, its body sealed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PadMessage {
    /// Its id (16 random bytes: the order within a batch).
    pub id: [u8; 16],
    /// The mailbox address.
    pub mailbox: [u8; 16],
    /// 0 none, 1 provider, 2 mailbox.
    pub sender_kind: u8,
    /// The sender as shown (a provider's name, a mailbox address, or empty).
    pub sender: String,
    /// The forward it answers.
    pub in_reply_to: Option<[u8; 16]>,
    /// The body, sealed.
    pub body: Vec<u8>,
    /// When the relay releases it.
    pub release_at: Timestamp,
    /// When it was posted.
    pub created_at: Timestamp,
}

/// A message posted (with the step that takes the post).
pub fn insert_message(m: &PadMessage) -> Attachment {
    Attachment::Row(RowWrite::Insert {
        table: "pad_messages",
        columns: "id, mailbox, sender_kind, sender, in_reply_to, body, release_at, created_at",
        values: vec![
            Value::Blob(m.id.to_vec()),
            Value::Blob(m.mailbox.to_vec()),
            Value::Int(i64::from(m.sender_kind)),
            Value::Text(m.sender.clone()),
            m.in_reply_to
                .map_or(Value::NullBlob, |r| Value::Blob(r.to_vec())),
            Value::Blob(m.body.clone()),
            Value::Int(m.release_at.as_micros()),
            Value::Int(m.created_at.as_micros()),
        ],
        tail: "",
        key: None,
    })
}

/// A message handed to its mailbox's holder (with the step that collects it). The pad's row
/// guard makes the collecting step the only one of its pad, so a message goes out once.
pub fn delete_message(id: &[u8; 16]) -> Attachment {
    row(
        "DELETE FROM pad_messages WHERE id = $1",
        vec![Value::Blob(id.to_vec())],
    )
}

fn message(r: &AnyRow) -> Result<PadMessage, StoreError> {
    let bytes16 = |v: Vec<u8>, what: &str| -> Result<[u8; 16], StoreError> {
        v.try_into()
            .map_err(|_| StoreError::Corrupt(format!("pad message {what}")))
    };
    Ok(PadMessage {
        id: bytes16(r.try_get("id")?, "id")?,
        mailbox: bytes16(r.try_get("mailbox")?, "mailbox")?,
        sender_kind: r.try_get::<i64, _>("sender_kind")? as u8,
        sender: r.try_get("sender")?,
        in_reply_to: r
            .try_get::<Option<Vec<u8>>, _>("in_reply_to")?
            .map(|v| bytes16(v, "in_reply_to"))
            .transpose()?,
        body: r.try_get("body")?,
        release_at: Timestamp(r.try_get("release_at")?),
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

/// A voucher card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherRow {
    /// The serial printed on the card (`vs-` and 16 hex digits).
    pub serial: String,
    /// The keyed hash of its code.
    pub code_hash: [u8; 32],
    /// Where it is in its life.
    pub state: VoucherState,
    /// Its value.
    pub value_minor: i64,
    /// Its currency.
    pub currency: Currency,
    /// The retailer that sells it (an API key's owner).
    pub retailer: String,
    /// The account the retailer paid it from, once sold.
    pub paid_from: Option<Id>,
    /// The pad it was redeemed for.
    pub pad: Option<[u8; 16]>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

const VOUCHER_COLUMNS: &str = "serial, code_hash, state, value_minor, currency, retailer, \
     paid_from, pad, created_at, updated_at";

fn write_voucher(v: &VoucherRow, tail: &'static str) -> Attachment {
    Attachment::Row(RowWrite::Insert {
        table: "pad_vouchers",
        columns: VOUCHER_COLUMNS,
        values: vec![
            Value::Text(v.serial.clone()),
            Value::Blob(v.code_hash.to_vec()),
            Value::Text(v.state.as_str().into()),
            Value::Int(v.value_minor),
            Value::Text(v.currency.code().into()),
            Value::Text(v.retailer.clone()),
            Value::opt_id(v.paid_from),
            v.pad.map_or(Value::NullBlob, |p| Value::Blob(p.to_vec())),
            Value::Int(v.created_at.as_micros()),
            Value::Int(v.updated_at.as_micros()),
        ],
        tail,
        key: Some(("serial", Value::Text(v.serial.clone()))),
    })
}

/// A new voucher.
pub fn insert_voucher(v: &VoucherRow) -> Attachment {
    write_voucher(v, "")
}

/// Moves a voucher from the state the caller read to `after`'s; if another request moved it
/// first, the job fails with [`Conflict::Moved`].
pub fn update_voucher(before: &VoucherRow, after: &VoucherRow) -> [Attachment; 2] {
    [
        row_is(
            "pad_vouchers",
            "serial",
            Value::Text(before.serial.clone()),
            vec![("state", Value::Text(before.state.as_str().into()))],
            Conflict::Moved("the voucher moved meanwhile"),
        ),
        write_voucher(
            after,
            " ON CONFLICT (serial) DO UPDATE SET state = excluded.state, \
             paid_from = excluded.paid_from, pad = excluded.pad, updated_at = excluded.updated_at",
        ),
    ]
}

/// Names a currency's voucher float account (with its opening): the first one stays.
pub fn insert_float(currency: Currency, account: Id) -> Attachment {
    row(
        "INSERT INTO pad_floats (currency, account) VALUES ($1, $2) \
         ON CONFLICT (currency) DO NOTHING",
        vec![Value::Text(currency.code().into()), blob(&account)],
    )
}

fn voucher_row(r: &AnyRow) -> Result<VoucherRow, StoreError> {
    let hash: Vec<u8> = r.try_get("code_hash")?;
    let currency: String = r.try_get("currency")?;
    let state: String = r.try_get("state")?;
    Ok(VoucherRow {
        serial: r.try_get("serial")?,
        code_hash: hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("voucher code hash".into()))?,
        state: VoucherState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt("voucher state".into()))?,
        value_minor: r.try_get("value_minor")?,
        currency: Currency::from_code(&currency)
            .map_err(|_| StoreError::Corrupt("voucher currency".into()))?,
        retailer: r.try_get("retailer")?,
        paid_from: crate::oob::opt_id(r, "paid_from")?,
        pad: r
            .try_get::<Option<Vec<u8>>, _>("pad")?
            .map(|p| {
                p.try_into()
                    .map_err(|_| StoreError::Corrupt("voucher pad".into()))
            })
            .transpose()?,
        created_at: Timestamp(r.try_get("created_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
    })
}

/// A pad made as retail stock: its printed serial and its retailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRow {
    /// The serial printed on the media (`ps-` and 16 hex digits).
    pub serial: String,
    /// The pad.
    pub pad: [u8; 16],
    /// The retailer that sells it.
    pub retailer: String,
    /// The serial of the blank that replaced it, once cancelled.
    pub replaced_by: Option<String>,
    /// When it was made.
    pub created_at: Timestamp,
}

/// A pad made as stock.
pub fn insert_stock(s: &StockRow) -> Attachment {
    row(
        "INSERT INTO pad_stock (serial, pad, retailer, replaced_by, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        vec![
            Value::Text(s.serial.clone()),
            Value::Blob(s.pad.to_vec()),
            Value::Text(s.retailer.clone()),
            Value::opt_text(s.replaced_by.clone()),
            Value::Int(s.created_at.as_micros()),
        ],
    )
}

/// Names the blank that replaces a cancelled one.
pub fn set_replaced_by(serial: &str, by: &str) -> Attachment {
    row(
        "UPDATE pad_stock SET replaced_by = $2 WHERE serial = $1",
        vec![Value::Text(serial.into()), Value::Text(by.into())],
    )
}

/// An anonymous PIN account of pads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PadAccountRow {
    /// Its id.
    pub id: [u8; 16],
    /// The Argon2id PHC string of its PIN.
    pub pin_hash: String,
    /// Wrong PINs since the last right one.
    pub attempts: i64,
    /// Lockouts so far (each doubles the next).
    pub lockouts: i64,
    /// Locked until then (µs; 0: not locked).
    pub locked_until: i64,
    /// When it was opened.
    pub created_at: Timestamp,
}

/// A new account.
pub fn insert_pad_account(a: &PadAccountRow) -> Attachment {
    row(
        "INSERT INTO pad_accounts (id, pin_hash, attempts, lockouts, locked_until, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            Value::Blob(a.id.to_vec()),
            Value::Text(a.pin_hash.clone()),
            Value::Int(a.attempts),
            Value::Int(a.lockouts),
            Value::Int(a.locked_until),
            Value::Int(a.created_at.as_micros()),
        ],
    )
}

/// Moves an account's PIN tries from what the caller read to `after`'s, under a guard: two
/// wrong PINs at once count twice, never once.
pub fn update_pin_tries(before: &PadAccountRow, after: &PadAccountRow) -> [Attachment; 2] {
    [
        row_is(
            "pad_accounts",
            "id",
            Value::Blob(before.id.to_vec()),
            vec![
                ("attempts", Value::Int(before.attempts)),
                ("lockouts", Value::Int(before.lockouts)),
            ],
            Conflict::Moved("the account's PIN tries moved meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE pad_accounts SET attempts = $2, lockouts = $3, locked_until = $4 \
                  WHERE id = $1",
            params: vec![
                Value::Blob(after.id.to_vec()),
                Value::Int(after.attempts),
                Value::Int(after.lockouts),
                Value::Int(after.locked_until),
            ],
            touches: Some(("pad_accounts", Value::Blob(after.id.to_vec()))),
        }),
    ]
}

/// Points a key address at `mailbox` by a claim made at `at`: kept only if it is later than
/// the one in place (a pad's own key at its sale, at 0).
pub fn claim_alias(address: &[u8; 16], key: &[u8; 32], mailbox: &[u8; 16], at: i64) -> Attachment {
    row(
        "INSERT INTO pad_aliases (address, pubkey, mailbox, at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (address) DO UPDATE SET mailbox = excluded.mailbox, at = excluded.at \
         WHERE pad_aliases.at < excluded.at",
        vec![
            Value::Blob(address.to_vec()),
            Value::Blob(key.to_vec()),
            Value::Blob(mailbox.to_vec()),
            Value::Int(at),
        ],
    )
}

/// Names the out-of-band subscriber who may cancel the account's lost pads.
pub fn set_recovery_user(account: &[u8; 16], user: &str) -> Attachment {
    row(
        "UPDATE pad_accounts SET recovery_user = $2 WHERE id = $1",
        vec![Value::Blob(account.to_vec()), Value::Text(user.into())],
    )
}

/// Names an account's ledger account in a currency (with its opening): the first one stays.
pub fn insert_account_value(account: &[u8; 16], currency: Currency, ledger: Id) -> Attachment {
    row(
        "INSERT INTO pad_account_values (account, currency, ledger) VALUES ($1, $2, $3) \
         ON CONFLICT (account, currency) DO NOTHING",
        vec![
            Value::Blob(account.to_vec()),
            Value::Text(currency.code().into()),
            blob(&ledger),
        ],
    )
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

    /// The mailbox a key address stands for, and the time of its claim.
    pub async fn pad_alias(
        &self,
        address: &[u8; 16],
    ) -> Result<Option<([u8; 16], i64)>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT mailbox, at FROM pad_aliases WHERE address = $1".into(),
                vec![Value::Blob(address.to_vec())],
            )
            .await?;
        rows.first()
            .map(|r| Ok((bytes16(r, "mailbox")?, r.try_get("at")?)))
            .transpose()
    }

    /// The pad whose mailbox has `address`.
    pub async fn pad_of_mailbox(&self, address: &[u8; 16]) -> Result<Option<[u8; 16]>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT pad FROM pad_mailboxes WHERE address = $1".into(),
                vec![Value::Blob(address.to_vec())],
            )
            .await?;
        rows.first().map(|r| bytes16(r, "pad")).transpose()
    }

    /// A pad's mailbox address, if it has one.
    pub async fn mailbox_of_pad(&self, pad: &[u8; 16]) -> Result<Option<[u8; 16]>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT address FROM pad_mailboxes WHERE pad = $1".into(),
                vec![Value::Blob(pad.to_vec())],
            )
            .await?;
        rows.first().map(|r| bytes16(r, "address")).transpose()
    }

    /// Messages of `mailbox` released by `now`, in the relay's order, at most `max`; and how
    /// many are released in all.
    pub async fn released_messages(
        &self,
        mailbox: &[u8; 16],
        now: Timestamp,
        max: i64,
    ) -> Result<(Vec<PadMessage>, u64), StoreError> {
        let params = vec![Value::Blob(mailbox.to_vec()), Value::Int(now.as_micros())];
        let mut with_limit = params.clone();
        with_limit.push(Value::Int(max));
        let rows = self
            .fetch_all(
                "SELECT id, mailbox, sender_kind, sender, in_reply_to, body, release_at, \
                 created_at FROM pad_messages WHERE mailbox = $1 AND release_at <= $2 \
                 ORDER BY release_at, id LIMIT $3"
                    .into(),
                with_limit,
            )
            .await?;
        let count = self
            .fetch_all(
                "SELECT COUNT(*) AS n FROM pad_messages WHERE mailbox = $1 AND release_at <= $2"
                    .into(),
                params,
            )
            .await?;
        let n: i64 = count
            .first()
            .map(|r| r.try_get("n"))
            .transpose()?
            .unwrap_or(0);
        Ok((
            rows.iter().map(message).collect::<Result<_, _>>()?,
            n as u64,
        ))
    }

    /// Every message waiting in any mailbox (the simulator's and tests' count).
    pub async fn pad_messages_waiting(&self) -> Result<u64, StoreError> {
        let rows = self
            .fetch_all("SELECT COUNT(*) AS n FROM pad_messages".into(), vec![])
            .await?;
        let n: i64 = rows
            .first()
            .map(|r| r.try_get("n"))
            .transpose()?
            .unwrap_or(0);
        Ok(n as u64)
    }

    /// A voucher by its serial.
    pub async fn voucher(&self, serial: &str) -> Result<Option<VoucherRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("SELECT {VOUCHER_COLUMNS} FROM pad_vouchers WHERE serial = $1"),
                vec![Value::Text(serial.into())],
            )
            .await?;
        rows.first().map(voucher_row).transpose()
    }

    /// A voucher by the keyed hash of its code.
    pub async fn voucher_by_code(&self, hash: &[u8; 32]) -> Result<Option<VoucherRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("SELECT {VOUCHER_COLUMNS} FROM pad_vouchers WHERE code_hash = $1"),
                vec![Value::Blob(hash.to_vec())],
            )
            .await?;
        rows.first().map(voucher_row).transpose()
    }

    /// A currency's voucher float account, once vouchers were sold in it.
    pub async fn pad_float(&self, currency: Currency) -> Result<Option<Id>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT account FROM pad_floats WHERE currency = $1".into(),
                vec![Value::Text(currency.code().into())],
            )
            .await?;
        rows.first()
            .map(|r| decode_id(&r.try_get::<Vec<u8>, _>("account")?))
            .transpose()
    }

    /// A pad of retail stock, by its serial.
    pub async fn pad_stock(&self, serial: &str) -> Result<Option<StockRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT serial, pad, retailer, replaced_by, created_at FROM pad_stock \
                 WHERE serial = $1"
                    .into(),
                vec![Value::Text(serial.into())],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(StockRow {
                    serial: r.try_get("serial")?,
                    pad: r
                        .try_get::<Vec<u8>, _>("pad")?
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("stock pad".into()))?,
                    retailer: r.try_get("retailer")?,
                    replaced_by: r.try_get("replaced_by")?,
                    created_at: Timestamp(r.try_get("created_at")?),
                })
            })
            .transpose()
    }

    /// The serial of a pad made as stock.
    pub async fn pad_stock_of(&self, pad: &[u8; 16]) -> Result<Option<String>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT serial FROM pad_stock WHERE pad = $1".into(),
                vec![Value::Blob(pad.to_vec())],
            )
            .await?;
        rows.first().map(|r| Ok(r.try_get("serial")?)).transpose()
    }

    /// The out-of-band subscriber who may cancel an account's lost pads, if one was bound.
    pub async fn pad_account_recovery(&self, id: &[u8; 16]) -> Result<Option<String>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT recovery_user FROM pad_accounts WHERE id = $1".into(),
                vec![Value::Blob(id.to_vec())],
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| r.try_get::<Option<String>, _>("recovery_user"))
            .transpose()?
            .flatten())
    }

    /// A PIN account.
    pub async fn pad_account(&self, id: &[u8; 16]) -> Result<Option<PadAccountRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT id, pin_hash, attempts, lockouts, locked_until, created_at \
                 FROM pad_accounts WHERE id = $1"
                    .into(),
                vec![Value::Blob(id.to_vec())],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(PadAccountRow {
                    id: r
                        .try_get::<Vec<u8>, _>("id")?
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("pad account id".into()))?,
                    pin_hash: r.try_get("pin_hash")?,
                    attempts: r.try_get("attempts")?,
                    lockouts: r.try_get("lockouts")?,
                    locked_until: r.try_get("locked_until")?,
                    created_at: Timestamp(r.try_get("created_at")?),
                })
            })
            .transpose()
    }

    /// An account's ledger accounts, by currency.
    pub async fn pad_account_values(
        &self,
        account: &[u8; 16],
    ) -> Result<Vec<(Currency, Id)>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT currency, ledger FROM pad_account_values WHERE account = $1 \
                 ORDER BY currency"
                    .into(),
                vec![Value::Blob(account.to_vec())],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let code: String = r.try_get("currency")?;
                Ok((
                    Currency::from_code(&code)
                        .map_err(|_| StoreError::Corrupt("pad account currency".into()))?,
                    decode_id(&r.try_get::<Vec<u8>, _>("ledger")?)?,
                ))
            })
            .collect()
    }
}
