//! Tables of pads' service providers (issue [8], SPEC P3, P4, P7; `docs/protocols/pads.md`,
//! Money and Forwarding): the providers, the forwards taken for them, and the charge lines
//! that say how each pad debit in a clearing account is split between the operator and a
//! provider, and which shares are paid out.
//!
//! Every share is paid once: a settlement marks its lines under a guard on their unpaid flag,
//! in the transaction that moves the money, so two settlements (here or on another node) that
//! read the same lines pay them once.

use crate::guarded::{Conflict, RowWrite};
use crate::oob::{blob, row, row_is};
use crate::rows::{Value, bytes16, id as decode_id};
use crate::{Attachment, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use tally_kernel::{Currency, Id, Timestamp};

/// A registered provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRow {
    /// Its name (`[a-z0-9-]`, 1 to 64).
    pub name: String,
    /// The tenant that answers for it.
    pub owner: String,
    /// The merchant account its prices are paid into.
    pub account: Id,
    /// That account's currency, the price's.
    pub currency: Currency,
    /// Its price per request.
    pub price_minor: i64,
    /// Where forwards go.
    pub webhook: String,
    /// Whether its requests are held in escrow until it performed.
    pub escrow: bool,
    /// When it registered.
    pub created_at: Timestamp,
    /// When its terms last changed.
    pub updated_at: Timestamp,
}

/// Registers a provider or changes its terms (the caller checked the owner).
pub fn upsert_provider(p: &ProviderRow) -> Attachment {
    row(
        "INSERT INTO pad_providers (name, owner, account, currency, price_minor, webhook, \
         escrow, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (name) DO UPDATE SET account = excluded.account, \
         currency = excluded.currency, price_minor = excluded.price_minor, \
         webhook = excluded.webhook, escrow = excluded.escrow, updated_at = excluded.updated_at",
        vec![
            Value::Text(p.name.clone()),
            Value::Text(p.owner.clone()),
            blob(&p.account),
            Value::Text(p.currency.code().into()),
            Value::Int(p.price_minor),
            Value::Text(p.webhook.clone()),
            Value::Int(i64::from(p.escrow)),
            Value::Int(p.created_at.as_micros()),
            Value::Int(p.updated_at.as_micros()),
        ],
    )
}

/// A forward taken for a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRow {
    /// The request id the provider sees.
    pub request: [u8; 16],
    /// The pad that asked.
    pub pad: [u8; 16],
    /// The provider.
    pub provider: String,
    /// Whether it is held in escrow.
    pub escrow: bool,
    /// The provider's price when it was taken.
    pub price_minor: i64,
    /// `sent`, `replied`; escrowed: `held`, `performed`, `paid`, `refused`, `disputed`.
    pub state: String,
    /// The frame step's idempotency key (its transfer is the escrow's hold).
    pub step_key: String,
    /// The escrow's deadline (µs; the reply's deadline otherwise).
    pub deadline: Timestamp,
    /// A metered escrow: what the provider charged of the price held (`None`: all of it).
    pub charge_minor: Option<i64>,
    /// The commission on its price when it was taken, basis points (`None`: taken before
    /// this was kept).
    pub commission_bps: Option<i64>,
    /// When it was taken.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A new forward.
pub fn insert_forward(f: &ForwardRow) -> Attachment {
    row(
        "INSERT INTO pad_forwards (request, pad, provider, escrow, price_minor, state, step_key, \
         deadline, created_at, updated_at, commission_bps) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        vec![
            Value::Blob(f.request.to_vec()),
            Value::Blob(f.pad.to_vec()),
            Value::Text(f.provider.clone()),
            Value::Int(i64::from(f.escrow)),
            Value::Int(f.price_minor),
            Value::Text(f.state.clone()),
            Value::Text(f.step_key.clone()),
            Value::Int(f.deadline.as_micros()),
            Value::Int(f.created_at.as_micros()),
            Value::Int(f.updated_at.as_micros()),
            Value::opt_int(f.commission_bps),
        ],
    )
}

/// Moves a forward from the state the caller read to `state`, under a guard on it.
pub fn move_forward(request: &[u8; 16], from: &str, to: &str, now: Timestamp) -> [Attachment; 2] {
    [
        row_is(
            "pad_forwards",
            "request",
            Value::Blob(request.to_vec()),
            vec![("state", Value::Text(from.into()))],
            Conflict::Moved("the forward moved meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE pad_forwards SET state = $2, updated_at = $3 WHERE request = $1",
            params: vec![
                Value::Blob(request.to_vec()),
                Value::Text(to.into()),
                Value::Int(now.as_micros()),
            ],
            touches: Some(("pad_forwards", Value::Blob(request.to_vec()))),
        }),
    ]
}

/// An escrowed forward performed at a metered `charge` of its price: moves it from `from` to
/// `to` under a guard, with the charge.
pub fn meter_forward(
    request: &[u8; 16],
    from: &str,
    to: &str,
    charge_minor: i64,
    now: Timestamp,
) -> [Attachment; 2] {
    [
        row_is(
            "pad_forwards",
            "request",
            Value::Blob(request.to_vec()),
            vec![("state", Value::Text(from.into()))],
            Conflict::Moved("the forward moved meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE pad_forwards SET state = $2, updated_at = $3, charge_minor = $4 \
                  WHERE request = $1",
            params: vec![
                Value::Blob(request.to_vec()),
                Value::Text(to.into()),
                Value::Int(now.as_micros()),
                Value::Int(charge_minor),
            ],
            touches: Some(("pad_forwards", Value::Blob(request.to_vec()))),
        }),
    ]
}

/// One debit of a pad into clearing, split between the operator and a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRow {
    /// Its id (a forward's: its request id).
    pub id: [u8; 16],
    /// The pad debited.
    pub pad: [u8; 16],
    /// The currency.
    pub currency: Currency,
    /// The provider with a share, if any.
    pub provider: Option<String>,
    /// The operator's share: byte debit, post price, commission.
    pub operator_minor: i64,
    /// The provider's share: its price less the commission.
    pub provider_minor: i64,
    /// An escrow's hold, not in clearing yet.
    pub held: bool,
    /// The operator's share is paid out.
    pub fee_paid: bool,
    /// The provider's share is paid out (or there is none).
    pub provider_paid: bool,
    /// When it was charged.
    pub created_at: Timestamp,
}

/// A new charge line.
pub fn insert_charge(c: &ChargeRow) -> Attachment {
    row(
        "INSERT INTO pad_charges (id, pad, currency, provider, operator_minor, provider_minor, \
         held, fee_paid, provider_paid, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        vec![
            Value::Blob(c.id.to_vec()),
            Value::Blob(c.pad.to_vec()),
            Value::Text(c.currency.code().into()),
            Value::opt_text(c.provider.clone()),
            Value::Int(c.operator_minor),
            Value::Int(c.provider_minor),
            Value::Int(i64::from(c.held)),
            Value::Int(i64::from(c.fee_paid)),
            Value::Int(i64::from(c.provider_paid)),
            Value::Int(c.created_at.as_micros()),
        ],
    )
}

/// An escrow's hold is resolved: the line's shares become what was posted into clearing.
pub fn resolve_charge(id: &[u8; 16], operator_minor: i64, provider_minor: i64) -> [Attachment; 2] {
    [
        row_is(
            "pad_charges",
            "id",
            Value::Blob(id.to_vec()),
            vec![("held", Value::Int(1))],
            Conflict::Moved("the escrow was resolved meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE pad_charges SET held = 0, operator_minor = $2, provider_minor = $3, \
                  provider_paid = CASE WHEN $3 = 0 THEN 1 ELSE provider_paid END WHERE id = $1",
            params: vec![
                Value::Blob(id.to_vec()),
                Value::Int(operator_minor),
                Value::Int(provider_minor),
            ],
            touches: Some(("pad_charges", Value::Blob(id.to_vec()))),
        }),
    ]
}

/// Which share a settlement pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// The operator's.
    Operator,
    /// The provider's.
    Provider,
}

/// Marks a line's `share` paid by `settlement`, under a guard that it was unpaid.
pub fn pay_share(id: &[u8; 16], share: Share, settlement: Id) -> [Attachment; 2] {
    let (column, sql) = match share {
        Share::Operator => (
            "fee_paid",
            "UPDATE pad_charges SET fee_paid = 1, fee_settlement = $2 WHERE id = $1",
        ),
        Share::Provider => (
            "provider_paid",
            "UPDATE pad_charges SET provider_paid = 1, provider_settlement = $2 WHERE id = $1",
        ),
    };
    [
        row_is(
            "pad_charges",
            "id",
            Value::Blob(id.to_vec()),
            vec![(column, Value::Int(0)), ("held", Value::Int(0))],
            Conflict::Moved("the charge line was settled meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql,
            params: vec![Value::Blob(id.to_vec()), blob(&settlement)],
            touches: Some(("pad_charges", Value::Blob(id.to_vec()))),
        }),
    ]
}

/// Names a currency's fee account (with its opening): the first one stays.
pub fn set_fees_account(currency: Currency, account: Id) -> Attachment {
    row(
        "UPDATE pad_currencies SET fees_account = $2 WHERE currency = $1 AND fees_account IS NULL",
        vec![Value::Text(currency.code().into()), blob(&account)],
    )
}

const PROVIDER_SELECT: &str = "SELECT name, owner, account, currency, price_minor, webhook, escrow, \
     created_at, updated_at FROM pad_providers";
const FORWARD_SELECT: &str = "SELECT request, pad, provider, escrow, price_minor, state, step_key, \
     deadline, charge_minor, commission_bps, created_at, updated_at FROM pad_forwards";
const CHARGE_SELECT: &str = "SELECT id, pad, currency, provider, operator_minor, provider_minor, \
     held, fee_paid, provider_paid, created_at FROM pad_charges";

fn currency(r: &AnyRow) -> Result<Currency, StoreError> {
    let code: String = r.try_get("currency")?;
    Currency::from_code(&code).map_err(|_| StoreError::Corrupt("pad provider currency".into()))
}

fn provider(r: &AnyRow) -> Result<ProviderRow, StoreError> {
    Ok(ProviderRow {
        name: r.try_get("name")?,
        owner: r.try_get("owner")?,
        account: decode_id(&r.try_get::<Vec<u8>, _>("account")?)?,
        currency: currency(r)?,
        price_minor: r.try_get("price_minor")?,
        webhook: r.try_get("webhook")?,
        escrow: r.try_get::<i64, _>("escrow")? != 0,
        created_at: Timestamp(r.try_get("created_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
    })
}

fn forward(r: &AnyRow) -> Result<ForwardRow, StoreError> {
    Ok(ForwardRow {
        request: bytes16(r, "request")?,
        pad: bytes16(r, "pad")?,
        provider: r.try_get("provider")?,
        escrow: r.try_get::<i64, _>("escrow")? != 0,
        price_minor: r.try_get("price_minor")?,
        state: r.try_get("state")?,
        step_key: r.try_get("step_key")?,
        deadline: Timestamp(r.try_get("deadline")?),
        charge_minor: r.try_get("charge_minor")?,
        commission_bps: r.try_get("commission_bps")?,
        created_at: Timestamp(r.try_get("created_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
    })
}

fn charge(r: &AnyRow) -> Result<ChargeRow, StoreError> {
    Ok(ChargeRow {
        id: bytes16(r, "id")?,
        pad: bytes16(r, "pad")?,
        currency: currency(r)?,
        provider: r.try_get("provider")?,
        operator_minor: r.try_get("operator_minor")?,
        provider_minor: r.try_get("provider_minor")?,
        held: r.try_get::<i64, _>("held")? != 0,
        fee_paid: r.try_get::<i64, _>("fee_paid")? != 0,
        provider_paid: r.try_get::<i64, _>("provider_paid")? != 0,
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

impl Store {
    /// A provider by name.
    pub async fn pad_provider(&self, name: &str) -> Result<Option<ProviderRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{PROVIDER_SELECT} WHERE name = $1"),
                vec![Value::Text(name.into())],
            )
            .await?;
        rows.first().map(provider).transpose()
    }

    /// A forward by its request id.
    pub async fn pad_forward(&self, request: &[u8; 16]) -> Result<Option<ForwardRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{FORWARD_SELECT} WHERE request = $1"),
                vec![Value::Blob(request.to_vec())],
            )
            .await?;
        rows.first().map(forward).transpose()
    }

    /// Escrowed forwards to resolve now, at most `limit`: released or declined ones, held or
    /// performed ones whose deadline passed by `now`, and disputed ones whose deadline passed
    /// by `disputed_before`.
    pub async fn pad_escrows_due(
        &self,
        now: Timestamp,
        disputed_before: Timestamp,
        limit: i64,
    ) -> Result<Vec<ForwardRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!(
                    "{FORWARD_SELECT} WHERE escrow = 1 AND (state IN ('released', 'declined') \
                     OR (deadline <= $1 AND state IN ('held', 'performed')) \
                     OR (deadline <= $3 AND state = 'disputed')) \
                     ORDER BY deadline LIMIT $2"
                ),
                vec![
                    Value::Int(now.as_micros()),
                    Value::Int(limit),
                    Value::Int(disputed_before.as_micros()),
                ],
            )
            .await?;
        rows.iter().map(forward).collect()
    }

    /// A charge line.
    pub async fn pad_charge(&self, id: &[u8; 16]) -> Result<Option<ChargeRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{CHARGE_SELECT} WHERE id = $1"),
                vec![Value::Blob(id.to_vec())],
            )
            .await?;
        rows.first().map(charge).transpose()
    }

    /// Lines whose `share` is unpaid (not held), at most `limit`: the operator's shares of
    /// currency `of`, or the shares of provider `of`.
    pub async fn pad_unpaid(
        &self,
        share: Share,
        of: &str,
        limit: i64,
    ) -> Result<Vec<ChargeRow>, StoreError> {
        let filter = match share {
            Share::Operator => "currency = $1 AND fee_paid = 0",
            Share::Provider => "provider = $1 AND provider_paid = 0",
        };
        let rows = self
            .fetch_all(
                format!("{CHARGE_SELECT} WHERE {filter} AND held = 0 ORDER BY id LIMIT $2"),
                vec![Value::Text(of.into()), Value::Int(limit)],
            )
            .await?;
        rows.iter().map(charge).collect()
    }

    /// Providers with unpaid shares.
    pub async fn pad_providers_unpaid(&self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT DISTINCT provider FROM pad_charges WHERE provider IS NOT NULL \
                 AND provider_paid = 0 AND held = 0 ORDER BY provider"
                    .into(),
                vec![],
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("provider").map_err(Into::into))
            .collect()
    }

    /// Every currency pads were sold in, with its fee account if opened.
    pub async fn pad_currencies_fees(&self) -> Result<Vec<(Currency, Option<Id>)>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT currency, fees_account FROM pad_currencies ORDER BY currency".into(),
                vec![],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let fees = r
                    .try_get::<Option<Vec<u8>>, _>("fees_account")?
                    .map(|b| decode_id(&b))
                    .transpose()?;
                Ok((currency(r)?, fees))
            })
            .collect()
    }

    /// Sums over a currency's lines not held: `(operator unpaid, provider unpaid)`, the
    /// amount its clearing account must hold (the simulator's and tests' check).
    pub async fn pad_clearing_owed(&self, currency: Currency) -> Result<(i64, i64), StoreError> {
        let rows = self
            .fetch_all(
                "SELECT \
                 CAST(COALESCE(SUM(CASE WHEN fee_paid = 0 THEN operator_minor ELSE 0 END), 0) \
                 AS BIGINT) AS o, \
                 CAST(COALESCE(SUM(CASE WHEN provider_paid = 0 THEN provider_minor ELSE 0 END), 0) \
                 AS BIGINT) AS p \
                 FROM pad_charges WHERE currency = $1 AND held = 0"
                    .into(),
                vec![Value::Text(currency.code().into())],
            )
            .await?;
        let r = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("no sum".into()))?;
        Ok((r.try_get("o")?, r.try_get("p")?))
    }
}
