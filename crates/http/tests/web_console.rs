//! The operator's console (issue [9] part 4) in Debian's Chromium: signed in with an admin key
//! pasted once (a wrong key refused), the ledger's counts and journal head as the API reports
//! them, the audit run from the page, the outbox by state, API keys with a revocation that
//! takes effect on the API at once, the metrics; a customer's session refused; sign-out ends the
//! console token. Screenshot; axe-core.

mod browser;

use axum::http::StatusCode;
use browser::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_the_node_from_the_console_in_chromium() {
    if !browser_available() {
        return;
    }
    let t = Tally::start().await;
    let (shop, _alice_eur, _shop_eur) = shop_and_accounts(&t).await;
    // A receiver and two rules, set through the API, for the console to show (never the
    // receiver's secret).
    let (_, settlement) = t
        .call(
            "POST",
            "/v1/accounts",
            Some(&t.admin.clone()),
            Some(json!({"currency": "EUR", "kind": "settlement", "debits_must_not_exceed_credits": false})),
        )
        .await;
    let secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let (status, body) = t
        .call(
            "PUT",
            "/v1/receivers/bank",
            Some(&t.admin.clone()),
            Some(json!({"account": settlement["id"], "hmac_secret": secret})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (owner, side) in [("operator", "payee"), ("alice", "payer")] {
        let (status, body) = t
            .call(
                "PUT",
                &format!("/v1/oob/rules/{owner}"),
                Some(&t.admin.clone()),
                Some(json!({"secured_above": "50.00 EUR", "side": side})),
            )
            .await;
        assert!(status.is_success(), "{status} {body}");
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let driver = Chromedriver::start(scratch.path()).await;
    let browser = driver.browser(&scratch.path().join("profile")).await;

    browser
        .goto(&format!("{}/console", t.base))
        .await
        .expect("/console");
    type_into(&browser, "#key", "tally_admin_0000000000000000").await;
    click(&browser, "#console-sign-in").await;
    text_of(&browser, "#result", "Sign in again").await;
    type_into(&browser, "#key", &t.admin.clone()).await;
    click(&browser, "#console-sign-in").await;
    path_of(&browser, "/console").await;
    text_of(&browser, "#nav-console", "Console").await;

    // The figures are the node's: accounts and the journal head as the metrics count them.
    let accounts = text_of(&browser, "#accounts-count", "").await;
    let (_, listed) = t
        .call(
            "GET",
            "/v1/accounts?owner=alice",
            Some(&t.admin.clone()),
            None,
        )
        .await;
    assert!(listed.as_array().is_some_and(|a| !a.is_empty()), "{listed}");
    assert_eq!(
        accounts, "4",
        "two settlement accounts, alice's and the shop's"
    );
    let journal = text_of(&browser, "#journal-seq", "entry ").await;
    assert!(
        journal
            .trim_start_matches("entry ")
            .parse::<i64>()
            .is_ok_and(|n| n > 3),
        "{journal}"
    );
    let outbox = text_of(&browser, "#outbox", "retrying").await;
    assert!(!outbox.is_empty());
    let keys = text_of(&browser, "#keys", "shop").await;
    assert!(
        keys.contains("operator") && keys.contains("merchant"),
        "{keys}"
    );
    text_of(&browser, "#metrics", "tally_ledger_accounts").await;
    let receivers = text_of(&browser, "#receivers", "bank").await;
    assert!(receivers.contains("hmac"), "{receivers}");
    let page = browser.source().await.expect("source");
    assert!(
        !page.contains(secret),
        "the receiver's secret never reaches a page"
    );
    let rules = text_of(&browser, "#rules", "50.00 EUR").await;
    assert!(
        rules.contains("operator")
            && rules.contains("as payee")
            && rules.contains("alice")
            && rules.contains("as payer"),
        "{rules}"
    );

    // The audit, run from the page.
    click(&browser, "#run-audit").await;
    text_of(&browser, "#audit-result", "Audit passed").await;
    shot(&browser, "console").await;
    axe(&browser, "the console").await;

    // Revoking the shop's key from the page stops it on the API at once.
    let (status, _) = t.call("GET", "/v1/accounts", Some(&shop), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, all_keys) = t
        .call("GET", "/v1/api-keys", Some(&t.admin.clone()), None)
        .await;
    let shop_key = all_keys
        .as_array()
        .and_then(|a| a.iter().find(|k| k["owner"] == "shop"))
        .and_then(|k| k["id"].as_str())
        .expect("the shop's key")
        .to_string();
    click(
        &browser,
        &format!("button[aria-label='Revoke key {shop_key}']"),
    )
    .await;
    text_of(&browser, "#notice", &format!("Revoked key {shop_key}")).await;
    let (status, _) = t.call("GET", "/v1/accounts", Some(&shop), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the revoked key is refused"
    );

    // A customer's session gets the console's sign-in form with a 403, and no form works.
    let customer = router_sign_in(&t, "ana").await;
    let (status, _, body) = with_cookie(&t, "/console", &customer, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("operator only"));
    let (status, _, _) = post_form(
        &t,
        "/console/audit",
        Some(&customer),
        &format!("csrf={}", csrf_for(&customer, "/console/audit")),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = t
        .call(
            "POST",
            "/v1/accounts",
            Some(&customer),
            Some(json!({"currency": "EUR", "owner": "ana", "kind": "settlement"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a customer token is no admin"
    );

    // Signing out ends the console token everywhere.
    let token = session_cookie(&browser).await;
    assert!(token.starts_with("tally_console_"), "{token}");
    let (status, _) = t.call("GET", "/v1/api-keys", Some(&token), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the console token acts as the admin key"
    );
    click(&browser, "#sign-out").await;
    // Only a signed-out page offers to sign in (every path starts with "/").
    text_of(&browser, "#nav-sign-in", "Sign in").await;
    let (status, _) = t.call("GET", "/v1/api-keys", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "signed out");
}
