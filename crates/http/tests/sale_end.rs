//! Unpaid sales end (issue [6] item 6): the buyer cancels one, or it expires after the node's
//! expiry period (`tally serve --expire-after-hours`). An ended sale frees the buyer's credit
//! slot, never releases its key, and a payment quoting its reference waits in suspense for a
//! refund. Runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use common::Reply;
use common::world::World;
use serde_json::json;
use tally_service::NodeConfig;
use tally_service::delivery::DeliverySettings;

fn config(c: NodeConfig, database_url: Option<String>) -> NodeConfig {
    NodeConfig {
        database_url,
        delivery: DeliverySettings {
            open_orders_max: 2,
            overdue_after_s: 3_600,
            expire_after_s: 7_200,
            ..DeliverySettings::default()
        },
        ..c
    }
}

async fn cancel(w: &World, id: &str, key: &str) -> Reply {
    w.api
        .post(&format!("/v1/sales/{id}/cancel"))
        .key(key)
        .send()
        .await
}

async fn state(w: &World, id: &str) -> String {
    w.api
        .get(&format!("/v1/sales/{id}"))
        .key(&w.alice)
        .send()
        .await
        .expect(StatusCode::OK)
        .str("/state")
        .to_string()
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
    let s1 = buy("s1").await.expect(StatusCode::CREATED);
    let s2 = buy("s2").await.expect(StatusCode::CREATED);
    buy("s3")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "credit_refused");

    // The buyer cancels one: the slot is free again; cancelling twice is the same answer;
    // nobody else may cancel it (or learn it exists).
    let id1 = s1.str("/id").to_string();
    cancel(&w, &id1, &w.bob)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let c = cancel(&w, &id1, &w.alice).await.expect(StatusCode::OK);
    assert_eq!(c.str("/state"), "cancelled");
    cancel(&w, &id1, &w.alice).await.expect(StatusCode::OK);
    let s3 = buy("s3").await.expect(StatusCode::CREATED);

    // A payment quoting the cancelled sale waits in suspense; no key; refundable.
    let before = w.balance(&w.alice_eur).await;
    let paid = w.post("/v1/sales/pay",
        &w.alice,
        Some("pay-1"),
        json!({"reference": s1.str("/reference"), "from_account": w.alice_eur, "amount": "9.90 EUR"}),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(paid.str("/status"), "closed");
    assert_eq!(state(&w, &id1).await, "cancelled");
    w.api
        .get(&format!("/v1/sales/{id1}/key"))
        .key(&w.alice)
        .send()
        .await
        .expect_error(StatusCode::CONFLICT, "not_released");
    assert_eq!(w.balance(&w.shop_eur).await, 0, "the merchant got nothing");
    w.api
        .post(&format!("/v1/payments/{}/refund", paid.str("/id")))
        .key(&w.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(w.balance(&w.alice_eur).await, before);

    // After the overdue period the alert goes out; after the expiry period the sales expire.
    w.advance(3_601);
    assert_eq!(
        w.api
            .node
            .delivery()
            .sweep_timeouts(100)
            .await
            .expect("sweep"),
        2
    );
    assert_eq!(state(&w, s2.str("/id")).await, "open");
    w.advance(3_600);
    assert_eq!(
        w.api
            .node
            .delivery()
            .sweep_timeouts(100)
            .await
            .expect("sweep"),
        2
    );
    assert_eq!(
        w.api
            .node
            .delivery()
            .sweep_timeouts(100)
            .await
            .expect("sweep"),
        0
    );
    for s in [&s2, &s3] {
        assert_eq!(state(&w, s.str("/id")).await, "expired");
    }
    cancel(&w, s2.str("/id"), &w.alice)
        .await
        .expect_error(StatusCode::CONFLICT, "sale_closed");
    // The buyer was told, and may buy again.
    let inbox = w.inbox("alice").await;
    assert!(
        inbox
            .body
            .as_array()
            .expect("inbox")
            .iter()
            .any(|m| m["subject"]
                .as_str()
                .is_some_and(|s| s.contains("is closed"))),
        "{}",
        inbox.body
    );
    buy("s4").await.expect(StatusCode::CREATED);
    w.audit_passes().await;
}

#[tokio::test]
async fn unpaid_sales_end_by_cancel_or_expiry() {
    walk(World::with(|c| config(c, None)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_sales_end_by_cancel_or_expiry_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    walk(World::with(|c| config(c, Some(url))).await).await;
}
