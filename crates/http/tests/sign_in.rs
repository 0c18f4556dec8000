//! A verified sign-in gives a real session (issue [6] item 3): the access token works as a
//! customer key of the user on the API, expires with the token's lifetime, and stops at once on
//! sign-out. Runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use common::world::World;
use serde_json::json;
use tally_service::NodeConfig;

async fn sign_in(w: &World, idem: &str) -> String {
    let r = w
        .api
        .post("/v1/oob/sessions")
        .key(&w.alice)
        .idem(idem)
        .json(json!({"user": "alice", "application": "login"}))
        .send()
        .await
        .expect(StatusCode::CREATED);
    let session = r.str("/session/session").to_string();
    let code = w.code_for("alice", &session).await;
    let v = w.verify(&session, &code, None).await.expect(StatusCode::OK);
    v.str("/access_token").to_string()
}

async fn walk(w: World) {
    let token = sign_in(&w, "login-1").await;
    // Alice's own routes answer to the token as to her key.
    let accounts = w
        .api
        .get("/v1/accounts")
        .key(&token)
        .send()
        .await
        .expect(StatusCode::OK);
    let ids: Vec<&str> = accounts
        .body
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, [w.alice_eur.as_str()], "{}", accounts.body);
    w.api
        .post("/v1/transfers")
        .key(&token)
        .idem("with-the-token")
        .json(json!({"debit_account": w.alice_eur, "credit_account": w.bob_eur, "amount": "1.00 EUR"}))
        .send()
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(w.balances().await, [9_900, 2_100, 0]);
    // Not more than a customer key: not bob's account, not the operator's routes.
    w.api
        .get(&format!("/v1/accounts/{}", w.bob_eur))
        .key(&token)
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "account_not_found");
    w.api
        .get("/v1/api-keys")
        .key(&token)
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // Signed out, the token stops at once; signing out again is refused as unknown.
    w.api
        .post("/v1/oob/sign-out")
        .key(&token)
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);
    w.api
        .get("/v1/accounts")
        .key(&token)
        .send()
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    w.api
        .get("/v1/oob/whoami")
        .key(&token)
        .send()
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // A new sign-in's token expires with its lifetime (900 s by default).
    let token = sign_in(&w, "login-2").await;
    w.api
        .get("/v1/accounts")
        .key(&token)
        .send()
        .await
        .expect(StatusCode::OK);
    w.advance(901);
    w.api
        .get("/v1/accounts")
        .key(&token)
        .send()
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    w.audit_passes().await;
}

#[tokio::test]
async fn a_sign_in_is_a_session_on_the_api() {
    walk(World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_is_a_session_on_the_api_on_postgres() {
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
