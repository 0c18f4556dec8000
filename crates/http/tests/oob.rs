//! Out-of-band authentication through the HTTP API (SPEC A1–A7), end to end: every
//! application, with codes read from the dev inbox (and, in one flow, from a real SMTP server
//! on loopback), and the ledger's balances checked after each step. Refusals are checked for
//! their cause *and* for leaving the ledger unchanged.

mod common;

use axum::http::StatusCode;
use common::world::{World, code_in};
use serde_json::json;
use std::sync::Arc;
use tally_kernel::Timestamp;
use tally_service::NodeConfig;

#[tokio::test]
async fn every_application_end_to_end() {
    walk_every_application(World::new().await).await;
}

/// The same walk on PostgreSQL (a throwaway cluster from Debian's binaries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_application_end_to_end_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    walk_every_application(
        World::with(|c| NodeConfig {
            database_url: Some(url),
            ..c
        })
        .await,
    )
    .await;
}

async fn walk_every_application(w: World) {
    assert_eq!(w.balances().await, [10_000, 2_000, 0]);

    // Access control: a login gives a short-lived token for the protected resource.
    let (s, code, view) = w
        .open_secured(&w.alice, json!({"user": "alice", "application": "login"}))
        .await;
    assert_eq!(view["purpose"]["type"], "login");
    assert_eq!(view["address"], "alice");
    let r = w.verify(&s, &code, None).await.expect(StatusCode::OK);
    assert_eq!(r.str("/session/state"), "verified");
    let token = r.str("/access_token").to_string();
    let me = w
        .api
        .get("/v1/oob/whoami")
        .header("authorization", &format!("Bearer {token}"))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(me.str("/user"), "alice");
    w.api
        .get("/v1/oob/whoami")
        .header("authorization", "Bearer tally_session_0000")
        .send()
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(w.balances().await, [10_000, 2_000, 0]);

    // Message certification: an inter-account transfer posts only after the code; the code
    // went out with the amount and both accounts in clear.
    let (s, code, view) = w
        .open_secured(&w.alice, w.transfer("10.00 EUR", "rent"))
        .await;
    let inbox = w.inbox("alice").await;
    let text = inbox.body[0]["body"].as_str().expect("body").to_string();
    assert!(
        text.contains("10.00 EUR") && text.contains("bob") && text.contains(&w.bob_eur),
        "{text}"
    );
    assert_eq!(
        w.balances().await,
        [10_000, 2_000, 0],
        "nothing moves before the code"
    );
    let r = w
        .verify(&s, &code, Some(view["purpose"].clone()))
        .await
        .expect(StatusCode::OK);
    let cert = w.check_certificate(&r.body["session"]["result"]["certificate"], "transfer");
    assert_eq!(cert["purpose"]["amount"]["minor"], 1000);
    assert_eq!(w.balances().await, [9_000, 3_000, 0]);

    // Payment without contract: account details given in the session, the bank's
    // authorisation is a hold, posted to the merchant on success.
    let (s, code, view) = w
        .open_secured(&w.shop, w.payment("12.50 EUR", "Blue mug"))
        .await;
    assert!(view["hold_id"].is_string(), "{view}");
    assert_eq!(
        w.available(&w.alice_eur).await,
        9_000 - 1_250,
        "the hold reserves the money"
    );
    assert_eq!(w.balances().await, [9_000, 3_000, 0]);
    let r = w
        .verify(&s, &code, Some(view["purpose"].clone()))
        .await
        .expect(StatusCode::OK);
    w.check_certificate(&r.body["session"]["result"]["certificate"], "payment");
    assert_eq!(w.balances().await, [7_750, 3_000, 1_250]);

    // Payment with contract: the subscriber's stored account, nothing typed.
    w.api
        .post("/v1/subscribers/alice")
        .key(&w.alice)
        .json(json!({"contract_account": w.alice_eur}))
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);
    let (s, code, view) = w
        .open_secured(
            &w.shop,
            json!({"user": "alice", "application": "payment", "merchant_account": w.shop_eur,
                   "amount": "5.00 EUR", "description": "Subscription"}),
        )
        .await;
    assert_eq!(view["purpose"]["payer_account"], w.alice_eur.as_str());
    w.verify(&s, &code, None).await.expect(StatusCode::OK);
    assert_eq!(w.balances().await, [7_250, 3_000, 1_750]);

    // Payment-terminal flow: the terminal enters the amount, the customer confirms with the
    // code from their own device.
    let (s, code, _) = w
        .open_secured(
            &w.shop,
            json!({"user": "alice", "application": "payment", "merchant_account": w.shop_eur,
                   "amount": "2.50 EUR", "description": "Coffee", "terminal": "T-17"}),
        )
        .await;
    let inbox = w.inbox("alice").await;
    assert!(
        inbox.body[0]["body"]
            .as_str()
            .is_some_and(|b| b.contains("terminal T-17") && b.contains("2.50 EUR"))
    );
    w.verify(&s, &code, None).await.expect(StatusCode::OK);
    assert_eq!(w.balances().await, [7_000, 3_000, 2_000]);

    // Payment through a trustee: within the limit the operator set, nothing moves between
    // customers now, the debt is on alice's register and trustee credit, the merchant is paid
    // less the fee (1.5 %) when the operator settles the period (crates/http/tests/trustee.rs).
    w.api
        .call("PUT", "/v1/trustee/credit/alice")
        .key(&w.api.admin)
        .json(json!({"limit": "100.00 EUR"}))
        .send()
        .await
        .expect(StatusCode::OK);
    let (s, code, _) = w
        .open_secured(
            &w.shop,
            json!({"user": "alice", "application": "trustee", "merchant_account": w.shop_eur,
                   "amount": "40.00 EUR", "description": "Concert ticket"}),
        )
        .await;
    w.verify(&s, &code, None).await.expect(StatusCode::OK);
    assert_eq!(w.balances().await, [7_000, 3_000, 2_000]);
    w.advance(1);
    let r = w
        .api
        .post("/v1/trustee/settle")
        .key(&w.api.admin)
        .json(json!({}))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (
            r.i64("/payouts/0/gross_minor"),
            r.i64("/payouts/0/fee_minor"),
            r.i64("/payouts/0/lines")
        ),
        (4_000, 60, 1)
    );
    assert_eq!(w.balances().await, [7_000, 3_000, 5_940]);
    let again = w
        .api
        .post("/v1/trustee/settle")
        .key(&w.api.admin)
        .json(json!({}))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        again.body,
        json!({"payouts": [], "collections": []}),
        "a period is paid once"
    );
    assert_eq!(w.balances().await, [7_000, 3_000, 5_940]);

    // Registered mail: the sender authenticates, the recipient is alerted, authenticates and
    // retrieves it, the sender is told; both keep certificates.
    let (s, code, view) = w
        .open_secured(
            &w.alice,
            json!({"user": "alice", "application": "mail_send", "recipient": "bob",
                   "subject": "Contract", "body": "I accept the offer of 3 November."}),
        )
        .await;
    assert_eq!(view["purpose"]["type"], "message");
    let r = w.verify(&s, &code, None).await.expect(StatusCode::OK);
    let mail = r.str("/session/result/mail").to_string();
    w.check_certificate(&r.body["session"]["result"]["certificate"], "mail_deposit");
    let alert = w.inbox("bob").await;
    assert!(
        alert.body[0]["body"]
            .as_str()
            .is_some_and(|b| b.contains("registered mail") && b.contains(&mail))
    );
    let listed = w
        .api
        .get("/v1/mail?user=bob")
        .key(&w.bob)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        listed.str("/0/body"),
        "",
        "the body waits for authentication"
    );
    let (s, code, _) = w
        .open_secured(
            &w.bob,
            json!({"user": "bob", "application": "mail_retrieve", "mail_id": mail}),
        )
        .await;
    let r = w.verify(&s, &code, None).await.expect(StatusCode::OK);
    assert_eq!(
        r.str("/session/result/mail/body"),
        "I accept the offer of 3 November."
    );
    w.check_certificate(
        &r.body["session"]["result"]["certificate"],
        "mail_retrieval",
    );
    let told = w.inbox("alice").await;
    assert!(
        told.body[0]["body"]
            .as_str()
            .is_some_and(|b| b.contains("bob retrieved your registered mail"))
    );
    let certs = w
        .api
        .get("/v1/certificates?user=alice")
        .key(&w.alice)
        .send()
        .await
        .expect(StatusCode::OK);
    let kinds: Vec<&str> = certs
        .body
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"mail_deposit") && kinds.contains(&"mail_retrieval"),
        "{kinds:?}"
    );
    let certs = w
        .api
        .get("/v1/certificates?user=bob")
        .key(&w.bob)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(certs.str("/0/kind"), "mail_retrieval");

    // Remote declaration: a form, answered with a receipt certificate over its hash.
    let form = r#"{"income_minor": 4200000, "year": 2026}"#;
    let (s, code, _) = w
        .open_secured(&w.alice, json!({"user": "alice", "application": "declaration", "title": "Tax 2026", "form": form}))
        .await;
    let r = w.verify(&s, &code, None).await.expect(StatusCode::OK);
    let receipt = w.check_certificate(
        &r.body["session"]["result"]["certificate"],
        "declaration_receipt",
    );
    let digest = tally_kernel::crypto::kdf::sha256(form.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(receipt["what"]["form_sha256"], hex.as_str());

    // A bet: a certified message with a stake, paid to the bookmaker on success.
    let (s, code, view) = w
        .open_secured(
            &w.alice,
            json!({"user": "alice", "application": "bet", "debit_account": w.alice_eur,
                   "credit_account": w.shop_eur, "stake": "3.00 EUR", "bet": "Team A wins"}),
        )
        .await;
    assert_eq!(view["purpose"]["description"], "Bet: Team A wins");
    w.verify(&s, &code, None).await.expect(StatusCode::OK);
    assert_eq!(w.balances().await, [6_700, 3_000, 6_240]);

    // Personalised offers: they wait in a mailbox that opens after authentication.
    w.api
        .post("/v1/offers")
        .key(&w.shop)
        .json(json!({"recipient": "alice", "subject": "10% off mugs", "body": "Use code MUG10"}))
        .send()
        .await
        .expect(StatusCode::CREATED);
    let (s, code, _) = w
        .open_secured(&w.alice, json!({"user": "alice", "application": "offers"}))
        .await;
    let r = w.verify(&s, &code, None).await.expect(StatusCode::OK);
    assert_eq!(r.str("/session/result/offers/0/subject"), "10% off mugs");
    let (s, code, _) = w
        .open_secured(&w.alice, json!({"user": "alice", "application": "offers"}))
        .await;
    let r = w.verify(&s, &code, None).await.expect(StatusCode::OK);
    assert_eq!(
        r.body["session"]["result"]["offers"],
        json!([]),
        "offers are read once"
    );

    // The register: every secured transaction, totalled; the trustee line shows settled.
    let st = w
        .api
        .get("/v1/subscribers/alice/statement")
        .key(&w.alice)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        st.i64("/totals/EUR"),
        1_000 + 1_250 + 500 + 250 + 4_000 + 300
    );
    let lines = st.body["entries"].as_array().expect("entries");
    let trustee = lines
        .iter()
        .find(|l| l["kind"] == "trustee")
        .expect("trustee line");
    assert!(trustee["settled_at"].is_number());
    assert!(lines.iter().any(|l| l["kind"] == "login"));
    w.audit_passes().await;
}

#[tokio::test]
async fn refusals_give_their_cause_and_change_nothing() {
    let w = World::new().await;
    let transfer = w.transfer("10.00 EUR", "rent");

    // Wrong code; then a code from another session; both count as wrong codes.
    let (s1, code1, view1) = w.open_secured(&w.alice, transfer.clone()).await;
    let (s2, code2, _) = w.open_secured(&w.alice, transfer.clone()).await;
    let wrong = if code1.ends_with('0') {
        format!("{}1", &code1[..7])
    } else {
        format!("{}0", &code1[..7])
    };
    let r = w
        .verify(&s1, &wrong, None)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "wrong_code");
    assert_eq!(r.i64("/error/details/attempts_left"), 4);
    if code2 != code1 {
        w.verify(&s1, &code2, None)
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "wrong_code");
    }
    // Changed amount: the client shows another transaction than the code was sent for.
    let mut changed = view1["purpose"].clone();
    changed["amount"]["minor"] = json!(100_000);
    w.verify(&s1, &code1, Some(changed))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "transaction_mismatch");
    assert_eq!(w.balances().await, [10_000, 2_000, 0]);
    let shown = w
        .api
        .get(&format!("/v1/oob/sessions/{s1}"))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (shown.str("/state"), shown.i64("/attempts_left")),
        ("open", if code2 != code1 { 3 } else { 4 })
    );

    // The right code still works once; reusing it is refused.
    w.verify(&s1, &code1, Some(view1["purpose"].clone()))
        .await
        .expect(StatusCode::OK);
    assert_eq!(w.balances().await, [9_000, 3_000, 0]);
    w.verify(&s1, &code1, None)
        .await
        .expect_error(StatusCode::CONFLICT, "session_closed");
    assert_eq!(w.balances().await, [9_000, 3_000, 0]);

    // Expired: the code's five minutes are over; nothing runs, and the payment's hold is
    // released by the expiry sweeper after its grace period.
    let (s3, code3, _) = w
        .open_secured(&w.shop, w.payment("12.50 EUR", "Blue mug"))
        .await;
    assert_eq!(w.available(&w.alice_eur).await, 9_000 - 1_250);
    w.advance(301);
    w.verify(&s3, &code3, None)
        .await
        .expect_error(StatusCode::GONE, "expired");
    assert_eq!(w.balances().await, [9_000, 3_000, 0]);
    w.advance(120);
    let expired = w
        .api
        .node
        .store()
        .expire_due(w.api.node.now(), 100)
        .await
        .expect("sweep");
    assert_eq!(expired, 1);
    assert_eq!(w.available(&w.alice_eur).await, 9_000);
    // Cancelling it afterwards closes it quietly (the hold is gone already).
    let closed = w
        .api
        .post(&format!("/v1/oob/sessions/{s3}/cancel"))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(closed.str("/state"), "closed");

    // Too many attempts: the fifth wrong code locks the session and voids the hold at once;
    // the right code is refused afterwards.
    let (s4, code4, _) = w
        .open_secured(&w.shop, w.payment("7.00 EUR", "Plate"))
        .await;
    assert_eq!(w.available(&w.alice_eur).await, 9_000 - 700);
    for left in (1..=4).rev() {
        let r = w.verify(&s4, "00000000", None).await;
        if code4 == "00000000" {
            return; // one in 10^8: the "wrong" code was right
        }
        assert_eq!(
            r.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "wrong_code")
                .i64("/error/details/attempts_left"),
            left
        );
    }
    w.verify(&s4, "00000000", None)
        .await
        .expect_error(StatusCode::LOCKED, "too_many_attempts");
    w.verify(&s4, &code4, None)
        .await
        .expect_error(StatusCode::LOCKED, "too_many_attempts");
    assert_eq!(
        w.available(&w.alice_eur).await,
        9_000,
        "the hold is voided on lock"
    );
    assert_eq!(w.balances().await, [9_000, 3_000, 0]);

    // Cancelled by the user: closed, hold voided, code refused.
    let (s5, code5, _) = w
        .open_secured(&w.shop, w.payment("1.00 EUR", "Spoon"))
        .await;
    w.api
        .post(&format!("/v1/oob/sessions/{s5}/cancel"))
        .send()
        .await
        .expect(StatusCode::OK);
    w.verify(&s5, &code5, None)
        .await
        .expect_error(StatusCode::CONFLICT, "session_closed");
    assert_eq!(w.available(&w.alice_eur).await, 9_000);

    // Unknown and malformed sessions, unknown users, other people's accounts.
    w.verify("00000000000000000000000000000000", "12345678", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    w.verify("not-hex", "12345678", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    w.open(
        &w.api.admin,
        json!({"user": "nobody", "application": "login"}),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    w.open(&w.bob, json!({"user": "alice", "application": "login"}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    w.open(
        &w.bob,
        json!({"user": "bob", "application": "transfer", "debit_account": w.alice_eur,
                          "credit_account": w.bob_eur, "amount": "1.00 EUR"}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    w.open(&w.shop, w.payment("1.00 USD", "x"))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    w.open(
        &w.alice,
        json!({"user": "alice", "application": "login", "extra": 1}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "malformed_json");
    w.open(&w.alice, json!({"application": "login"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "malformed_json");
    w.verify(&s2, &"9".repeat(40), None)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(w.balances().await, [9_000, 3_000, 0]);
    w.audit_passes().await;
}

#[tokio::test]
async fn concurrent_confirmations_authorise_once() {
    let w = World::new().await;
    let (s, code, _) = w.open_secured(&w.alice, w.transfer("10.00 EUR", "")).await;
    let attempts = (0..8).map(|_| w.verify(&s, &code, None));
    let replies = futures::future::join_all(attempts).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let closed = replies
        .iter()
        .filter(|r| r.code() == "session_closed")
        .count();
    assert_eq!(
        (ok, closed),
        (1, 7),
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(w.balances().await, [9_000, 3_000, 0]);
}

#[tokio::test]
async fn threshold_rule_idempotent_opens_and_address_quota() {
    let w = World::with(|c| {
        let mut c = c;
        c.oob.address_quota = 6;
        c
    })
    .await;
    // The shop secures only payments above 20.00 EUR; below, they run on channel A alone.
    w.api
        .call("PUT", "/v1/oob/rules/shop")
        .key(&w.shop)
        .json(json!({"secured_above": "20.00 EUR"}))
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);
    w.api
        .call("PUT", "/v1/oob/rules/bob")
        .key(&w.shop)
        .json(json!({"secured_above": "20.00 EUR"}))
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let pay = |amount: &str| w.payment(amount, "Mug");
    let r = w
        .open(&w.shop, pay("5.00 EUR"))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.str("/outcome"), "normal");
    assert_eq!(w.balances().await, [9_500, 2_000, 500]);
    // A retry of a normal payment stays that payment, even after the threshold changes.
    let set_rule = |amount: &'static str| {
        w.api
            .call("PUT", "/v1/oob/rules/shop")
            .key(&w.shop)
            .json(json!({ "secured_above": amount }))
            .send()
    };
    let till = |amount: &str| {
        w.api
            .post("/v1/oob/sessions")
            .key(&w.shop)
            .idem("till-3")
            .json(pay(amount))
            .send()
    };
    let first = till("4.00 EUR").await.expect(StatusCode::CREATED);
    assert_eq!(first.str("/outcome"), "normal");
    // The transfer as every route shows one (`GET /v1/transfers/{id}`).
    assert_eq!(first.str("/transfer/amount_display"), "4.00 EUR");
    assert_eq!(first.i64("/transfer/amount/minor"), 400);
    assert_eq!(first.str("/transfer/state"), "posted");
    set_rule("1.00 EUR").await.expect(StatusCode::NO_CONTENT);
    let again = till("4.00 EUR").await.expect(StatusCode::OK);
    assert_eq!(
        (again.str("/outcome"), again.str("/transfer/id")),
        ("normal", first.str("/transfer/id"))
    );
    till("4.50 EUR")
        .await
        .expect_error(StatusCode::CONFLICT, "idempotency_key_reused");
    assert_eq!(w.balances().await, [9_100, 2_000, 900]);
    set_rule("20.00 EUR").await.expect(StatusCode::NO_CONTENT);
    let r = w
        .open(&w.shop, pay("25.00 EUR"))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.str("/outcome"), "secured");

    // The same Idempotency-Key returns the same session; another body under it is refused.
    let first = w
        .api
        .post("/v1/oob/sessions")
        .key(&w.shop)
        .idem("checkout-7")
        .json(pay("30.00 EUR"))
        .send()
        .await
        .expect(StatusCode::CREATED);
    let again = w
        .api
        .post("/v1/oob/sessions")
        .key(&w.shop)
        .idem("checkout-7")
        .json(pay("30.00 EUR"))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(first.str("/session/session"), again.str("/session/session"));
    assert_eq!(
        first.body["session"]["hold_id"],
        again.body["session"]["hold_id"]
    );
    w.api
        .post("/v1/oob/sessions")
        .key(&w.shop)
        .idem("checkout-7")
        .json(pay("31.00 EUR"))
        .send()
        .await
        .expect_error(StatusCode::CONFLICT, "idempotency_key_reused");
    assert_eq!(
        w.available(&w.alice_eur).await,
        9_100 - 2_500 - 3_000,
        "one hold per session"
    );

    // Six sessions per address per window here: the address verification and the two
    // secured payments used three; three more logins fit, the next is refused.
    for _ in 0..3 {
        w.open(&w.alice, json!({"user": "alice", "application": "login"}))
            .await
            .expect(StatusCode::CREATED);
    }
    w.open(&w.alice, json!({"user": "alice", "application": "login"}))
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    w.advance(601);
    w.open(&w.alice, json!({"user": "alice", "application": "login"}))
        .await
        .expect(StatusCode::CREATED);
}

#[tokio::test]
async fn the_code_and_the_transaction_travel_over_real_smtp() {
    let (port, mail) = tally_testkit::smtp_sink();
    let mut smtp = tally_channels::SmtpConfig::new("127.0.0.1", "Tally <noreply@node.test>");
    smtp.port = Some(port);
    smtp.tls = tally_channels::SmtpTls::None;
    let channels = tally_channels::ChannelSet::new().with(Arc::new(
        tally_channels::SmtpChannel::new(smtp).expect("smtp channel"),
    ));
    let w = World::new().await;
    let deliver = || async {
        tally_service::workers::deliver_due(&w.api.node, &channels, Timestamp::now())
            .await
            .expect("delivery pass")
    };
    let receive = || {
        let raw = mail
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("a mail arrives");
        // Quoted-printable soft line breaks would split long lines; undo them for reading.
        raw.replace("=\r\n", "")
    };

    let carol = w.api.issue_key("customer", "carol").await;
    let carol_eur = w.api.open(&carol, json!({"currency": "EUR"})).await;
    w.api
        .post("/v1/transfers")
        .key(&w.api.admin)
        .idem("fund-c")
        .json(json!({"debit_account": w.settlement, "credit_account": carol_eur, "amount": "50.00 EUR"}))
        .send()
        .await
        .expect(StatusCode::CREATED);

    // The address is verified by the same protocol, its code sent by e-mail.
    let r = w
        .api
        .post("/v1/subscribers/carol/addresses")
        .key(&carol)
        .json(json!({"channel": "email", "address": "carol@example.com"}))
        .send()
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(
        r.str("/address"),
        "c***@example.com",
        "addresses are shown masked"
    );
    let session = r.str("/session").to_string();
    assert_eq!(deliver().await, 1);
    let text = receive();
    assert!(text.contains("carol@example.com"), "{text}");
    w.verify(&session, &code_in(&text), None)
        .await
        .expect(StatusCode::OK);
    let shown = w
        .api
        .get(&format!("/v1/oob/sessions/{session}"))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(shown.str("/delivery"), "sent");

    // A payment: the mail shows amount, payee and goods in clear with the code.
    let r = w
        .open(
            &w.shop,
            json!({"user": "carol", "application": "payment", "payer_account": carol_eur,
                   "merchant_account": w.shop_eur, "amount": "7.25 EUR", "description": "Green teapot"}),
        )
        .await
        .expect(StatusCode::CREATED);
    let session = r.str("/session/session").to_string();
    let purpose = r.body["session"]["purpose"].clone();
    assert_eq!(deliver().await, 1);
    let text = receive();
    assert!(text.contains("Subject: Confirm 7.25 EUR to shop"), "{text}");
    assert!(
        text.contains("7.25 EUR to shop") && text.contains("Green teapot"),
        "{text}"
    );
    assert_eq!(w.balance(&carol_eur).await, 5_000);
    // The database never holds the live code: the stored text has a placeholder, filled in
    // at delivery from the session and the node's key.
    let stored = w
        .api
        .node
        .store()
        .message(&format!(":oob:{session}:code"))
        .await
        .expect("read")
        .expect("stored message");
    assert!(
        stored.message.body.contains("{{code}}") && !stored.message.body.contains(&code_in(&text))
    );
    w.verify(&session, &code_in(&text), Some(purpose))
        .await
        .expect(StatusCode::OK);
    assert_eq!(w.balance(&carol_eur).await, 5_000 - 725);
    assert_eq!(w.balance(&w.shop_eur).await, 725);
    w.audit_passes().await;
}

#[tokio::test]
async fn a_failing_channel_is_shown_retried_and_authorises_nothing() {
    // An SMTP relay that refuses connections: a port we bound and closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut smtp = tally_channels::SmtpConfig::new("127.0.0.1", "Tally <noreply@node.test>");
    smtp.port = Some(port);
    smtp.tls = tally_channels::SmtpTls::None;
    smtp.timeout_ms = 2_000;
    let channels = tally_channels::ChannelSet::new().with(Arc::new(
        tally_channels::SmtpChannel::new(smtp).expect("smtp channel"),
    ));
    let w = World::new().await;
    let r = w
        .api
        .post("/v1/subscribers/dave/addresses")
        .key(&w.api.admin)
        .json(json!({"channel": "email", "address": "dave@example.com"}))
        .send()
        .await
        .expect(StatusCode::CREATED);
    let session = r.str("/session").to_string();
    let delivered = tally_service::workers::deliver_due(&w.api.node, &channels, Timestamp::now())
        .await
        .expect("delivery pass");
    assert_eq!(delivered, 0);
    // The user (channel A) is told the code has not gone out, and why.
    let shown = w
        .api
        .get(&format!("/v1/oob/sessions/{session}"))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(shown.str("/delivery"), "pending", "{}", shown.body);
    assert!(!shown.str("/delivery_error").is_empty());
    // Guessing authorises nothing; the message stays queued for the next attempt.
    w.verify(&session, "12345678", None)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "wrong_code");
    let stored = w
        .api
        .node
        .store()
        .message(&format!(":oob:{session}:code"))
        .await
        .expect("read")
        .expect("queued");
    assert_eq!((stored.state.as_str(), stored.attempts), ("pending", 1));
    let r = w
        .api
        .get("/v1/subscribers/dave/addresses")
        .key(&w.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert!(r.body[0]["verified_at"].is_null(), "{}", r.body);
    assert_eq!(w.balances().await, [10_000, 2_000, 0]);
}

#[tokio::test]
async fn the_address_can_come_from_a_certificate_instead_of_the_directory() {
    let w = World::new().await;
    let r = w
        .api
        .post("/v1/subscribers/erin/certificate")
        .key(&w.api.admin)
        .json(json!({"channel": "dev", "address": "erin-phone", "days": 30}))
        .send()
        .await
        .expect(StatusCode::CREATED);
    let pem = r.str("/certificate").to_string();
    assert!(r.str("/private_key").contains("PRIVATE KEY"));
    let cert = tally_kernel::crypto::Certificate::from_pem(&pem).expect("pem");
    assert_eq!(cert.uri_names(), ["tally-dev:erin-phone"]);
    let erin = w.api.issue_key("customer", "erin").await;
    // erin is not in the directory: without the certificate there is nowhere to send a code.
    w.open(&erin, json!({"user": "erin", "application": "login"}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let r = w
        .open(
            &erin,
            json!({"user": "erin", "application": "login", "certificate": pem}),
        )
        .await
        .expect(StatusCode::CREATED);
    let view = r.body["session"].clone();
    assert_eq!(
        (view["channel"].as_str(), view["address"].as_str()),
        (Some("dev"), Some("erin-phone"))
    );
    let s = r.str("/session/session").to_string();
    let code = w.code_for("erin-phone", &s).await;
    w.verify(&s, &code, None).await.expect(StatusCode::OK);
    // A certificate for someone else, or not from this node's CA, is refused.
    w.open(
        &w.alice,
        json!({"user": "alice", "application": "login", "certificate": pem}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let other =
        tally_kernel::crypto::CertificateAuthority::generate("Another CA", Timestamp::now(), 10)
            .expect("ca");
    let foreign = other
        .issue_with_uris(
            "erin",
            &tally_kernel::crypto::SigningKey::generate().verifying_key(),
            "customer",
            Timestamp::now(),
            Timestamp::now().plus_seconds(86_400),
            &["tally-dev:mallory"],
        )
        .expect("foreign cert");
    w.open(
        &erin,
        json!({"user": "erin", "application": "login", "certificate": foreign.to_pem()}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
}
