//! Code sends cannot be abused (issue [6] item 4): anonymous sign-ins and address verifications
//! are capped per client address and node-wide, every user's codes per day, and refusals are
//! counted in `/metrics`. The counts live in the database, so on PostgreSQL several nodes share
//! them. Runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use common::world::World;
use serde_json::json;
use std::net::SocketAddr;
use tally_service::NodeConfig;
use tally_service::oob::OobSettings;

fn config(c: NodeConfig, database_url: Option<String>) -> NodeConfig {
    NodeConfig {
        database_url,
        oob: OobSettings {
            client_quota: 2,
            node_quota: 3,
            user_daily_quota: 5,
            address_quota: 100,
            ..OobSettings::default()
        },
        ..c
    }
}

fn from(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 40_000))
}

/// A web sign-in for alice from `peer`: the status, and whether it went to a session page.
async fn web_login(w: &World, peer: SocketAddr) -> (StatusCode, bool) {
    let r = w
        .api
        .post("/web/login")
        .peer(peer)
        .raw("application/x-www-form-urlencoded", "user=alice")
        .send()
        .await;
    let to_session = r.header("location").is_some_and(|l| l.starts_with("/s/"));
    (r.status, to_session)
}

async fn walk(w: World) {
    // Anonymous sign-ins (the web page): at most 2 per client address, 3 for the node.
    let (s, ok) = web_login(&w, from(1)).await;
    assert!(ok, "{s}");
    let (s, ok) = web_login(&w, from(1)).await;
    assert!(ok, "{s}");
    // A third from the same address is refused; another address still gets one.
    let (s, ok) = web_login(&w, from(1)).await;
    assert_eq!((s, ok), (StatusCode::TOO_MANY_REQUESTS, false));
    let (s, ok) = web_login(&w, from(2)).await;
    assert!(ok, "{s}");
    // The node's 3 are used: a fresh address is refused too.
    let (s, ok) = web_login(&w, from(3)).await;
    assert_eq!((s, ok), (StatusCode::TOO_MANY_REQUESTS, false));
    // Anonymous sign-ins do not use up alice's day (a stranger could otherwise lock her out
    // of her own confirmations); her own sessions do: her address verification and 4
    // sign-ins make her 5.
    for i in 0..4 {
        w.api
            .post("/v1/oob/sessions")
            .key(&w.alice)
            .idem(&format!("login-{i}"))
            .json(json!({"user": "alice", "application": "login"}))
            .send()
            .await
            .expect(StatusCode::CREATED);
    }
    let r = w
        .api
        .post("/v1/oob/sessions")
        .key(&w.alice)
        .idem("login-9")
        .json(json!({"user": "alice", "application": "login"}))
        .send()
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(r.str("/error/message").contains("today"), "{}", r.body);
    // A retry of a session that opened is its replay, not another send.
    w.api
        .post("/v1/oob/sessions")
        .key(&w.alice)
        .idem("login-0")
        .json(json!({"user": "alice", "application": "login"}))
        .send()
        .await
        .expect(StatusCode::OK);
    // Bob's day is his own.
    w.api
        .post("/v1/oob/sessions")
        .key(&w.bob)
        .idem("bob-login")
        .json(json!({"user": "bob", "application": "login"}))
        .send()
        .await
        .expect(StatusCode::CREATED);
    let metrics = w.api.get("/metrics").send().await.expect(StatusCode::OK);
    let text = String::from_utf8_lossy(&metrics.raw).to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with("tally_oob_sends_refused_total") && !l.ends_with(" 0")),
        "{text}"
    );
}

#[tokio::test]
async fn code_sends_are_capped() {
    walk(World::with(|c| config(c, None)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_sends_are_capped_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    walk(World::with(|c| config(c, Some(url))).await).await;
}
