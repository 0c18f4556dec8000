//! Federation (issue [7], step 2): this node's peers (other operators' nodes), and the
//! transport of sealed messages between them.
//!
//! * **Peers.** The operator adds a peer by its URL and node key, checked against the
//!   fingerprint its operator gave out of band (`tally federation add-peer` fetches the key
//!   from the peer's `GET /v1/node`). Messages signed by any other key are refused.
//! * **Out.** A step's [`PeerMessage`]s are outbox rows of kind `peer`, committed with the
//!   step by the executor. The outbox worker seals each one under the node key only when it
//!   sends it ([`Federation::outgoing`]), so `sent_at` is fresh on every retry, and POSTs it to
//!   the peer's `/v1/peer/messages`; a peer that is down is retried with backoff for up to a
//!   week.
//! * **In.** [`Federation::open`] checks a sealed message (size, signature by a known peer,
//!   addressed here, within [`WINDOW_S`] of now); [`Federation::take`] commits it to the inbox
//!   together with the step it causes, under the idempotency key of its id, so a repeat
//!   (the sender's retry, or a replay by anyone) applies nothing and is answered as a
//!   duplicate. Hearing from a peer makes the messages waiting for it due at once: a node that
//!   was down catches up without waiting out the backoff.
//! * **Link check.** A `ping` is answered with a `pong` (`tally federation ping`), the one
//!   exchange this layer has of its own; protocol kinds are routed by the node.
//!
//! Decision: seal at delivery rather than at commit (a message sealed at commit would go stale
//! while its peer is down), and deduplicate on the envelope's id rather than on the signature
//! (which changes with `sent_at`).

use crate::access::{check_name, invalid, require_admin};
use crate::core::Core;
use crate::exec::PEER_DEDUP_PREFIX as DEDUP_PREFIX;
use crate::{Missing, PeerRefusal, Principal, Result, ServiceError};
use serde_json::json;
use tally_kernel::crypto::VerifyingKey;
use tally_kernel::{Id, Timestamp};
use tally_proto::effects::{Effects, PeerMessage};
use tally_proto::session::envelope::{self, Envelope, Receiver};
use tally_proto::session::ids::NodeId;
use tally_store::Attachment;
use tally_store::federation::{InboxMessage, Peer, accept, upsert_peer};
use tally_store::outbox::StoredMessage;
use tally_wire::federation::{AddPeerRequest, PeerMessageTaken, PeerView, PingQueued};

/// Accepted age of a message (and clock skew between nodes), seconds.
pub const WINDOW_S: i64 = 300;

/// Peers and the messages exchanged with them.
#[derive(Clone)]
pub struct Federation {
    core: Core,
}

impl Federation {
    pub(crate) fn new(core: Core) -> Federation {
        Federation { core }
    }

    /// This node's id (the fingerprint of its node key).
    pub fn node_id(&self) -> NodeId {
        NodeId::of(&self.core.node_key().verifying_key())
    }

    /// Adds a peer, or changes its name or URL (operator).
    pub async fn add_peer(&self, by: &Principal, req: &AddPeerRequest) -> Result<PeerView> {
        require_admin(by)?;
        check_name("name", &req.name)?;
        let url = base_url(&req.url)?;
        let key = VerifyingKey::from_hex(req.public_key.trim())
            .map_err(|_| invalid("public_key", "an Ed25519 public key, 64 hex digits"))?;
        let node = NodeId::of(&key);
        if node.to_string() != req.fingerprint.trim().to_ascii_lowercase() {
            return Err(invalid(
                "fingerprint",
                "does not match the key: check both with the peer's operator",
            ));
        }
        if node == self.node_id() {
            return Err(invalid("public_key", "this node's own key"));
        }
        let store = self.core.store();
        if let Some(other) = store.peer(&req.name).await?
            && other.node_id != node.to_string()
        {
            return Err(invalid("name", "names another peer already"));
        }
        let now = self.core.now();
        let before = store.peer(&node.to_string()).await?;
        let peer = Peer {
            node_id: node.to_string(),
            name: req.name.clone(),
            url,
            public_key: key.to_hex(),
            added_at: before.as_ref().map_or(now, |p| p.added_at),
            updated_at: now,
        };
        if before
            .as_ref()
            .is_some_and(|p| p.name == peer.name && p.url == peer.url)
        {
            // Added before with the same name and URL: nothing to change.
            return self.view(peer).await;
        }
        self.core
            .commit(
                format!(":peer_added:{}", Id::new()),
                Effects::record(
                    "peer_added",
                    json!({"node_id": peer.node_id, "name": peer.name, "url": peer.url}),
                ),
                vec![upsert_peer(&peer)],
            )
            .await?;
        self.view(peer).await
    }

    /// Every peer, with its traffic (operator).
    pub async fn peers(&self, by: &Principal) -> Result<Vec<PeerView>> {
        require_admin(by)?;
        let mut out = Vec::new();
        for p in self.core.store().peers().await? {
            out.push(self.view(p).await?);
        }
        Ok(out)
    }

    /// One peer by node id or name (operator).
    pub async fn peer(&self, by: &Principal, peer: &str) -> Result<PeerView> {
        require_admin(by)?;
        self.view(self.known(peer).await?).await
    }

    /// The node key of `node`: a peer's, or this node's own.
    pub(crate) async fn key_of(&self, node: NodeId) -> Result<VerifyingKey> {
        if node == self.node_id() {
            return Ok(self.core.node_key().verifying_key());
        }
        let peer = self.known(&node.to_string()).await?;
        VerifyingKey::from_hex(&peer.public_key)
            .map_err(|e| crate::access::corrupt(format!("peer key: {e}")))
    }

    async fn known(&self, peer: &str) -> Result<Peer> {
        self.core
            .store()
            .peer(peer)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: Missing::Peer,
                id: peer.to_string(),
            })
    }

    async fn view(&self, p: Peer) -> Result<PeerView> {
        let t = self.core.store().peer_traffic(&p.node_id).await?;
        Ok(PeerView {
            node_id: p.node_id,
            name: p.name,
            url: p.url,
            public_key: p.public_key,
            added_at: p.added_at,
            pending: t.pending,
            sent: t.sent,
            failed: t.failed,
            received: t.received,
            last_received_at: t.last_received_at,
        })
    }

    /// Queues a `ping` for the peer (operator); the peer answers with a `pong`.
    pub async fn ping(&self, by: &Principal, peer: &str) -> Result<PingQueued> {
        require_admin(by)?;
        let peer = self.known(peer).await?;
        let to: NodeId = peer
            .node_id
            .parse()
            .map_err(|e| crate::access::corrupt(format!("peer node id: {e}")))?;
        let id = Id::new();
        let mut effects = Effects::record("peer_ping", json!({"id": id, "to": peer.node_id}));
        effects.peers.push(PeerMessage {
            to,
            id,
            kind: "ping".into(),
            body: json!({}),
        });
        self.core
            .commit(format!(":peer_ping:{id}"), effects, vec![])
            .await?;
        Ok(PingQueued {
            id: id.to_string(),
            to: peer.node_id,
        })
    }

    /// Checks a sealed message from a peer (see the module docs); applies nothing.
    pub async fn open(&self, bytes: &[u8]) -> Result<Envelope> {
        if bytes.len() > envelope::MESSAGE_LEN_MAX {
            return Err(refused(envelope::EnvelopeError::TooLarge));
        }
        // This node is its own peer: it sends itself the messages of a protocol whose two
        // roles it plays.
        let own = self.core.node_key().verifying_key();
        let peers: Vec<(NodeId, VerifyingKey)> = self
            .core
            .store()
            .peers()
            .await?
            .into_iter()
            .filter_map(|p| {
                let key = VerifyingKey::from_hex(&p.public_key).ok()?;
                Some((p.node_id.parse().ok()?, key))
            })
            .chain([(NodeId::of(&own), own)])
            .collect();
        let lookup = |n: &NodeId| peers.iter().find(|(id, _)| id == n).map(|(_, k)| *k);
        envelope::open(
            bytes,
            &Receiver {
                me: self.node_id(),
                peer: &lookup,
                now: self.core.now(),
                window_s: WINDOW_S,
            },
        )
        .map_err(refused)
    }

    /// The message taken before under this id, if any: `Ok(true)` when it was this same
    /// message (a duplicate: apply nothing), an error when the id came with other content.
    pub async fn taken_before(&self, m: &Envelope) -> Result<bool> {
        match self.core.store().inbox_message(m.id).await? {
            None => Ok(false),
            Some(before) => {
                let same = before.from_node == m.from.to_string()
                    && before.kind == m.kind
                    && before.body == m.body;
                if same {
                    Ok(true)
                } else {
                    Err(ServiceError::PeerRefused(PeerRefusal::IdReused))
                }
            }
        }
    }

    /// Commits a message from a peer to the inbox with the step it causes (`effects`, `rows`),
    /// once: a repeat of its id is answered as a duplicate and applies nothing.
    pub async fn take(
        &self,
        m: &Envelope,
        effects: Effects,
        rows: Vec<Attachment>,
    ) -> Result<PeerMessageTaken> {
        let taken = |duplicate| PeerMessageTaken {
            id: m.id.to_string(),
            kind: m.kind.clone(),
            duplicate,
        };
        if self.taken_before(m).await? {
            return Ok(taken(true));
        }
        let now = self.core.now();
        let mut rows = rows;
        rows.push(accept(&InboxMessage {
            id: m.id,
            from_node: m.from.to_string(),
            kind: m.kind.clone(),
            body: m.body.clone(),
            sent_at: Timestamp(m.sent_at),
            received_at: now,
        }));
        let outcome = match self
            .core
            .commit(format!(":peer_in:{}", m.id), effects, rows)
            .await
        {
            Ok(o) => o,
            // The same id taken by a concurrent delivery, deciding differently: the first won.
            Err(ServiceError::IdempotencyKeyReused | ServiceError::Ledger(_))
                if self.taken_before(m).await? =>
            {
                return Ok(taken(true));
            }
            Err(e) => return Err(e),
        };
        // The peer is up: what waits for it goes now.
        if self
            .core
            .store()
            .wake_peer(&m.from.to_string(), now)
            .await?
            > 0
        {
            self.core.outbox_signal().notify_one();
        }
        Ok(taken(outcome.replayed))
    }

    /// The step of a message this layer handles itself (`ping`, `pong`), if it is one.
    pub fn link_step(&self, m: &Envelope) -> Option<Effects> {
        let record = |kind| Effects::record(kind, json!({"id": m.id, "from": m.from}));
        match m.kind.as_str() {
            "ping" => {
                let mut effects = record("peer_message");
                effects.peers.push(PeerMessage {
                    to: m.from,
                    id: Id::new(),
                    kind: "pong".into(),
                    body: json!({"ping": m.id}),
                });
                Some(effects)
            }
            "pong" => Some(record("peer_message")),
            _ => None,
        }
    }

    /// Seals a leased outbox row for its peer: the URL to POST to (`None`: this node, when it
    /// plays both roles of a protocol) and the sealed text. An unknown peer (removed since) is
    /// the only error: nothing can deliver it.
    pub async fn outgoing(&self, m: &StoredMessage) -> Result<(Option<String>, String)> {
        let me = self.node_id();
        let peer = if m.message.address == me.to_string() {
            None
        } else {
            Some(self.known(&m.message.address).await?)
        };
        let id: Id = m
            .message
            .dedup_key
            .strip_prefix(DEDUP_PREFIX)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| crate::access::corrupt("a peer message without its id"))?;
        let envelope = Envelope {
            id,
            from: me,
            to: match &peer {
                Some(p) => p
                    .node_id
                    .parse()
                    .map_err(|e| crate::access::corrupt(format!("peer node id: {e}")))?,
                None => me,
            },
            sent_at: self.core.now().as_micros(),
            kind: m.message.subject.clone(),
            body: serde_json::from_str(&m.message.body).map_err(crate::access::corrupt)?,
        };
        let sealed = envelope
            .seal(self.core.node_key())
            .map_err(|e| ServiceError::Setup(format!("cannot seal a peer message: {e}")))?;
        let text = String::from_utf8(sealed).map_err(crate::access::corrupt)?;
        let url = peer.map(|p| format!("{}{}", p.url, tally_channels::peer::PEER_MESSAGES_PATH));
        Ok((url, text))
    }
}

fn refused(e: envelope::EnvelopeError) -> ServiceError {
    ServiceError::PeerRefused(PeerRefusal::Envelope(e))
}

/// A peer's base URL: `http(s)://host[:port][/path]`, no query, fragment or credentials,
/// without a trailing `/`.
fn base_url(text: &str) -> Result<String> {
    let bad = || {
        invalid(
            "url",
            "an http(s) URL with a host, no user, query or fragment",
        )
    };
    let t = text.trim().trim_end_matches('/');
    let rest = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let host = rest.split('/').next().unwrap_or_default();
    let ok = !host.is_empty()
        && t.len() <= 1024
        && !t.contains(['@', '?', '#', ' '])
        && t.chars().all(|c| c.is_ascii_graphic());
    if ok { Ok(t.to_string()) } else { Err(bad()) }
}
