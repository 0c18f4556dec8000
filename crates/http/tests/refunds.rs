//! Refunds and the buyer's recourse (issue [6] items 7 and 10): the merchant (or the operator)
//! refunds a paid sale's price, the sale is marked refunded; a buyer sends a refund claim to the
//! merchant and checks a copy of the package against the one the node signed; an overdue
//! alert reaches the operator when the merchant has no address. Runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use common::world::World;
use serde_json::{Value, json};
use tally_service::NodeConfig;
use tally_service::delivery::DeliverySettings;

/// Verifies a dev address for `user` (added with `key`).
async fn address(w: &World, key: &str, user: &str, inbox: &str) {
    let r = w
        .post(
            &format!("/v1/subscribers/{user}/addresses"),
            key,
            None,
            json!({"channel": "dev", "address": inbox}),
        )
        .await
        .expect(StatusCode::CREATED);
    let session = r.str("/session").to_string();
    let code = w.code_for(inbox, &session).await;
    w.verify(&session, &code, None).await.expect(StatusCode::OK);
}

fn subjects(inbox: &Value) -> Vec<String> {
    inbox
        .as_array()
        .expect("inbox")
        .iter()
        .filter_map(|m| m["subject"].as_str().map(str::to_string))
        .collect()
}

async fn walk(w: World) {
    let product = w.album().await;
    let buy = |idem: &'static str| {
        w.post(
            "/v1/sales",
            &w.alice,
            Some(idem),
            json!({"product": product, "channel": "dev", "address": "alice"}),
        )
    };
    let complain = |body: Value| w.post("/v1/complaints", &w.alice, None, body);

    // An overdue sale of a merchant without an address alerts the operator's address.
    address(&w, &w.api.admin, "operator", "operator-desk").await;
    let unpaid = buy("s0").await.expect(StatusCode::CREATED);
    w.advance(3_601);
    assert_eq!(
        w.api
            .node
            .delivery()
            .sweep_timeouts(100)
            .await
            .expect("sweep"),
        1
    );
    let desk = w.inbox("operator-desk").await.body;
    assert!(
        subjects(&desk)
            .iter()
            .any(|s| s.starts_with("Overdue: Album")),
        "{desk}"
    );
    w.post(
        &format!("/v1/sales/{}/cancel", unpaid.str("/id")),
        &w.alice,
        None,
        json!({}),
    )
    .await
    .expect(StatusCode::OK);

    // Paid, then refunded by the merchant: the price goes back, the sale is refunded.
    let sale = buy("s1").await.expect(StatusCode::CREATED);
    let id = sale.str("/id").to_string();
    let reference = sale.str("/reference").to_string();
    let paid = w
        .post(
            "/v1/sales/pay",
            &w.alice,
            Some("pay-1"),
            json!({"reference": reference, "from_account": w.alice_eur, "amount": "9.90 EUR"}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(paid.str("/status"), "matched");
    assert_eq!(w.balances().await, [9_010, 2_000, 990]);

    // The buyer checks her copy, and claims a refund: the merchant is told.
    let good = complain(json!({"reference": reference, "kind": "check_copy",
                               "package_sha256": sale.str("/package_sha256")}))
    .await
    .expect(StatusCode::OK);
    assert_eq!(good.body["matches"], true, "{}", good.body);
    let bad = complain(json!({"reference": reference, "kind": "check_copy",
                              "package_sha256": "00".repeat(32)}))
    .await
    .expect(StatusCode::OK);
    assert_eq!(bad.body["matches"], false, "{}", bad.body);
    address(&w, &w.shop, "shop", "shop-desk").await;
    complain(json!({"reference": reference, "kind": "refund", "reason": "wrong album"}))
        .await
        .expect(StatusCode::OK);
    // One claim per sale: a repeat is answered, not sent again.
    let again = complain(json!({"reference": reference, "kind": "refund", "reason": "again"}))
        .await
        .expect(StatusCode::OK);
    assert!(
        again.str("/action").contains("already sent"),
        "{}",
        again.body
    );
    let desk = w.inbox("shop-desk").await.body;
    let claims = subjects(&desk)
        .iter()
        .filter(|s| s.starts_with("Refund claim: Album"))
        .count();
    assert_eq!(claims, 1, "{desk}");
    complain(json!({"reference": reference, "kind": "refund", "reason": "bad\u{202e}text"}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");

    // Nobody but the merchant or the operator refunds.
    let path = format!("/v1/payments/{}/refund", paid.str("/id"));
    let refund = |key: &str| w.api.post(&path).key(key).send();
    refund(&w.bob)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let r = refund(&w.shop).await.expect(StatusCode::OK);
    assert_eq!(r.str("/status"), "refunded");
    refund(&w.shop).await.expect(StatusCode::OK);
    assert_eq!(w.balances().await, [10_000, 2_000, 0], "refunded once");
    let shown = w
        .api
        .get(&format!("/v1/sales/{id}"))
        .key(&w.alice)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(shown.str("/state"), "refunded");
    w.audit_passes().await;
}

fn config(c: NodeConfig, database_url: Option<String>) -> NodeConfig {
    NodeConfig {
        database_url,
        delivery: DeliverySettings {
            overdue_after_s: 3_600,
            ..DeliverySettings::default()
        },
        ..c
    }
}

#[tokio::test]
async fn refunds_claims_and_copies() {
    walk(World::with(|c| config(c, None)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_claims_and_copies_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    walk(World::with(|c| config(c, Some(url))).await).await;
}
