//! Federation over the API (issue [7], step 2): adding a peer checks its key against the
//! fingerprint; a sealed message is taken once, with the step it causes; every forged,
//! misaddressed, stale, oversize or reused message is refused with its reason and changes
//! nothing. Node A runs on SQLite or PostgreSQL, node B on SQLite; messages go between them as
//! the outbox worker sends them (sealed by `Federation::outgoing`).

mod common;

use axum::http::StatusCode;
use common::Api;
use common::peers::{add_peer, node_id, peer_body, post_sealed, sealed_outbox};
use serde_json::json;
use tally_http::HttpOptions;
use tally_kernel::crypto::SigningKey;
use tally_kernel::{Id, Timestamp};
use tally_proto::session::envelope::Envelope;
use tally_proto::session::ids::NodeId;
use tally_service::NodeConfig;

async fn traffic(on: &Api, peer: &str) -> (i64, i64, i64, i64) {
    let r = on
        .get(&format!("/v1/peers/{peer}"))
        .key(&on.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    (
        r.i64("/pending"),
        r.i64("/sent"),
        r.i64("/failed"),
        r.i64("/received"),
    )
}

async fn walk(a: Api, b: Api) {
    let (id_a, id_b) = (node_id(&a), node_id(&b));

    // Adding a peer: the operator only, with the key's own fingerprint, never this node's key.
    let merchant = a.issue_key("merchant", "shop").await;
    add_peer(&a, &merchant, "bank-b", peer_body(&b, "http://b.test"))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let mut wrong = peer_body(&b, "http://b.test");
    wrong["fingerprint"] = json!(id_a.to_string());
    let r = add_peer(&a, &a.admin, "bank-b", wrong)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(r.str("/error/details/field"), "fingerprint");
    let r = add_peer(&a, &a.admin, "me", peer_body(&a, "http://a.test"))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(r.str("/error/details/field"), "public_key");
    for url in [
        "ftp://b.test",
        "http://user@b.test",
        "http://b.test/?q",
        "b.test",
    ] {
        let r = add_peer(&a, &a.admin, "bank-b", peer_body(&b, url))
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        assert_eq!(r.str("/error/details/field"), "url", "{url}");
    }
    let r = add_peer(&a, &a.admin, "bank-b", peer_body(&b, "http://b.test/"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (r.str("/node_id"), r.str("/url")),
        (id_b.to_string().as_str(), "http://b.test")
    );
    // The same again changes nothing; another node under a taken name is refused.
    add_peer(&a, &a.admin, "bank-b", peer_body(&b, "http://b.test"))
        .await
        .expect(StatusCode::OK);
    let third = Api::start().await;
    let r = add_peer(&a, &a.admin, "bank-b", peer_body(&third, "http://c.test"))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(r.str("/error/details/field"), "name");
    add_peer(&b, &b.admin, "bank-a", peer_body(&a, "http://a.test"))
        .await
        .expect(StatusCode::OK);

    // A pings B: the ping is an outbox row until sent, sealed with a fresh time when it is.
    let r = a
        .post("/v1/peers/bank-b/ping")
        .key(&a.admin)
        .send()
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(r.str("/to"), id_b.to_string());
    assert_eq!(traffic(&a, "bank-b").await, (1, 0, 0, 0));
    let mut pings = sealed_outbox(&a).await;
    assert_eq!(pings.len(), 1);
    let (url, ping) = pings.pop().expect("ping");
    assert_eq!(url, "http://b.test/v1/peer/messages");
    let taken = post_sealed(&b, ping.clone()).await.expect(StatusCode::OK);
    assert_eq!(
        (taken.str("/kind"), taken.body["duplicate"].as_bool()),
        ("ping", Some(false))
    );
    // A replay (the sender's retry, or anyone's) is a duplicate: no second pong.
    let again = post_sealed(&b, ping).await.expect(StatusCode::OK);
    assert_eq!(again.body["duplicate"], json!(true));
    assert_eq!(again.str("/id"), taken.str("/id"));
    assert_eq!(traffic(&b, &id_a.to_string()).await, (1, 0, 0, 1));
    let mut pongs = sealed_outbox(&b).await;
    assert_eq!(pongs.len(), 1);
    let (url, pong) = pongs.pop().expect("pong");
    assert_eq!(url, "http://a.test/v1/peer/messages");
    post_sealed(&a, pong).await.expect(StatusCode::OK);
    assert_eq!(traffic(&a, "bank-b").await, (0, 1, 0, 1));
    assert_eq!(traffic(&b, "bank-a").await, (0, 1, 0, 1));

    // Refusals: each names its reason and leaves B as it was.
    let a_key = a.node.core().node_key();
    let envelope = |kind: &str| Envelope {
        id: Id::new(),
        from: id_a,
        to: id_b,
        sent_at: Timestamp::now().as_micros(),
        kind: kind.into(),
        body: json!({"n": 1}),
    };
    let stranger = SigningKey::generate();
    let journal = b.node.store().counts().await.expect("counts").journal_seq;
    let outbox = b.node.store().outbox_len().await.expect("outbox");
    let reused = envelope("ping");
    post_sealed(&b, reused.seal(a_key).expect("seal"))
        .await
        .expect(StatusCode::OK);
    let journal = journal + 1;
    let outbox = outbox + 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"{\"domain\": 1}".to_vec()),
        (
            "unknown_peer",
            Envelope {
                from: NodeId::of(&stranger.verifying_key()),
                ..envelope("ping")
            }
            .seal(&stranger)
            .expect("seal"),
        ),
        (
            "not_for_me",
            Envelope {
                to: node_id(&third),
                ..envelope("ping")
            }
            .seal(a_key)
            .expect("seal"),
        ),
        (
            "stale",
            Envelope {
                sent_at: Timestamp::now().as_micros() - 301_000_000,
                ..envelope("ping")
            }
            .seal(a_key)
            .expect("seal"),
        ),
        ("not_from_signer", {
            // A's key signing an envelope that says it is from B.
            let mut e = envelope("ping");
            e.from = id_b;
            e.to = id_b;
            let record = tally_kernel::crypto::canonical::SignedRecord::sign(
                tally_proto::session::envelope::PEER_DOMAIN,
                &e,
                a_key,
            )
            .expect("sign");
            serde_json::to_vec(&record).expect("json")
        }),
        ("unknown_kind", envelope("hello").seal(a_key).expect("seal")),
        (
            "id_reused",
            Envelope {
                body: json!({"n": 2}),
                ..reused.clone()
            }
            .seal(a_key)
            .expect("seal"),
        ),
    ];
    for (reason, bytes) in cases {
        let r = post_sealed(&b, bytes)
            .await
            .expect_error(StatusCode::FORBIDDEN, "peer_refused");
        assert_eq!(r.str("/error/details/reason"), reason);
    }
    post_sealed(&b, vec![b' '; 64 * 1024 + 1])
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(
        b.node.store().counts().await.expect("counts").journal_seq,
        journal,
        "a refused message journals nothing"
    );
    assert_eq!(b.node.store().outbox_len().await.expect("outbox"), outbox);
    assert_eq!(traffic(&b, "bank-a").await.3, 2);

    // A peer removed from under its messages: the listing still shows A's traffic, and a
    // ping to an unknown peer is a 404.
    a.post("/v1/peers/nobody/ping")
        .key(&a.admin)
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let list = a
        .get("/v1/peers")
        .key(&a.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(list.body.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn peers_exchange_sealed_messages_once() {
    walk(Api::start().await, Api::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_exchange_sealed_messages_once_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    let a = Api::with(
        |c| NodeConfig {
            database_url: Some(url),
            ..c
        },
        HttpOptions::default(),
    )
    .await;
    walk(a, Api::start().await).await;
}
