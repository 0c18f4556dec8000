//! Federation (issue [7]): the other operators' nodes this node exchanges sealed messages with.

use serde::{Deserialize, Serialize};
use tally_kernel::Timestamp;
use utoipa::ToSchema;

/// `POST /v1/peers` (operator): add a peer node, or change its name or URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPeerRequest {
    /// The operator's name for it: letters, digits, `-`, `_`, `.`; unique on this node.
    pub name: String,
    /// Its API's base URL (`http` or `https`), where it takes `POST /v1/peer/messages`.
    pub url: String,
    /// Its Ed25519 node key, hex, as its `GET /v1/node` publishes it.
    pub public_key: String,
    /// The key's fingerprint (SHA-256, hex) as its operator gave it out of band: it must match.
    pub fingerprint: String,
}

/// A peer node and the traffic with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PeerView {
    /// Its node id: the SHA-256 of its node key, hex (its key's fingerprint).
    pub node_id: String,
    /// The operator's name for it.
    pub name: String,
    /// Its API's base URL.
    pub url: String,
    /// Its Ed25519 node key, hex.
    pub public_key: String,
    /// When it was added.
    #[schema(value_type = i64)]
    pub added_at: Timestamp,
    /// Messages to it not delivered yet (retried with backoff).
    pub pending: i64,
    /// Messages to it delivered.
    pub sent: i64,
    /// Messages to it that it refused for good.
    pub failed: i64,
    /// Messages from it accepted.
    pub received: i64,
    /// When its last message arrived.
    #[schema(value_type = Option<i64>)]
    pub last_received_at: Option<Timestamp>,
}

/// `POST /v1/peer/messages`: a sealed message taken (now or before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PeerMessageTaken {
    /// The message's id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// True when this id had been taken before: nothing was applied again.
    pub duplicate: bool,
}

/// `POST /v1/peers/{peer}/ping` (operator): a `ping` queued for the peer, which answers with
/// a `pong`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PingQueued {
    /// The ping's id.
    pub id: String,
    /// The peer's node id.
    pub to: String,
}

/// The schema of a sealed message between nodes (`POST /v1/peer/messages`): a signed record
/// of domain `tally/peer-message/v1` whose bytes are the envelope `{id, from, to, sent_at,
/// kind, body}` (docs/protocols/sessions.md).
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only
pub struct SealedMessageDoc {
    /// `tally/peer-message/v1`.
    domain: String,
    /// The envelope's RFC 8785 JSON, as a string.
    bytes: String,
    /// Ed25519 over `domain 0x00 bytes`, hex.
    signature: String,
    /// The sender's node id (its key's fingerprint), hex.
    signer: String,
}

/// `POST /v1/trading-sessions` (a customer, at its own operator's node): open a trading
/// session with a merchant at another operator (or this one), holding the deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenTradingSession {
    /// The customer's account the deposit is held on.
    #[schema(value_type = String)]
    pub account: tally_kernel::Id,
    /// The deposit, e.g. `"10.00 EUR"` (the account's currency).
    #[schema(value_type = String, example = "10.00 EUR")]
    #[serde(with = "crate::amount_text")]
    pub deposit: tally_kernel::Amount,
    /// The merchant, as its operator names it.
    pub merchant: String,
    /// The merchant's operator: a peer's name or node id, or this node's id.
    pub operator: String,
    /// How long the session may last, seconds (default 3600, at most 7 days).
    #[serde(default)]
    pub lifetime_s: Option<i64>,
    /// The customer's session key (Ed25519 public key, hex), to buy through the merchant's
    /// agent: it signs the tab the customer opens there. Made by `tally session open`.
    #[serde(default)]
    pub customer_key: Option<String>,
}

/// `PUT /v1/session-merchants/{name}` (the operator, or the merchant for its own account):
/// a merchant that takes trading sessions at this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionMerchantRequest {
    /// Where it is paid (its currency is the merchant's).
    #[schema(value_type = String)]
    pub account: tally_kernel::Id,
    /// Agent mode: ack every session at once (default false: the merchant acks each).
    #[serde(default)]
    pub auto_ack: bool,
}

/// A merchant that takes trading sessions here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionMerchantView {
    /// Its name.
    pub name: String,
    /// Where it is paid.
    #[schema(value_type = String)]
    pub account: tally_kernel::Id,
    /// Its currency.
    pub currency: String,
    /// Agent mode.
    pub auto_ack: bool,
}

/// `POST /v1/trading-sessions/{session}/answer` (the merchant, at its operator's node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantAnswer {
    /// True to take the session, false to decline it.
    pub accept: bool,
}

/// `POST /v1/trading-sessions/{session}/verdict` (the merchant's operator, on a disputed
/// session): what the merchant is paid, in its currency, from nothing up to the deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerdictRequest {
    /// Minor units of `currency`.
    pub total_minor: i64,
    /// The merchant's currency (ISO 4217): a verdict in another is refused.
    pub currency: String,
}

/// `POST /v1/trading-sessions/{session}/transactions` (the customer, at its operator): the
/// session's next transaction (M4), once the one before is cleared: a new deposit held, a new
/// initiation to the merchant's operator. Naming the transaction makes a retry the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NextTransaction {
    /// `<session id>.<seq>`: the transaction after the session's current one.
    pub transaction: String,
    /// Its deposit, e.g. `"10.00 EUR"` (the session's currency).
    #[schema(value_type = String, example = "10.00 EUR")]
    #[serde(with = "crate::amount_text")]
    pub deposit: tally_kernel::Amount,
}

/// `GET /v1/trading-sessions/{session}/receipts`: a cleared transaction's receipt, signed by
/// the merchant's operator (`tally/session-receipt/v1`, docs/protocols/sessions.md), checked
/// offline with `tally session verify-receipt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionReceiptView {
    /// `<session id>.<seq>`.
    pub transaction: String,
    /// The signed receipt (JSON text).
    pub receipt: String,
}

/// A trading session as one node sees it (its role: `am` at the customer's operator, `mta`
/// at the merchant's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TradingSessionView {
    /// `<AM node id>.<seq>`.
    pub session: String,
    /// `am` or `mta`.
    pub role: String,
    /// AM: `held`, `open`, `aborted`; MTA: `informed`, `open`, `refused`.
    pub state: String,
    /// The merchant.
    pub merchant: String,
    /// The other node: the MTA (at the AM) or the AM (at the MTA).
    pub peer: String,
    /// The pseudonymous customer identifier.
    pub customer: String,
    /// The customer's session key (hex), if it buys through a merchant agent.
    pub customer_key: Option<String>,
    /// The session's current transaction (`<session>.1` first, then the next once one is
    /// cleared, M4): the merchant agent's tab.
    pub transaction: String,
    /// The deposit in the customer's currency.
    #[schema(value_type = String, example = "10.00 EUR")]
    #[serde(with = "crate::amount_text")]
    pub deposit: tally_kernel::Amount,
    /// The deposit in the merchant's currency, once known.
    #[schema(value_type = Option<String>, example = "10.84 USD")]
    pub merchant_deposit: Option<String>,
    /// The rate, merchant minor units per customer minor unit, once known (`n/d`).
    pub rate: Option<String>,
    /// Why the MTA refused it.
    pub refusal: Option<String>,
    /// Once cleared: what the merchant was paid (its currency).
    #[schema(value_type = Option<String>, example = "2.50 EUR")]
    pub total: Option<String>,
    /// Once cleared: what the customer paid (its currency).
    #[schema(value_type = Option<String>, example = "2.50 EUR")]
    pub customer_total: Option<String>,
    /// Once cleared: how many purchases.
    pub count: Option<u64>,
    /// The wait for the other side ends then (while it waits).
    #[schema(value_type = Option<i64>)]
    pub answer_by: Option<Timestamp>,
    /// The agreed end of the session.
    #[schema(value_type = i64)]
    pub expires_at: Timestamp,
    /// The key the merchant's agent signs offers and packages with (Ed25519, hex), as the
    /// merchant's operator named it: the customer checks deliveries under it (M9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_key: Option<String>,
    /// The merchant agent's key as this node certifies it for this session (M7, domain
    /// `tally/session-cert/v1`, this node's key; at the customer's operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_cert: Option<String>,
    /// The customer's session key as this node certifies it for this session (M7; at the
    /// merchant's operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_cert: Option<String>,
}

/// `PUT /v1/session-merchants/{name}/agent-key` (the merchant): the key its agent signs the
/// merchant's session records with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentKeyRequest {
    /// Ed25519 public key, hex.
    pub public_key: String,
}

/// The schema of a signed session record (`POST /v1/trading-sessions/{session}/record`): a
/// signed record of domain `tally/session-record/v1` whose bytes are `{transaction, side,
/// total, count, list}` (docs/protocols/sessions.md).
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only
pub struct SessionRecordDoc {
    /// `tally/session-record/v1`.
    domain: String,
    /// The record's RFC 8785 JSON, as a string.
    bytes: String,
    /// Ed25519 over `domain 0x00 bytes`, hex.
    signature: String,
    /// The signing key's fingerprint, hex.
    signer: String,
}

/// A record for the billing systems (M8): what a customer paid (`withdrawal`, at its
/// operator) or a merchant was paid (`deposit`, at its operator) when a session cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BillingRecordView {
    /// Its id.
    pub id: String,
    /// `withdrawal` or `deposit`.
    pub kind: String,
    /// The session.
    pub session: String,
    /// The customer or the merchant.
    pub owner: String,
    /// Its account.
    pub account: String,
    /// The amount, e.g. `"2.50 EUR"`.
    pub amount: String,
    /// The amount in minor units.
    pub amount_minor: i64,
    /// ISO-4217 code.
    pub currency: String,
    /// The other operator's node id.
    pub peer: String,
    /// When it cleared.
    #[schema(value_type = i64)]
    pub at: Timestamp,
}

/// `GET /v1/billing/records` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BillingQuery {
    /// RFC 3339, inclusive (default: 31 days ago).
    pub from: Option<String>,
    /// RFC 3339, exclusive (default: now).
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// What this operator and a peer owe each other in one currency, from the trading sessions
/// cleared between them (the settlement report between operators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClearingLine {
    /// The peer's node id.
    pub peer: String,
    /// The peer's name here, if it is a peer.
    pub name: Option<String>,
    /// ISO-4217 code.
    pub currency: String,
    /// What this operator owes the peer (its customers' spending at the peer's merchants).
    pub owed_to_minor: i64,
    /// What the peer owes this operator (paid out to this operator's merchants).
    pub owed_by_minor: i64,
    /// `owed_by − owed_to`: positive, the peer owes this operator on balance.
    pub net_minor: i64,
}

/// `PUT /v1/fx/{from}/{to}` (operator): publish an exchange rate with a lifespan (M6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FxPublishRequest {
    /// Units of `to` per unit of `from`, in major units, e.g. `"1.0842"` (at most 12 decimals).
    pub rate: String,
    /// How long it holds from now, seconds (default 86,400; 60 to 7 days).
    #[serde(default)]
    pub valid_for_s: Option<i64>,
}

/// A published exchange table, signed by the operator's node key (domain
/// `tally/fx-table/v1`), so a client can keep it and check it offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FxTableView {
    /// Source currency.
    pub from: String,
    /// Target currency.
    pub to: String,
    /// The rate as published (major units of `to` per unit of `from`).
    pub rate: String,
    /// Target minor units…
    pub numerator: i64,
    /// …per this many source minor units.
    pub denominator: i64,
    /// From when it holds.
    #[schema(value_type = i64)]
    pub valid_from: Timestamp,
    /// Until when (exclusive): a client warns after it.
    #[schema(value_type = i64)]
    pub valid_until: Timestamp,
    /// The signed record (JSON).
    pub signed: String,
}

/// A customer's K1 of an order (M9), sent to the merchant's operator through its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderKeyRequest {
    /// The order's id (a UUID the customer made).
    pub order: String,
    /// K1, 64 hex.
    pub k1: String,
}

/// K1 is on its way to the merchant's operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderKeyQueued {
    /// The session.
    pub session: String,
    /// The order.
    pub order: String,
}

/// K1 of an order as the merchant's operator signed it (`sign(K1)^MTA`, domain
/// `tally/order-key/v1`, the node key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignedOrderKey {
    /// The signed record (JSON).
    pub signed: String,
}

/// K2 of an order's package, escrowed by the merchant's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EscrowRequest {
    /// K2, 64 hex.
    pub k2: String,
    /// SHA-256 of the signed package it opens, 64 hex.
    pub package: String,
}

/// An escrowed K2, for an arbiter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EscrowView {
    /// The session.
    pub session: String,
    /// The order.
    pub order: String,
    /// K2, 64 hex.
    pub k2: String,
    /// SHA-256 of the signed package it opens.
    pub package: String,
}
