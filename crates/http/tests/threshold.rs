//! The threshold rule (SPEC A6, issue [6] item 1) on every path that moves a customer's money
//! out: `/v1/transfers`, `/v1/holds`, `/v1/sales/pay` and the auto-debit of
//! `/v1/sales/{id}/acknowledge`. Above the payee's or the payer's threshold the node answers
//! `202 confirmation_required` with the session, moves nothing, and runs the request once the
//! code is verified and the request repeated with its key. Runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use common::Reply;
use common::world::World;
use serde_json::{Value, json};
use tally_service::NodeConfig;

#[tokio::test]
async fn every_money_path_asks_above_the_threshold() {
    walk(World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_money_path_asks_above_the_threshold_on_postgres() {
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

/// A keyed `POST` (every request here moves money).
async fn post(w: &World, path: &str, key: &str, idem: &str, body: Value) -> Reply {
    w.post(path, key, Some(idem), body).await
}

async fn sale_of(w: &World, id: &str) -> Value {
    w.api
        .get(&format!("/v1/sales/{id}"))
        .key(&w.alice)
        .send()
        .await
        .expect(StatusCode::OK)
        .body
}

/// The session of a `202 confirmation_required`, checked for what it shows.
fn asked(r: Reply, amount_minor: i64) -> String {
    let r = r.expect_error(StatusCode::ACCEPTED, "confirmation_required");
    let session = &r.body["error"]["details"]["session"];
    assert_eq!(session["application"], "confirm", "{session}");
    assert_eq!(session["state"], "open", "{session}");
    assert_eq!(
        session["purpose"]["amount"]["minor"], amount_minor,
        "{session}"
    );
    session["session"].as_str().expect("number").to_string()
}

/// Verifies `session` with the code from `user`'s inbox, confirming what it shows.
async fn confirm(w: &World, user: &str, session: &str) {
    let shown = w
        .api
        .get(&format!("/v1/oob/sessions/{session}"))
        .send()
        .await
        .expect(StatusCode::OK);
    let code = w.code_for(user, session).await;
    w.verify(session, &code, Some(shown.body["purpose"].clone()))
        .await
        .expect(StatusCode::OK);
}

async fn walk(w: World) {
    let transfer = |amount: &str| json!({"debit_account": w.alice_eur, "credit_account": w.shop_eur, "amount": amount});
    // The shop's threshold: payments to it above 5.00 EUR need a code.
    w.api
        .call("PUT", "/v1/oob/rules/shop")
        .key(&w.shop)
        .json(json!({"secured_above": "5.00 EUR"}))
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(w.balances().await, [10_000, 2_000, 0]);

    // At or below it, a transfer runs at once.
    post(&w, "/v1/transfers", &w.alice, "small", transfer("5.00 EUR"))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(w.balances().await, [9_500, 2_000, 500]);

    // Above it, nothing moves: a session to confirm; a retry is the same session, one code.
    let session = asked(
        post(&w, "/v1/transfers", &w.alice, "big", transfer("6.00 EUR")).await,
        600,
    );
    let again = asked(
        post(&w, "/v1/transfers", &w.alice, "big", transfer("6.00 EUR")).await,
        600,
    );
    assert_eq!(
        again, session,
        "a retry before the code is the same session"
    );
    let codes = w.inbox("alice").await.body.as_array().expect("inbox").len();
    assert_eq!(w.balances().await, [9_500, 2_000, 500], "nothing moved");
    // The same key with another body is another request.
    post(&w, "/v1/transfers", &w.alice, "big", transfer("7.00 EUR"))
        .await
        .expect_error(StatusCode::CONFLICT, "idempotency_key_reused");

    // Confirmed, the repeated request runs, once.
    confirm(&w, "alice", &session).await;
    let done = post(&w, "/v1/transfers", &w.alice, "big", transfer("6.00 EUR"))
        .await
        .expect(StatusCode::CREATED);
    let id = done.str("/id").to_string();
    let replay = post(&w, "/v1/transfers", &w.alice, "big", transfer("6.00 EUR"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(replay.str("/id"), id);
    assert_eq!(w.balances().await, [8_900, 2_000, 1_100]);
    assert_eq!(
        w.inbox("alice").await.body.as_array().expect("inbox").len(),
        codes,
        "no second code was sent"
    );

    // The confirmation belongs to its request: another key asks again. Cancelled, that key
    // is spent.
    let other = asked(
        post(&w, "/v1/transfers", &w.alice, "big-2", transfer("6.00 EUR")).await,
        600,
    );
    assert_ne!(other, session);
    w.api
        .post(&format!("/v1/oob/sessions/{other}/cancel"))
        .send()
        .await
        .expect(StatusCode::OK);
    post(&w, "/v1/transfers", &w.alice, "big-2", transfer("6.00 EUR"))
        .await
        .expect_error(StatusCode::CONFLICT, "confirmation_failed");
    assert_eq!(w.balances().await, [8_900, 2_000, 1_100]);

    // Holds go through the same rule.
    let hold = json!({"debit_account": w.alice_eur, "credit_account": w.shop_eur, "amount": "8.00 EUR", "timeout_s": 600});
    let s = asked(
        post(&w, "/v1/holds", &w.alice, "hold", hold.clone()).await,
        800,
    );
    assert_eq!(w.available(&w.alice_eur).await, 8_900, "no hold yet");
    confirm(&w, "alice", &s).await;
    post(&w, "/v1/holds", &w.alice, "hold", hold)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(w.available(&w.alice_eur).await, 8_100);

    // The payer's own rule: bob confirms every payment above 1.00 EUR, whoever is paid
    // (alice has no rule of her own, and the operator none).
    w.api
        .call("PUT", "/v1/oob/rules/bob")
        .key(&w.bob)
        .json(json!({"secured_above": "1.00 EUR", "side": "payer"}))
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);
    let to_alice = |amount: &str| json!({"debit_account": w.bob_eur, "credit_account": w.alice_eur, "amount": amount});
    post(&w, "/v1/transfers", &w.bob, "b-small", to_alice("1.00 EUR"))
        .await
        .expect(StatusCode::CREATED);
    let s = asked(
        post(&w, "/v1/transfers", &w.bob, "b-big", to_alice("2.00 EUR")).await,
        200,
    );
    confirm(&w, "bob", &s).await;
    post(&w, "/v1/transfers", &w.bob, "b-big", to_alice("2.00 EUR"))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(w.balances().await, [9_200, 1_700, 1_100]);
    // Nobody else may set bob's rule.
    w.api
        .call("PUT", "/v1/oob/rules/bob")
        .key(&w.alice)
        .json(json!({"secured_above": "1000.00 EUR", "side": "payer"}))
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");

    // The operator moves money under its own authority.
    post(
        &w,
        "/v1/transfers",
        &w.api.admin,
        "op",
        transfer("10.00 EUR"),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(w.balances().await, [8_200, 1_700, 2_100]);

    // A payer only tightens its own threshold; loosening it needs the operator (a stolen key
    // must not switch confirmations off).
    w.api
        .call("PUT", "/v1/oob/rules/bob")
        .key(&w.bob)
        .json(json!({"secured_above": "0.50 EUR", "side": "payer"}))
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);
    w.api
        .call("PUT", "/v1/oob/rules/bob")
        .key(&w.bob)
        .json(json!({"secured_above": "1000.00 EUR", "side": "payer"}))
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    w.api
        .call("PUT", "/v1/oob/rules/bob")
        .key(&w.api.admin)
        .json(json!({"secured_above": "1.00 EUR", "side": "payer"}))
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);
    // A payee's own rule never loosens the operator's default: with the operator's 3.00 EUR,
    // the shop's 5.00 EUR does not let 4.00 EUR through without a code.
    w.api
        .call("PUT", "/v1/oob/rules/operator")
        .key(&w.api.admin)
        .json(json!({"secured_above": "3.00 EUR"}))
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);
    asked(
        post(&w, "/v1/transfers", &w.alice, "four", transfer("4.00 EUR")).await,
        400,
    );

    sale_paths(&w).await;
    w.audit_passes().await;
}

/// Payment by reference and the auto-debit on acknowledgement, above the shop's threshold.
async fn sale_paths(w: &World) {
    let product = w.album().await;
    let buy = |idem: &'static str| {
        post(
            w,
            "/v1/sales",
            &w.alice,
            idem,
            json!({"product": product, "channel": "dev", "address": "alice"}),
        )
    };

    // Pay by reference: asked, confirmed, paid; the sale is released.
    let sale = buy("s1").await.expect(StatusCode::CREATED);
    let reference = sale.str("/reference").to_string();
    let pay = json!({"reference": reference, "from_account": w.alice_eur, "amount": "9.90 EUR"});
    let s = asked(
        post(w, "/v1/sales/pay", &w.alice, "pay", pay.clone()).await,
        990,
    );
    assert_eq!(
        sale_of(w, sale.str("/id")).await["state"],
        "open",
        "not paid before the code"
    );
    confirm(w, "alice", &s).await;
    let paid = post(w, "/v1/sales/pay", &w.alice, "pay", pay)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(paid.str("/status"), "matched");
    let shown = sale_of(w, sale.str("/id")).await;
    assert_eq!(shown["state"], "released");
    // The sale shows the payment's real ledger transfer (issue [6] item 20).
    let transfer = shown["payments"][0]["transfer"]
        .as_str()
        .expect("transfer id");
    assert_eq!(transfer, paid.str("/transfer"));
    let t = w
        .api
        .get(&format!("/v1/transfers/{transfer}"))
        .key(&w.alice)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(t.i64("/amount/minor"), 990);
    assert_eq!(t.str("/credit_account"), w.shop_eur);

    // Acknowledge with auto-debit: the acknowledgement is kept, the debit waits for the code.
    let sale = buy("s2").await.expect(StatusCode::CREATED);
    let id = sale.str("/id").to_string();
    let ack = json!({"acknowledgement": {"v": 1, "sale": id, "reference": sale.str("/reference"),
                      "package_sha256": sale.str("/package_sha256")},
                     "debit_account": w.alice_eur});
    let before = w.balance(&w.alice_eur).await;
    let s = asked(
        w.api
            .post(&format!("/v1/sales/{id}/acknowledge"))
            .key(&w.alice)
            .json(ack.clone())
            .send()
            .await,
        990,
    );
    let open = sale_of(w, &id).await;
    assert_eq!(open["state"], "open");
    assert!(
        open["delivered_at"].is_number(),
        "delivery is recorded: {open}"
    );
    assert_eq!(w.balance(&w.alice_eur).await, before);
    confirm(w, "alice", &s).await;
    let done = w
        .api
        .post(&format!("/v1/sales/{id}/acknowledge"))
        .key(&w.alice)
        .json(ack)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(done.str("/state"), "released");
    assert_eq!(w.balance(&w.alice_eur).await, before - 990);
}
