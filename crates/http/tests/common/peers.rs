//! Two nodes as peers, with the messages between them carried by the test: each node's due
//! messages to peers are sealed as its outbox worker would seal them and posted to the other.

use super::{Api, Reply};
use serde_json::{Value, json};
use tally_kernel::Timestamp;
use tally_proto::session::ids::NodeId;

/// The node's id.
pub fn node_id(api: &Api) -> NodeId {
    NodeId::of(&api.node.core().node_key().verifying_key())
}

/// `POST /v1/peers` on `on` with `key`, naming the peer `name`.
pub async fn add_peer(on: &Api, key: &str, name: &str, body: Value) -> Reply {
    let mut body = body;
    body["name"] = json!(name);
    on.post("/v1/peers").key(key).json(body).send().await
}

/// What adding `of` as a peer at `url` sends.
pub fn peer_body(of: &Api, url: &str) -> Value {
    let key = of.node.core().node_key().verifying_key();
    json!({"url": url, "public_key": key.to_hex(), "fingerprint": key.fingerprint()})
}

/// Makes `a` (at http://a.test) and `b` (at http://b.test) peers of each other, as
/// `bank-a` and `bank-b`.
pub async fn pair(a: &Api, b: &Api) {
    add_peer(a, &a.admin, "bank-b", peer_body(b, "http://b.test"))
        .await
        .expect(axum::http::StatusCode::OK);
    add_peer(b, &b.admin, "bank-a", peer_body(a, "http://a.test"))
        .await
        .expect(axum::http::StatusCode::OK);
}

/// `POST /v1/peer/messages` on `to`.
pub async fn post_sealed(to: &Api, sealed: Vec<u8>) -> Reply {
    to.post("/v1/peer/messages")
        .raw("application/json", sealed)
        .send()
        .await
}

/// Leases `from`'s due messages to peers and seals them as the worker would: (URL, bytes).
pub async fn sealed_outbox(from: &Api) -> Vec<(String, Vec<u8>)> {
    let due = from
        .node
        .store()
        .claim_due(from.node.now(), 100, 60)
        .await
        .expect("claim");
    let mut out = Vec::new();
    for m in due.into_iter().filter(|m| m.message.kind == "peer") {
        let (url, text) = from.node.federation().outgoing(&m).await.expect("seal");
        from.node
            .store()
            .mark_sent(m.id, Timestamp::now())
            .await
            .expect("mark");
        out.push((url.expect("a peer's URL"), text.into_bytes()));
    }
    out
}

/// Carries every due message of `from` to `to`; the answers, in order.
pub async fn carry(from: &Api, to: &Api) -> Vec<Reply> {
    let mut out = Vec::new();
    for (_, sealed) in sealed_outbox(from).await {
        out.push(post_sealed(to, sealed).await);
    }
    out
}
