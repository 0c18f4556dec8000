//! Federation (issue [7], step 2): the peers, i.e. the other operators' nodes this node
//! exchanges sealed messages with, and the inbox of messages accepted from them.
//!
//! Messages *to* a peer are outbox rows of kind `peer` (address: the peer's node id, subject:
//! the message kind, body: its JSON, dedup key `:peer:<id>`), written with the step that sends
//! them and sealed only when delivered. Messages *from* a peer are inbox rows written with the
//! step they cause, under the idempotency key of their id, so a repeat applies nothing.

use crate::oob::{blob, row};
use crate::rows::Value;
use crate::{Attachment, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use tally_kernel::{Id, Timestamp};

/// The outbox kind of messages to peers.
pub const PEER_KIND: &str = "peer";

/// A peer node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// SHA-256 of its node key, hex.
    pub node_id: String,
    /// The operator's name for it (unique on this node).
    pub name: String,
    /// Its API's base URL.
    pub url: String,
    /// Its Ed25519 node key, hex.
    pub public_key: String,
    /// When it was first added.
    pub added_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

/// A message accepted from a peer.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxMessage {
    /// The envelope's id.
    pub id: Id,
    /// The sending node's id.
    pub from_node: String,
    /// Its kind.
    pub kind: String,
    /// Its body.
    pub body: serde_json::Value,
    /// When the sender sealed it.
    pub sent_at: Timestamp,
    /// When this node accepted it.
    pub received_at: Timestamp,
}

/// Traffic with one peer: outbox rows by state, inbox rows, the last arrival.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    /// Messages to it not delivered yet.
    pub pending: i64,
    /// Messages to it delivered.
    pub sent: i64,
    /// Messages to it it refused for good.
    pub failed: i64,
    /// Messages from it accepted.
    pub received: i64,
    /// When its last message arrived.
    pub last_received_at: Option<Timestamp>,
}

/// Adds `peer`, or updates its name and URL (its key is its id).
pub fn upsert_peer(peer: &Peer) -> Attachment {
    row(
        "INSERT INTO peers (node_id, name, url, public_key, added_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (node_id) DO UPDATE SET \
         name = excluded.name, url = excluded.url, updated_at = excluded.updated_at",
        vec![
            Value::Text(peer.node_id.clone()),
            Value::Text(peer.name.clone()),
            Value::Text(peer.url.clone()),
            Value::Text(peer.public_key.clone()),
            Value::Int(peer.added_at.as_micros()),
            Value::Int(peer.updated_at.as_micros()),
        ],
    )
}

/// Records a message accepted from a peer (with the step it causes).
pub fn accept(m: &InboxMessage) -> Attachment {
    row(
        "INSERT INTO peer_inbox (id, from_node, kind, body, sent_at, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            blob(&m.id),
            Value::Text(m.from_node.clone()),
            Value::Text(m.kind.clone()),
            Value::Text(m.body.to_string()),
            Value::Int(m.sent_at.as_micros()),
            Value::Int(m.received_at.as_micros()),
        ],
    )
}

const PEER_SELECT: &str = "SELECT node_id, name, url, public_key, added_at, updated_at FROM peers";

fn peer(r: &AnyRow) -> Result<Peer, StoreError> {
    Ok(Peer {
        node_id: r.try_get("node_id")?,
        name: r.try_get("name")?,
        url: r.try_get("url")?,
        public_key: r.try_get("public_key")?,
        added_at: Timestamp(r.try_get("added_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
    })
}

impl Store {
    /// Every peer, by name.
    pub async fn peers(&self) -> Result<Vec<Peer>, StoreError> {
        let rows = self
            .fetch_all(format!("{PEER_SELECT} ORDER BY name"), vec![])
            .await?;
        rows.iter().map(peer).collect()
    }

    /// The peer with this node id or name.
    pub async fn peer(&self, id_or_name: &str) -> Result<Option<Peer>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{PEER_SELECT} WHERE node_id = $1 OR name = $1"),
                vec![Value::Text(id_or_name.into())],
            )
            .await?;
        rows.first().map(peer).transpose()
    }

    /// A message accepted from a peer, by id.
    pub async fn inbox_message(&self, id: Id) -> Result<Option<InboxMessage>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT id, from_node, kind, body, sent_at, received_at FROM peer_inbox \
                 WHERE id = $1"
                    .into(),
                vec![blob(&id)],
            )
            .await?;
        rows.first()
            .map(|r| {
                let body: String = r.try_get("body")?;
                Ok(InboxMessage {
                    id: crate::rows::id(&r.try_get::<Vec<u8>, _>("id")?)?,
                    from_node: r.try_get("from_node")?,
                    kind: r.try_get("kind")?,
                    body: serde_json::from_str(&body)
                        .map_err(|e| StoreError::Corrupt(format!("peer inbox body: {e}")))?,
                    sent_at: Timestamp(r.try_get("sent_at")?),
                    received_at: Timestamp(r.try_get("received_at")?),
                })
            })
            .transpose()
    }

    /// Whether a message of `kind` with exactly `body` (its JSON) was taken from `from`.
    pub async fn inbox_has(
        &self,
        from: &str,
        kind: &str,
        body: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT id FROM peer_inbox WHERE kind = $1 AND from_node = $2 AND body = $3".into(),
                vec![
                    crate::rows::Value::Text(kind.into()),
                    crate::rows::Value::Text(from.into()),
                    crate::rows::Value::Text(body.to_string()),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Traffic with the peer `node_id`.
    pub async fn peer_traffic(&self, node_id: &str) -> Result<PeerTraffic, StoreError> {
        let mut t = PeerTraffic::default();
        let rows = self
            .fetch_all(
                "SELECT state, CAST(COUNT(*) AS BIGINT) AS n FROM outbox \
                 WHERE kind = 'peer' AND address = $1 GROUP BY state"
                    .into(),
                vec![Value::Text(node_id.into())],
            )
            .await?;
        for r in &rows {
            let n: i64 = r.try_get("n")?;
            match r.try_get::<String, _>("state")?.as_str() {
                "pending" => t.pending = n,
                "sent" => t.sent = n,
                _ => t.failed += n,
            }
        }
        let rows = self
            .fetch_all(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n, MAX(received_at) AS last FROM peer_inbox \
                 WHERE from_node = $1"
                    .into(),
                vec![Value::Text(node_id.into())],
            )
            .await?;
        if let Some(r) = rows.first() {
            t.received = r.try_get("n")?;
            t.last_received_at = r.try_get::<Option<i64>, _>("last")?.map(Timestamp);
        }
        Ok(t)
    }

    /// Makes the messages waiting for the peer `node_id` due now (it has just been heard
    /// from, so it is up again): a node that was down catches up without waiting out the
    /// backoff. Returns how many. A message leased by a worker at this moment may go out
    /// twice; the receiver applies its id once.
    pub async fn wake_peer(&self, node_id: &str, now: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1 WHERE kind = 'peer' AND address = $2 \
             AND state = 'pending' AND attempts > 0 AND next_attempt_at > $1",
        )
        .bind(now.as_micros())
        .bind(node_id.to_string())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}
