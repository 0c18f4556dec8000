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
