//! Trading sessions (issue [7]): one row per session and role on this node (`am` at the
//! customer's account manager, `mta` at the merchant's operator; one node may hold both), the
//! merchants that take sessions here, and the AM's session numbers.
//!
//! A row holds its machine as JSON with its state beside it; every step moves it under a
//! guard on the state it was decided from ([`update`]). Session numbers come from a counter
//! bumped in a transaction of its own: a crash after it only skips a number, never reuses one.

use crate::oob::{blob, row, row_is};
use crate::rows::{Value, id as decode_id};
use crate::{Attachment, Conflict, RowWrite, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use tally_kernel::{Id, Timestamp};

/// A session's row for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRow {
    /// `am` or `mta`.
    pub role: String,
    /// The session id.
    pub session: String,
    /// The machine's state, by its stored name.
    pub state: String,
    /// AM: the customer; MTA: the merchant.
    pub owner: String,
    /// AM: the opening request's namespaced idempotency key.
    pub client_key: Option<String>,
    /// The machine (JSON).
    pub machine: String,
    /// When its `poll_timeout` falls.
    pub wake_at: Option<Timestamp>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl TradeRow {
    fn key(&self) -> String {
        format!("{}:{}", self.role, self.session)
    }
}

/// A merchant that takes trading sessions at this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMerchant {
    /// Its name (what customers' AMs send).
    pub name: String,
    /// Where it is paid.
    pub account: Id,
    /// Agent mode: every session acked at once.
    pub auto_ack: bool,
    /// The merchant agent's key (hex) that signs the merchant's records.
    pub agent_key: Option<String>,
}

/// An account an operator keeps for a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAccount {
    /// The peer's node id.
    pub peer: String,
    /// ISO-4217 code.
    pub currency: String,
    /// `owed_to` (this operator owes the peer) or `owed_by` (the peer owes it).
    pub direction: String,
    /// The ledger account.
    pub account: Id,
}

/// A record for a billing system (M8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingRecord {
    /// Its id.
    pub id: Id,
    /// `withdrawal` (the customer's operator) or `deposit` (the merchant's).
    pub kind: String,
    /// The session.
    pub session: String,
    /// The customer or the merchant.
    pub owner: String,
    /// Its account.
    pub account: Id,
    /// Minor units.
    pub amount: i64,
    /// ISO-4217 code.
    pub currency: String,
    /// The other operator's node id.
    pub peer: String,
    /// When.
    pub at: Timestamp,
}

const COLUMNS: &str =
    "key, role, session, state, owner, client_key, machine, wake_at, created_at, updated_at";
const SELECT: &str = "SELECT key, role, session, state, owner, client_key, machine, wake_at, \
     created_at, updated_at FROM trading_sessions";

fn write(r: &TradeRow, tail: &'static str) -> Attachment {
    Attachment::Row(RowWrite::Insert {
        table: "trading_sessions",
        columns: COLUMNS,
        values: vec![
            Value::Text(r.key()),
            Value::Text(r.role.clone()),
            Value::Text(r.session.clone()),
            Value::Text(r.state.clone()),
            Value::Text(r.owner.clone()),
            Value::opt_text(r.client_key.clone()),
            Value::Text(r.machine.clone()),
            Value::opt_int(r.wake_at.map(|t| t.as_micros())),
            Value::Int(r.created_at.as_micros()),
            Value::Int(r.updated_at.as_micros()),
        ],
        tail,
        key: Some(("key", Value::Text(r.key()))),
    })
}

/// A new session row (a second row for the same role and session fails the job).
pub fn insert(r: &TradeRow) -> Attachment {
    write(r, "")
}

/// Moves a session row from the state the caller read (`before`) to `after`; if another
/// request moved it first, the job fails with [`StoreError::Conflict`].
pub fn update(before: &TradeRow, after: &TradeRow) -> [Attachment; 2] {
    [
        row_is(
            "trading_sessions",
            "key",
            Value::Text(before.key()),
            vec![("state", Value::Text(before.state.clone()))],
            Conflict::Moved("the session changed meanwhile"),
        ),
        write(
            after,
            " ON CONFLICT (key) DO UPDATE SET state = excluded.state, machine = excluded.machine, \
             wake_at = excluded.wake_at, updated_at = excluded.updated_at",
        ),
    ]
}

/// Adds or changes a merchant that takes sessions here.
pub fn upsert_merchant(m: &SessionMerchant, now: Timestamp) -> Attachment {
    row(
        "INSERT INTO session_merchants (name, account, auto_ack, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET account = excluded.account, auto_ack = excluded.auto_ack, \
         updated_at = excluded.updated_at",
        vec![
            Value::Text(m.name.clone()),
            blob(&m.account),
            Value::Int(i64::from(m.auto_ack)),
            Value::Int(now.as_micros()),
        ],
    )
}

/// Names the account this operator keeps for `peer` (with the command that opened it).
pub fn peer_account(a: &PeerAccount) -> Attachment {
    row(
        "INSERT INTO peer_accounts (peer, currency, direction, account) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (peer, currency, direction) DO NOTHING",
        vec![
            Value::Text(a.peer.clone()),
            Value::Text(a.currency.clone()),
            Value::Text(a.direction.clone()),
            blob(&a.account),
        ],
    )
}

/// Sets the key of a merchant's agent.
pub fn set_agent_key(name: &str, key: &str, now: Timestamp) -> Attachment {
    row(
        "UPDATE session_merchants SET agent_key = $1, updated_at = $2 WHERE name = $3",
        vec![
            Value::Text(key.into()),
            Value::Int(now.as_micros()),
            Value::Text(name.into()),
        ],
    )
}

/// K1 of an order as the MTA signed it, and K2 once the merchant escrowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKeyRow {
    /// The session.
    pub session: String,
    /// The order id.
    pub order: String,
    /// `sign(K1)^MTA` (JSON).
    pub signed: String,
    /// K2, sealed under the node's escrow key.
    pub k2_sealed: Option<Vec<u8>>,
    /// SHA-256 of the package K2 belongs to, hex.
    pub package: Option<String>,
}

/// Keeps an order's K1 (the first one: the same order again changes nothing).
pub fn insert_order_key(r: &OrderKeyRow, now: Timestamp) -> Attachment {
    row(
        "INSERT INTO session_order_keys (session, order_id, signed, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (session, order_id) DO NOTHING",
        vec![
            Value::Text(r.session.clone()),
            Value::Text(r.order.clone()),
            Value::Text(r.signed.clone()),
            Value::Int(now.as_micros()),
        ],
    )
}

/// Escrows K2 (sealed) of an order's current package (a re-send replaces it).
pub fn escrow(
    session: &str,
    order: &str,
    k2_sealed: Vec<u8>,
    package: &str,
    now: Timestamp,
) -> Attachment {
    row(
        "UPDATE session_order_keys SET k2_sealed = $1, package = $2, updated_at = $3 \
         WHERE session = $4 AND order_id = $5",
        vec![
            Value::Blob(k2_sealed),
            Value::Text(package.into()),
            Value::Int(now.as_micros()),
            Value::Text(session.into()),
            Value::Text(order.into()),
        ],
    )
}

/// Keeps a cleared transaction's receipt (the first one: the same transaction again changes
/// nothing).
pub fn insert_receipt(
    transaction: &str,
    session: &str,
    receipt: &str,
    now: Timestamp,
) -> Attachment {
    row(
        "INSERT INTO session_receipts (transaction_id, session, receipt, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (transaction_id) DO NOTHING",
        vec![
            Value::Text(transaction.into()),
            Value::Text(session.into()),
            Value::Text(receipt.into()),
            Value::Int(now.as_micros()),
        ],
    )
}

/// A record for the billing systems, written with the step that clears the session.
pub fn billing(r: &BillingRecord) -> Attachment {
    row(
        "INSERT INTO billing_records (id, kind, session, owner, account, amount, currency, peer, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            blob(&r.id),
            Value::Text(r.kind.clone()),
            Value::Text(r.session.clone()),
            Value::Text(r.owner.clone()),
            blob(&r.account),
            Value::Int(r.amount),
            Value::Text(r.currency.clone()),
            Value::Text(r.peer.clone()),
            Value::Int(r.at.as_micros()),
        ],
    )
}

/// An exchange table this operator published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FxTable {
    /// Its id.
    pub id: Id,
    /// Source currency.
    pub from: String,
    /// Target currency.
    pub to: String,
    /// Target minor units…
    pub numerator: i64,
    /// …per this many source minor units.
    pub denominator: i64,
    /// The rate as published, in major units (`1.0842`).
    pub rate_text: String,
    /// From when it holds.
    pub valid_from: Timestamp,
    /// Until when (exclusive).
    pub valid_until: Timestamp,
    /// The signed record (JSON).
    pub signed: String,
}

/// Stores a published exchange table.
pub fn insert_fx(t: &FxTable) -> Attachment {
    row(
        "INSERT INTO fx_tables (id, from_cur, to_cur, numerator, denominator, rate_text, valid_from, \
         valid_until, signed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            blob(&t.id),
            Value::Text(t.from.clone()),
            Value::Text(t.to.clone()),
            Value::Int(t.numerator),
            Value::Int(t.denominator),
            Value::Text(t.rate_text.clone()),
            Value::Int(t.valid_from.as_micros()),
            Value::Int(t.valid_until.as_micros()),
            Value::Text(t.signed.clone()),
        ],
    )
}

fn trade_row(r: &AnyRow) -> Result<TradeRow, StoreError> {
    Ok(TradeRow {
        role: r.try_get("role")?,
        session: r.try_get("session")?,
        state: r.try_get("state")?,
        owner: r.try_get("owner")?,
        client_key: r.try_get("client_key")?,
        machine: r.try_get("machine")?,
        wake_at: r.try_get::<Option<i64>, _>("wake_at")?.map(Timestamp),
        created_at: Timestamp(r.try_get("created_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
    })
}

impl Store {
    /// The next session number of this AM (committed at once: never handed out twice).
    pub async fn next_session_number(&self) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "UPDATE session_numbers SET last = last + 1 WHERE id = 1 RETURNING last",
        )
        .fetch_one(self.pool())
        .await?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt("session number".into()))
    }

    /// A session's row for `role`.
    pub async fn trade(&self, role: &str, session: &str) -> Result<Option<TradeRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{SELECT} WHERE key = $1"),
                vec![Value::Text(format!("{role}:{session}"))],
            )
            .await?;
        rows.first().map(trade_row).transpose()
    }

    /// The AM row opened under a namespaced idempotency key.
    pub async fn trade_by_key(&self, client_key: &str) -> Result<Option<TradeRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{SELECT} WHERE client_key = $1"),
                vec![Value::Text(client_key.into())],
            )
            .await?;
        rows.first().map(trade_row).transpose()
    }

    /// Sessions of `owner` (a customer's at the AM, a merchant's at the MTA), newest first.
    pub async fn trades_of(&self, owner: &str, limit: i64) -> Result<Vec<TradeRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{SELECT} WHERE owner = $1 ORDER BY created_at DESC, key LIMIT $2"),
                vec![Value::Text(owner.into()), Value::Int(limit)],
            )
            .await?;
        rows.iter().map(trade_row).collect()
    }

    /// Rows whose `poll_timeout` has passed.
    pub async fn due_trades(
        &self,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<TradeRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!(
                    "{SELECT} WHERE wake_at IS NOT NULL AND wake_at <= $1 ORDER BY wake_at LIMIT $2"
                ),
                vec![Value::Int(now.as_micros()), Value::Int(limit)],
            )
            .await?;
        rows.iter().map(trade_row).collect()
    }

    /// A merchant that takes sessions here.
    pub async fn session_merchant(
        &self,
        name: &str,
    ) -> Result<Option<SessionMerchant>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT name, account, auto_ack, agent_key FROM session_merchants WHERE name = $1"
                    .into(),
                vec![Value::Text(name.into())],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(SessionMerchant {
                    name: r.try_get("name")?,
                    account: decode_id(&r.try_get::<Vec<u8>, _>("account")?)?,
                    auto_ack: r.try_get::<i64, _>("auto_ack")? != 0,
                    agent_key: r.try_get("agent_key")?,
                })
            })
            .transpose()
    }

    /// The accounts this operator keeps for its peers.
    pub async fn peer_accounts(&self) -> Result<Vec<PeerAccount>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT peer, currency, direction, account FROM peer_accounts \
                 ORDER BY peer, currency, direction"
                    .into(),
                vec![],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PeerAccount {
                    peer: r.try_get("peer")?,
                    currency: r.try_get("currency")?,
                    direction: r.try_get("direction")?,
                    account: decode_id(&r.try_get::<Vec<u8>, _>("account")?)?,
                })
            })
            .collect()
    }

    /// Billing records from `from` (inclusive) to `to` (exclusive), oldest first.
    pub async fn billing_records(
        &self,
        from: Timestamp,
        to: Timestamp,
        limit: i64,
    ) -> Result<Vec<BillingRecord>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT id, kind, session, owner, account, amount, currency, peer, at \
                 FROM billing_records WHERE at >= $1 AND at < $2 ORDER BY at, id LIMIT $3"
                    .into(),
                vec![
                    Value::Int(from.as_micros()),
                    Value::Int(to.as_micros()),
                    Value::Int(limit),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(BillingRecord {
                    id: decode_id(&r.try_get::<Vec<u8>, _>("id")?)?,
                    kind: r.try_get("kind")?,
                    session: r.try_get("session")?,
                    owner: r.try_get("owner")?,
                    account: decode_id(&r.try_get::<Vec<u8>, _>("account")?)?,
                    amount: r.try_get("amount")?,
                    currency: r.try_get("currency")?,
                    peer: r.try_get("peer")?,
                    at: Timestamp(r.try_get("at")?),
                })
            })
            .collect()
    }

    /// The exchange tables valid at `now` (the newest per pair first), or of one pair.
    pub async fn fx_tables(
        &self,
        now: Timestamp,
        pair: Option<(&str, &str)>,
    ) -> Result<Vec<FxTable>, StoreError> {
        let (filter, mut params) = match pair {
            Some((from, to)) => (
                " AND from_cur = $2 AND to_cur = $3",
                vec![Value::Text(from.into()), Value::Text(to.into())],
            ),
            None => ("", vec![]),
        };
        params.insert(0, Value::Int(now.as_micros()));
        let rows = self
            .fetch_all(
                format!(
                    "SELECT id, from_cur, to_cur, numerator, denominator, rate_text, valid_from, \
                     valid_until, signed FROM fx_tables WHERE valid_from <= $1 AND valid_until > $1{filter} \
                     ORDER BY from_cur, to_cur, valid_from DESC"
                ),
                params,
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FxTable {
                    id: decode_id(&r.try_get::<Vec<u8>, _>("id")?)?,
                    from: r.try_get("from_cur")?,
                    to: r.try_get("to_cur")?,
                    numerator: r.try_get("numerator")?,
                    denominator: r.try_get("denominator")?,
                    rate_text: r.try_get("rate_text")?,
                    valid_from: Timestamp(r.try_get("valid_from")?),
                    valid_until: Timestamp(r.try_get("valid_until")?),
                    signed: r.try_get("signed")?,
                })
            })
            .collect()
    }

    /// An order's keys at the MTA.
    /// A session's receipts, `(transaction id, receipt)`, in the order of its transactions.
    pub async fn session_receipts(
        &self,
        session: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT transaction_id, receipt FROM session_receipts WHERE session = $1 \
                 ORDER BY created_at, transaction_id"
                    .to_string(),
                vec![Value::Text(session.into())],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("transaction_id")?, r.try_get("receipt")?)))
            .collect()
    }

    pub async fn order_key(
        &self,
        session: &str,
        order: &str,
    ) -> Result<Option<OrderKeyRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT session, order_id, signed, k2_sealed, package FROM session_order_keys \
                 WHERE session = $1 AND order_id = $2"
                    .to_string(),
                vec![Value::Text(session.into()), Value::Text(order.into())],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(OrderKeyRow {
                    session: r.try_get("session")?,
                    order: r.try_get("order_id")?,
                    signed: r.try_get("signed")?,
                    k2_sealed: r.try_get("k2_sealed")?,
                    package: r.try_get("package")?,
                })
            })
            .transpose()
    }
}
