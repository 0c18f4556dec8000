//! A Tally node's operations: the only crate that joins protocol machines, ledger rules, the
//! store and side effects (channels, keys on disk, background workers).
//!
//! [`Node`] is what the HTTP layer and the CLI call. Each operation takes the calling
//! [`Principal`] (from an API key), checks what that role may do, and runs one step: for the
//! ledger's own operations a ledger command, for a protocol a step of its machine in
//! `tally_proto` (`handle(self, now, input) -> (next, Effects)`). Every step goes through one
//! executor ([`exec`]): the new state (a row write guarded on the previous state), the ledger
//! command and the outgoing messages commit in one transaction, with an idempotency key
//! namespaced by the caller's owner (so two customers can both use the key `order-1`); then the
//! outbox worker is woken. [`workers`] deliver messages (rendering secrets only then) and feed
//! machines their timeouts.
//!
//! The crate is layered, each layer importing only those below it:
//!
//! ```text
//! ledger_ops, workers     the ledger's own operations; background work (outbox, timers)
//! node                    the Node: the core and the three drivers composed, API keys, secrets
//! oob/ delivery/ receipt/ one driver per protocol (load → handle → commit); none imports another
//! exec                    the one executor and conflict policy
//! core                    shared state: store, identity, clock, the outbox signal
//! identity, access        keys on disk; who may do what, field checks
//! ```
//!
//! `tests/layers.rs` checks this order, the absence of cycles and file sizes.
//!
//! Decision: authorisation lives here, not in `http`, so the CLI's direct paths (audit, bench)
//! and any future transport get the same rules. `http` only maps errors and shapes.

pub mod access;
pub mod core;
pub mod delivery;
pub mod demo;
pub mod exec;
pub mod federation;
pub mod identity;
pub mod ledger_ops;
pub mod node;
pub mod oob;
pub mod pad;
pub mod receipt;
pub mod session;
pub mod workers;

use tally_kernel::{Currency, Id, MoneyError};
use tally_ledger::LedgerError;
use tally_store::{Conflict, StoreError};

pub use crate::core::NodeClock;
pub use identity::NodeFiles;
pub use node::{Node, NodeConfig};

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The operator: every account, API keys, audits.
    Admin,
    /// A customer: its own accounts only.
    Customer,
    /// A merchant: its own accounts; captures and releases holds in its favour.
    Merchant,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Customer => "customer",
            Role::Merchant => "merchant",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "customer" => Role::Customer,
            "merchant" => Role::Merchant,
            _ => return None,
        })
    }
}

/// Who is calling: resolved from an API key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    /// The API key's id (not secret).
    pub key_id: Id,
    /// The key's role.
    pub role: Role,
    /// The customer or merchant the key acts for; `operator` for admins.
    pub owner: String,
}

impl Principal {
    /// True for the operator.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Why an operation failed. `http` maps each variant to a status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The ledger refused (the caller's fault); nothing changed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A malformed amount or currency.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// A request field is missing or malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The idempotency key names an earlier request of another kind (an account, not a
    /// transfer): the same key cannot mean two things.
    #[error("idempotency key was used for another kind of request")]
    IdempotencyKeyReused,
    /// The user has no verified second-channel address (of the kind asked for): no code can be
    /// sent. Answered like a malformed `user` field.
    #[error("invalid user: has no verified second-channel address (of that kind)")]
    NoChannel,
    /// The client's idempotency key is empty, too long or not printable.
    #[error("invalid Idempotency-Key: {0}")]
    IdempotencyKeyInvalid(String),
    /// No or an unknown API key.
    #[error("missing or unknown API key")]
    Unauthorized,
    /// The key's role may not do this.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The thing asked for does not exist (or is not the caller's to see).
    #[error("{what} {id} not found")]
    NotFound {
        /// What kind of thing.
        what: Missing,
        /// Its id.
        id: String,
    },
    /// No liquidity account for a currency, so no exchange into or out of it.
    #[error("no liquidity account for {0}; the operator must open one")]
    NoLiquidity(Currency),
    /// A feature that is switched off on this node (e.g. the dev inbox without `--dev`).
    #[error("not available on this node: {0}")]
    Disabled(&'static str),
    /// Out-of-band authentication refused a code or a session (see the cause); nothing ran.
    #[error(transparent)]
    Oob(#[from] tally_proto::oob::OobError),
    /// Locked delivery refused a request (see the cause); nothing changed.
    #[error(transparent)]
    Delivery(#[from] crate::delivery::DeliveryError),
    /// A pad frame or request was refused (see the cause).
    #[error(transparent)]
    Pad(crate::pad::PadServiceError),
    /// A voucher request was refused (see the cause); nothing changed.
    #[error(transparent)]
    Voucher(crate::pad::VoucherError),
    /// A receipt request was refused (see the cause).
    #[error(transparent)]
    Receipt(#[from] crate::receipt::ReceiptServiceError),
    /// The payment is above a threshold: nothing moved; a code went to the payer's second
    /// channel. Verify it, then repeat the request with the same idempotency key.
    #[error("confirmation required: a code was sent to {} ({})", .0.address, .0.channel)]
    ConfirmationRequired(Box<tally_wire::oob::SessionView>),
    /// The confirmation session of this request ended without a verified code; nothing moved.
    #[error(
        "the confirmation of this request ended {0:?}: nothing moved; send it again with a new idempotency key"
    )]
    ConfirmationFailed(tally_proto::oob::State),
    /// The user's trustee credit in this currency (set by the operator) would be exceeded.
    #[error(
        "the user's trustee credit is used up: {} left",
        tally_kernel::Amount::new(*available_minor, *currency)
    )]
    TrusteeLimit {
        /// The currency.
        currency: Currency,
        /// What can still be paid through the trustee.
        available_minor: i64,
    },
    /// The arbiter node did not answer (unreachable, or it refused the link): nothing was
    /// decided; retry later.
    #[error("the arbiter node did not answer: {0}")]
    ArbiterUnreachable(String),
    /// The arbiter node refused the case or handed over what does not verify: nothing was
    /// decided here, and asking again changes nothing.
    #[error("the arbiter node refused: {0}")]
    ArbiterRefused(String),
    /// A trading session refused a step (see the cause); nothing changed.
    #[error(transparent)]
    Trade(#[from] tally_proto::session::trade::TradeError),
    /// A message from another node was not taken: nothing was applied. The sender's fault
    /// (or an attacker's).
    #[error("message from another node refused: {}", .0.as_str())]
    PeerRefused(PeerRefusal),
    /// Revoking this key would leave the node without a live admin key; make another first
    /// (`tally api-key create --role admin`, offline with `--data` if need be).
    #[error("the last admin key cannot be revoked; create another admin key first")]
    LastAdminKey,
    /// A limit decided in the database (e.g. sessions per address) is reached.
    #[error("rate limited: {0}")]
    RateLimited(&'static str),
    /// Another request changed what this one was decided on, again and again: nothing was
    /// written; read again.
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// The store failed; details are logged, not returned.
    #[error("storage failure")]
    Store(#[source] StoreError),
    /// Files, keys or configuration are unusable.
    #[error("node setup failed: {0}")]
    Setup(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Ledger(l) => ServiceError::Ledger(l),
            StoreError::Conflict(c) => ServiceError::Conflict(c),
            other => ServiceError::Store(other),
        }
    }
}

/// Why a message from another node was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRefusal {
    /// The sealed envelope does not open (see the cause).
    Envelope(tally_proto::session::envelope::EnvelopeError),
    /// It opened, but this node has no use for its kind.
    UnknownKind,
    /// It opened, but does not fit the session it names (or names none here).
    Inconsistent,
    /// Its id was taken before with other content.
    IdReused,
}

impl PeerRefusal {
    /// Its stable snake_case name (`details.reason` on the wire).
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRefusal::Envelope(e) => e.as_str(),
            PeerRefusal::UnknownKind => "unknown_kind",
            PeerRefusal::Inconsistent => "inconsistent",
            PeerRefusal::IdReused => "id_reused",
        }
    }
}

/// Result of a node operation.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
/// What a [`ServiceError::NotFound`] did not find. Callers (the HTTP layer's error codes, the
/// drivers that turn an unknown user into a refusal of their own) decide by the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Missing {
    /// A ledger account.
    Account,
    /// A pad.
    Pad,
    /// A voucher card.
    Voucher,
    /// A pad account.
    PadAccount,
    /// A service provider of pads.
    PadProvider,
    /// A request forwarded to a pad provider.
    PadRequest,
    /// An API key.
    ApiKey,
    /// A registered mail or offer.
    Mail,
    /// A trading session's order (M9): its key has not reached this node.
    Order,
    /// A receipt party (no certified token).
    Party,
    /// A payment quoting a reference.
    Payment,
    /// A peer node.
    Peer,
    /// A product.
    Product,
    /// A receipt.
    Receipt,
    /// A payment receiver.
    Receiver,
    /// A sale.
    Sale,
    /// A sale, looked up by its reference code.
    SaleReference,
    /// An out-of-band session.
    Session,
    /// A receipt token.
    Token,
    /// A ledger transfer.
    Transfer,
    /// An out-of-band subscriber.
    User,
    /// A warrant.
    Warrant,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Missing::Account => "account",
            Missing::Pad => "pad",
            Missing::Voucher => "voucher",
            Missing::PadAccount => "pad account",
            Missing::PadProvider => "pad provider",
            Missing::PadRequest => "pad request",
            Missing::ApiKey => "api key",
            Missing::Mail => "mail",
            Missing::Order => "order",
            Missing::Party => "party",
            Missing::Payment => "payment",
            Missing::Peer => "peer",
            Missing::Product => "product",
            Missing::Receipt => "receipt",
            Missing::Receiver => "receiver",
            Missing::Sale => "sale",
            Missing::SaleReference => "sale with reference",
            Missing::Session => "session",
            Missing::Token => "token",
            Missing::Transfer => "transfer",
            Missing::User => "user",
            Missing::Warrant => "warrant",
        })
    }
}
