//! Trustee payments on the ledger (issue [6] item 2): the operator sets a user's trustee
//! limit, a trustee session holds the amount on the user's receivable (refused beyond the
//! limit, nothing held), the code posts it, the settlement pays the merchant less the fee and
//! collects the user's debt, and the audit replays it all. On SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use common::Reply;
use common::world::World;
use serde_json::{Value, json};
use tally_service::NodeConfig;

#[tokio::test]
async fn a_trustee_payment_is_a_debt_within_the_limit_collected_at_settlement() {
    walk(World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trustee_payment_is_a_debt_within_the_limit_collected_at_settlement_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    walk(
        World::with(|c| NodeConfig {
            database_url: Some(url),
            ..c
        })
        .await,
    )
    .await;
}

fn trustee(w: &World, amount: &str) -> Value {
    json!({"user": "alice", "application": "trustee", "merchant_account": w.shop_eur,
           "amount": amount, "description": "Concert ticket"})
}

async fn credit(w: &World) -> Value {
    w.api
        .get("/v1/trustee/credit/alice")
        .key(&w.alice)
        .send()
        .await
        .expect(StatusCode::OK)
        .body
}

/// `[limit, owed, held, available]` in EUR minor units.
async fn eur(w: &World) -> [i64; 4] {
    let c = credit(w).await;
    let eur = c
        .as_array()
        .and_then(|v| v.iter().find(|c| c["currency"] == "EUR"))
        .unwrap_or_else(|| panic!("no EUR credit: {c}"));
    ["limit_minor", "owed_minor", "held_minor", "available_minor"]
        .map(|f| eur[f].as_i64().expect(f))
}

async fn set_limit(w: &World, key: &str, limit: &str) -> Reply {
    w.api
        .call("PUT", "/v1/trustee/credit/alice")
        .key(key)
        .json(json!({ "limit": limit }))
        .send()
        .await
}

async fn walk(w: World) {
    let shop_before = w.balance(&w.shop_eur).await;

    // No credit yet: refused as at the limit, nothing held, no session.
    assert_eq!(credit(&w).await, json!([]));
    let r = w.open(&w.shop, trustee(&w, "10.00 EUR")).await;
    let r = r.expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.str("/error/code"), "trustee_limit_reached", "{}", r.body);
    assert_eq!(r.i64("/error/details/available_minor"), 0);

    // Only the operator sets a limit.
    set_limit(&w, &w.alice, "1000.00 EUR")
        .await
        .expect(StatusCode::FORBIDDEN);
    set_limit(&w, &w.api.admin, "-1.00 EUR")
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    let r = set_limit(&w, &w.api.admin, "50.00 EUR")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.i64("/available_minor"), 5_000);
    assert_eq!(eur(&w).await, [5_000, 0, 0, 5_000]);
    w.api
        .get("/v1/trustee/credit/alice")
        .key(&w.bob)
        .send()
        .await
        .expect(StatusCode::FORBIDDEN);

    // A payment within the limit is held at once; one beyond what is left is refused.
    let (s, code, _) = w.open_secured(&w.shop, trustee(&w, "40.00 EUR")).await;
    assert_eq!(eur(&w).await, [5_000, 0, 4_000, 1_000]);
    let r = w
        .open(&w.shop, trustee(&w, "10.01 EUR"))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.str("/error/code"), "trustee_limit_reached");
    assert_eq!(r.i64("/error/details/available_minor"), 1_000);
    assert_eq!(
        eur(&w).await,
        [5_000, 0, 4_000, 1_000],
        "a refusal holds nothing"
    );

    // The limit never goes below what is used.
    let r = set_limit(&w, &w.api.admin, "39.99 EUR")
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.str("/error/code"), "limit_below_use");
    assert_eq!(r.i64("/error/details/used_minor"), 4_000);

    // The code turns the hold into a debt; the merchant is not paid yet.
    w.verify(&s, &code, None).await.expect(StatusCode::OK);
    assert_eq!(eur(&w).await, [5_000, 4_000, 0, 1_000]);
    assert_eq!(w.balance(&w.shop_eur).await, shop_before);

    // A cancelled session releases its hold.
    let (s2, _, _) = w.open_secured(&w.shop, trustee(&w, "10.00 EUR")).await;
    assert_eq!(eur(&w).await, [5_000, 4_000, 1_000, 0]);
    w.api
        .post(&format!("/v1/oob/sessions/{s2}/cancel"))
        .key(&w.alice)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(eur(&w).await, [5_000, 4_000, 0, 1_000]);

    // Settlement: the merchant paid less 1.5 %, alice's debt collected, her credit free again.
    w.advance(1);
    let settle = || async {
        w.api
            .post("/v1/trustee/settle")
            .key(&w.api.admin)
            .json(json!({}))
            .send()
            .await
            .expect(StatusCode::OK)
    };
    let r = settle().await;
    assert_eq!(
        (
            r.i64("/payouts/0/gross_minor"),
            r.i64("/payouts/0/fee_minor"),
            r.i64("/payouts/0/lines")
        ),
        (4_000, 60, 1),
        "{}",
        r.body
    );
    assert_eq!(r.str("/collections/0/user"), "alice");
    assert_eq!(r.i64("/collections/0/amount_minor"), 4_000);
    assert_eq!(w.balance(&w.shop_eur).await, shop_before + 3_940);
    assert_eq!(eur(&w).await, [5_000, 0, 0, 5_000]);
    let again = settle().await;
    assert_eq!(
        again.body,
        json!({"payouts": [], "collections": []}),
        "a period is paid and collected once"
    );
    assert_eq!(w.balance(&w.shop_eur).await, shop_before + 3_940);

    // Lowering the limit to zero stops new trustee payments.
    set_limit(&w, &w.api.admin, "0.00 EUR")
        .await
        .expect(StatusCode::OK);
    let r = w
        .open(&w.shop, trustee(&w, "0.01 EUR"))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.str("/error/code"), "trustee_limit_reached");
    w.audit_passes().await;
}
