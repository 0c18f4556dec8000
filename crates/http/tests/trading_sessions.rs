//! Trading sessions' initiation across two operators (issue [7] step 3, SPEC M2/M3): the
//! customer's operator (node A) holds the deposit and sends the initiation; the merchant's
//! operator (node B) informs the merchant, whose answer (or agent mode) goes back with the
//! rate. Refusals and silence release the deposit; the deposit never goes beyond what the
//! customer may spend, across concurrent sessions; B learns only a pseudonym. A runs on SQLite
//! or PostgreSQL, B on SQLite.

mod common;

use axum::http::StatusCode;
use common::peers::{carry, node_id, pair};
use common::world::World;
use serde_json::{Value, json};
use tally_service::NodeConfig;

async fn open(a: &World, key: &str, idem: &str, body: Value) -> common::Reply {
    a.api
        .post("/v1/trading-sessions")
        .key(key)
        .idem(idem)
        .json(body)
        .send()
        .await
}

fn order(account: &str, deposit: &str, merchant: &str) -> Value {
    json!({"account": account, "deposit": deposit, "merchant": merchant, "operator": "bank-b"})
}

/// Node A on a fresh PostgreSQL database (`None`: skipped, as the test kit says).
async fn world_on_postgres() -> Option<World> {
    let url = tally_testkit::shared_test_database_url()?;
    Some(
        World::with(|c| NodeConfig {
            database_url: Some(url),
            ..c
        })
        .await,
    )
}

async fn session(w: &World, key: &str, id: &str) -> common::Reply {
    w.api
        .get(&format!("/v1/trading-sessions/{id}"))
        .key(key)
        .send()
        .await
}

async fn walk(a: World, b: World) {
    pair(&a.api, &b.api).await;
    // B's merchants: `shop` acks by hand, `kiosk` (the same account) in agent mode.
    let r = b
        .api
        .call("PUT", "/v1/session-merchants/shop")
        .key(&b.shop)
        .json(json!({"account": b.shop_eur}))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (r.str("/currency"), r.body["auto_ack"].as_bool()),
        ("EUR", Some(false))
    );
    b.api
        .call("PUT", "/v1/session-merchants/kiosk")
        .key(&b.shop)
        .json(json!({"account": b.shop_eur, "auto_ack": true}))
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    b.api
        .call("PUT", "/v1/session-merchants/kiosk")
        .key(&b.api.admin)
        .json(json!({"account": b.shop_eur, "auto_ack": true}))
        .send()
        .await
        .expect(StatusCode::OK);

    // Alice (100.00 EUR at A) opens a session of 30.00 EUR with `shop` at B: held.
    let r = open(&a, &a.alice, "s1", order(&a.alice_eur, "30.00 EUR", "shop"))
        .await
        .expect(StatusCode::CREATED);
    let s1 = r.str("/session").to_string();
    assert!(s1.starts_with(&format!("{}.", node_id(&a.api))), "{s1}");
    assert_eq!((r.str("/role"), r.str("/state")), ("am", "held"));
    assert_eq!(r.str("/peer"), node_id(&b.api).to_string());
    assert_eq!(a.available(&a.alice_eur).await, 7000);
    // The same request again is the same session, held once.
    let again = open(&a, &a.alice, "s1", order(&a.alice_eur, "30.00 EUR", "shop"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(again.str("/session"), s1);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(a.available(&a.alice_eur).await, 7000);
    // Nobody else sees it; bob cannot hold alice's account.
    session(&a, &a.bob, &s1)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    open(&a, &a.bob, "b1", order(&a.alice_eur, "1.00 EUR", "shop"))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");

    // B takes the initiation: the merchant is informed, with a pseudonym only.
    let taken = carry(&a.api, &b.api).await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].status, StatusCode::OK, "{}", taken[0].body);
    let r = session(&b, &b.shop, &s1).await.expect(StatusCode::OK);
    assert_eq!((r.str("/role"), r.str("/state")), ("mta", "informed"));
    assert_eq!(
        (r.str("/merchant_deposit"), r.str("/rate")),
        ("30.00 EUR", "1/1")
    );
    let pseudonym = r.str("/customer").to_string();
    assert!(pseudonym.starts_with("c-"), "{pseudonym}");
    let listed = b
        .api
        .get("/v1/trading-sessions")
        .key(&b.shop)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1));
    let inbox = b
        .api
        .node
        .store()
        .trade("mta", &s1)
        .await
        .expect("read")
        .expect("row");
    for secret in ["alice", a.alice_eur.as_str()] {
        assert!(
            !inbox.machine.contains(secret),
            "{secret} reached B: {}",
            inbox.machine
        );
        assert!(!taken[0].raw.is_empty());
    }

    // The merchant acks; A opens with B's rate. A second answer is refused.
    let r = b
        .api
        .post(&format!("/v1/trading-sessions/{s1}/answer"))
        .key(&b.shop)
        .json(json!({"accept": true}))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/state"), "open");
    b.api
        .post(&format!("/v1/trading-sessions/{s1}/answer"))
        .key(&b.shop)
        .json(json!({"accept": false}))
        .send()
        .await
        .expect_error(StatusCode::CONFLICT, "session_closed");
    let acks = carry(&b.api, &a.api).await;
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].status, StatusCode::OK, "{}", acks[0].body);
    let r = session(&a, &a.alice, &s1).await.expect(StatusCode::OK);
    assert_eq!((r.str("/state"), r.str("/rate")), ("open", "1/1"));
    assert_eq!(r.str("/customer"), pseudonym);
    assert_eq!(a.available(&a.alice_eur).await, 7000);

    // No double spending: 70.00 EUR is all alice may still hold, across sessions.
    open(&a, &a.alice, "s2", order(&a.alice_eur, "70.01 EUR", "shop"))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    open(&a, &a.alice, "s2", order(&a.alice_eur, "5.00 USD", "shop"))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let r = open(
        &a,
        &a.alice,
        "s3",
        json!({"account": a.alice_eur, "deposit": "1.00 EUR", "merchant": "shop", "operator": "bank-z"}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(r.str("/error/details/field"), "operator");
    assert_eq!(a.available(&a.alice_eur).await, 7000);

    // An unknown merchant: B refuses, A releases the deposit.
    let s4 = open(
        &a,
        &a.alice,
        "s4",
        order(&a.alice_eur, "10.00 EUR", "nobody"),
    )
    .await
    .expect(StatusCode::CREATED)
    .str("/session")
    .to_string();
    assert_eq!(a.available(&a.alice_eur).await, 6000);
    carry(&a.api, &b.api).await;
    let refused = session(&b, &b.api.admin, &s4).await.expect(StatusCode::OK);
    assert_eq!(
        (refused.str("/state"), refused.str("/refusal")),
        ("refused", "unknown_merchant")
    );
    let answers = carry(&b.api, &a.api).await;
    assert_eq!(answers[0].status, StatusCode::OK, "{}", answers[0].body);
    let r = session(&a, &a.alice, &s4).await.expect(StatusCode::OK);
    assert_eq!(r.str("/state"), "aborted");
    assert_eq!(a.available(&a.alice_eur).await, 7000);

    // Agent mode: B acks at once.
    let s5 = open(&a, &a.alice, "s5", order(&a.alice_eur, "2.00 EUR", "kiosk"))
        .await
        .expect(StatusCode::CREATED)
        .str("/session")
        .to_string();
    carry(&a.api, &b.api).await;
    carry(&b.api, &a.api).await;
    let r = session(&a, &a.alice, &s5).await.expect(StatusCode::OK);
    assert_eq!(r.str("/state"), "open");
    assert_eq!(a.available(&a.alice_eur).await, 6800);

    // Silence: B never hears of s6; after the wait A releases the deposit.
    let s6 = open(&a, &a.alice, "s6", order(&a.alice_eur, "3.00 EUR", "shop"))
        .await
        .expect(StatusCode::CREATED)
        .str("/session")
        .to_string();
    assert_eq!(a.available(&a.alice_eur).await, 6500);
    assert_eq!(
        a.api
            .node
            .sessions()
            .sweep_timeouts(100)
            .await
            .expect("sweep"),
        0
    );
    a.advance(121);
    assert_eq!(
        a.api
            .node
            .sessions()
            .sweep_timeouts(100)
            .await
            .expect("sweep"),
        1
    );
    assert_eq!(session(&a, &a.alice, &s6).await.str("/state"), "aborted");
    assert_eq!(a.available(&a.alice_eur).await, 6800);
    // Its initiation arrives late, with A's word that it gave up, in either order: B ends
    // its side too (`abandoned`), so B's merchant can no longer take it, and nothing goes
    // back. (Here the word comes first.)
    let mut sealed = common::peers::sealed_outbox(&a.api).await;
    sealed.sort_by_key(|(_, m)| !String::from_utf8_lossy(m).contains("session_aborted"));
    for (_, m) in sealed {
        common::peers::post_sealed(&b.api, m)
            .await
            .expect(StatusCode::OK);
    }
    let r = session(&b, &b.shop, &s6).await.expect(StatusCode::OK);
    assert_eq!(
        (r.str("/state"), r.str("/refusal")),
        ("refused", "abandoned")
    );
    b.api
        .post(&format!("/v1/trading-sessions/{s6}/answer"))
        .key(&b.shop)
        .json(json!({"accept": true}))
        .send()
        .await
        .expect_error(StatusCode::CONFLICT, "session_closed");
    assert!(carry(&b.api, &a.api).await.is_empty());
    assert_eq!(a.available(&a.alice_eur).await, 6800);
    // An initiation that reaches B only after A stopped waiting is refused at once.
    let s7 = open(&a, &a.alice, "s7", order(&a.alice_eur, "1.00 EUR", "kiosk"))
        .await
        .expect(StatusCode::CREATED)
        .str("/session")
        .to_string();
    b.advance(121 + 121);
    let sealed = common::peers::sealed_outbox(&a.api).await;
    for (_, m) in sealed {
        common::peers::post_sealed(&b.api, m)
            .await
            .expect(StatusCode::OK);
    }
    let r = session(&b, &b.api.admin, &s7).await.expect(StatusCode::OK);
    assert_eq!(
        (r.str("/state"), r.str("/refusal")),
        ("refused", "unanswered")
    );

    a.audit_passes().await;
    b.audit_passes().await;
}

#[tokio::test]
async fn sessions_open_across_two_operators() {
    walk(World::new().await, World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_open_across_two_operators_on_postgres() {
    let Some(a) = world_on_postgres().await else {
        return;
    };
    walk(a, World::new().await).await;
}

/// A session's conclusion (step 5, M5/M8): the records both parties sign, checked under their
/// keys; agreeing records clear the session at both nodes (the merchant paid from what the
/// customer's operator owes, the customer's hold posted for what was spent), with billing
/// records and the operators' clearing report; disagreeing ones are disputed and pay nothing.
async fn post(w: &World, key: &str, session: &str, signed: Vec<u8>) -> common::Reply {
    w.api
        .post(&format!("/v1/trading-sessions/{session}/record"))
        .key(key)
        .raw("application/json", signed)
        .send()
        .await
}

/// B's merchant `kiosk` in agent mode with its agent's key, and a customer's session key.
struct Kiosk {
    kiosk: String,
    agent: tally_kernel::crypto::SigningKey,
    customer: tally_kernel::crypto::SigningKey,
}

impl Kiosk {
    async fn new(a: &World, b: &World) -> Kiosk {
        use tally_kernel::crypto::SigningKey;
        pair(&a.api, &b.api).await;
        let kiosk = b.api.issue_key("merchant", "kiosk").await;
        b.api
            .call("PUT", "/v1/session-merchants/kiosk")
            .key(&b.api.admin)
            .json(json!({"account": b.shop_eur, "auto_ack": true}))
            .send()
            .await
            .expect(StatusCode::OK);
        let agent = SigningKey::from_seed(&[21; 32]);
        b.api
            .call("PUT", "/v1/session-merchants/kiosk/agent-key")
            .key(&kiosk)
            .json(json!({"public_key": agent.verifying_key().to_hex()}))
            .send()
            .await
            .expect(StatusCode::NO_CONTENT);
        Kiosk {
            kiosk,
            agent,
            customer: SigningKey::from_seed(&[22; 32]),
        }
    }

    /// Alice opens a session at the kiosk with the customer's key; its id.
    async fn open(&self, a: &World, idem: &str, deposit: &str) -> String {
        let mut body = order(&a.alice_eur, deposit, "kiosk");
        body["customer_key"] = json!(self.customer.verifying_key().to_hex());
        a.api
            .post("/v1/trading-sessions")
            .key(&a.alice)
            .idem(idem)
            .json(body)
            .send()
            .await
            .expect(StatusCode::CREATED)
            .str("/session")
            .to_string()
    }
}

/// A signed record of `session`'s first transaction: two purchases, `minor` EUR cents in all.
fn record(
    session: &str,
    side: tally_proto::session::conclusion::Side,
    minor: i64,
    list: &str,
    key: &tally_kernel::crypto::SigningKey,
) -> Vec<u8> {
    record_of(&format!("{session}.1"), side, minor, list, key)
}

/// A signed record of `transaction`: two purchases, `minor` EUR cents in all.
fn record_of(
    transaction: &str,
    side: tally_proto::session::conclusion::Side,
    minor: i64,
    list: &str,
    key: &tally_kernel::crypto::SigningKey,
) -> Vec<u8> {
    let transaction = transaction.parse().expect("transaction");
    tally_proto::session::conclusion::Record {
        transaction,
        side,
        total: tally_kernel::Amount::new(
            minor,
            tally_kernel::Currency::from_code("EUR").expect("EUR"),
        ),
        count: 2,
        list: list.repeat(64),
    }
    .sign(key)
    .expect("sign")
}

async fn conclude(a: World, b: World) {
    use tally_proto::session::conclusion::Side;
    let fixture = Kiosk::new(&a, &b).await;
    let (kiosk, agent, customer) = (&fixture.kiosk, &fixture.agent, &fixture.customer);
    let open_with_key = |idem: &'static str, deposit: &'static str| {
        let (a, fixture) = (&a, &fixture);
        async move { fixture.open(a, idem, deposit).await }
    };
    let s = open_with_key("c1", "10.00 EUR").await;
    carry(&a.api, &b.api).await;
    carry(&b.api, &a.api).await;
    assert_eq!(session(&a, &a.alice, &s).await.str("/state"), "open");
    assert_eq!(a.available(&a.alice_eur).await, 9000);
    // A record signed by another key, or by the wrong side, is refused and changes nothing.
    let r = post(
        &a,
        &a.alice,
        &s,
        record(&s, Side::Customer, 400, "a", agent),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(r.str("/error/details/field"), "record");
    post(&b, kiosk, &s, record(&s, Side::Customer, 400, "a", agent))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    post(
        &a,
        &a.bob,
        &s,
        record(&s, Side::Customer, 400, "a", customer),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    // Both records, each where it belongs: the merchant's at B, the customer's at A.
    let r = post(&b, kiosk, &s, record(&s, Side::Merchant, 400, "a", agent))
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/state"), "concluding");
    let r = post(
        &a,
        &a.alice,
        &s,
        record(&s, Side::Customer, 400, "a", customer),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(r.str("/state"), "concluding");
    let shop_before = b.balance(&b.shop_eur).await;
    for reply in carry(&a.api, &b.api).await {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    // The clearing's first phase: B sends the clearing information and pays nothing yet.
    let r = session(&b, &b.api.admin, &s).await.expect(StatusCode::OK);
    assert_eq!((r.str("/state"), r.str("/total")), ("clearing", "4.00 EUR"));
    assert_eq!(b.balance(&b.shop_eur).await, shop_before);
    for reply in carry(&b.api, &a.api).await {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let r = session(&a, &a.alice, &s).await.expect(StatusCode::OK);
    assert_eq!(
        (r.str("/state"), r.str("/customer_total")),
        ("cleared", "4.00 EUR")
    );
    assert_eq!(a.balance(&a.alice_eur).await, 9600);
    assert_eq!(a.available(&a.alice_eur).await, 9600);
    // A posted it and says so: then B pays the merchant.
    for reply in carry(&a.api, &b.api).await {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let r = session(&b, &b.api.admin, &s).await.expect(StatusCode::OK);
    assert_eq!((r.str("/state"), r.str("/total")), ("cleared", "4.00 EUR"));
    assert_eq!(b.balance(&b.shop_eur).await, shop_before + 400);
    // Billing records and the operators' report.
    let bills = a
        .api
        .get("/v1/billing/records")
        .key(&a.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        bills.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        bills.body
    );
    assert_eq!(
        (
            bills.body[0]["kind"].as_str(),
            bills.body[0]["amount_minor"].as_i64()
        ),
        (Some("withdrawal"), Some(400))
    );
    let csv = b
        .api
        .get("/v1/billing/records?format=csv")
        .key(&b.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    let text = String::from_utf8(csv.raw.clone()).expect("csv");
    assert!(text.contains(&format!(",deposit,{s},kiosk,")), "{text}");
    let owed = a
        .api
        .get("/v1/clearing")
        .key(&a.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (
            owed.body[0]["owed_to_minor"].as_i64(),
            owed.body[0]["net_minor"].as_i64()
        ),
        (Some(400), Some(-400))
    );
    let owing = b
        .api
        .get("/v1/clearing")
        .key(&b.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(owing.body[0]["owed_by_minor"].as_i64(), Some(400));
    a.api
        .get("/v1/clearing")
        .key(&a.alice)
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");

    // Records that disagree: disputed at both nodes, nothing paid, the deposit still held.
    let d = open_with_key("c2", "5.00 EUR").await;
    carry(&a.api, &b.api).await;
    carry(&b.api, &a.api).await;
    post(&b, kiosk, &d, record(&d, Side::Merchant, 300, "b", agent))
        .await
        .expect(StatusCode::OK);
    post(
        &a,
        &a.alice,
        &d,
        record(&d, Side::Customer, 200, "b", customer),
    )
    .await
    .expect(StatusCode::OK);
    carry(&a.api, &b.api).await;
    carry(&b.api, &a.api).await;
    assert_eq!(
        session(&b, &b.api.admin, &d).await.str("/state"),
        "disputed"
    );
    assert_eq!(session(&a, &a.alice, &d).await.str("/state"), "disputed");
    assert_eq!(b.balance(&b.shop_eur).await, shop_before + 400);
    assert_eq!(a.available(&a.alice_eur).await, 9100);
    a.audit_passes().await;
    b.audit_passes().await;

    // The merchant's operator settles it at 2.50: only the operator, within the deposit,
    // once; both nodes clear, the merchant is paid 2.50, the customer's 5.00 hold posts
    // 2.50 and releases the rest.
    async fn verdict(w: &World, key: &str, session: &str, total: i64) -> common::Reply {
        w.api
            .post(&format!("/v1/trading-sessions/{session}/verdict"))
            .key(key)
            .json(json!({ "total_minor": total, "currency": "EUR" }))
            .send()
            .await
    }
    verdict(&b, kiosk, &d, 250)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    verdict(&b, &b.api.admin, &d, 501)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let r = b
        .api
        .post(&format!("/v1/trading-sessions/{d}/verdict"))
        .key(&b.api.admin)
        .json(json!({ "total_minor": 250, "currency": "USD" }))
        .send()
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(r.str("/error/details/field"), "currency");
    // Not disputed (the first session cleared): refused; an unknown session: not found.
    b.api
        .post(&format!("/v1/trading-sessions/{s}/verdict"))
        .key(&b.api.admin)
        .json(json!({ "total_minor": 1, "currency": "EUR" }))
        .send()
        .await
        .expect_error(StatusCode::CONFLICT, "session_closed");
    b.api
        .post(&format!("/v1/trading-sessions/{d}9/verdict"))
        .key(&b.api.admin)
        .json(json!({ "total_minor": 1, "currency": "EUR" }))
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let settled = verdict(&b, &b.api.admin, &d, 250)
        .await
        .expect(StatusCode::OK);
    assert_eq!(settled.str("/state"), "clearing");
    verdict(&b, &b.api.admin, &d, 250)
        .await
        .expect(StatusCode::OK);
    verdict(&b, &b.api.admin, &d, 240)
        .await
        .expect_error(StatusCode::CONFLICT, "session_closed");
    carry(&b.api, &a.api).await;
    assert_eq!(session(&a, &a.alice, &d).await.str("/state"), "cleared");
    assert_eq!(
        b.balance(&b.shop_eur).await,
        shop_before + 400,
        "paid once A posted"
    );
    carry(&a.api, &b.api).await;
    assert_eq!(session(&b, kiosk, &d).await.str("/state"), "cleared");
    assert_eq!(b.balance(&b.shop_eur).await, shop_before + 650);
    assert_eq!(a.available(&a.alice_eur).await, 9350);
    assert_eq!(a.balance(&a.alice_eur).await, 9350);
    a.audit_passes().await;
    b.audit_passes().await;
}

/// A session's next transaction (M4): once the first is cleared (its deposit used up), the
/// customer holds a new deposit in the same session; the merchant's operator acks it again,
/// and each transaction clears on its own records, billed on its own.
async fn next_transactions(a: World, b: World) {
    use tally_proto::session::conclusion::Side;
    let fixture = Kiosk::new(&a, &b).await;
    let (kiosk, agent, customer) = (&fixture.kiosk, &fixture.agent, &fixture.customer);
    async fn next(w: &World, key: &str, session: &str, seq: u64, deposit: &str) -> common::Reply {
        w.api
            .post(&format!("/v1/trading-sessions/{session}/transactions"))
            .key(key)
            .json(json!({"transaction": format!("{session}.{seq}"), "deposit": deposit}))
            .send()
            .await
    }
    let s = fixture.open(&a, "n1", "4.00 EUR").await;
    carry(&a.api, &b.api).await;
    carry(&b.api, &a.api).await;
    assert_eq!(session(&a, &a.alice, &s).await.str("/state"), "open");
    // Not while the first transaction is open.
    next(&a, &a.alice, &s, 2, "3.00 EUR")
        .await
        .expect_error(StatusCode::CONFLICT, "session_closed");
    // The first transaction's deposit is used up: both records say 4.00, it clears.
    let first = format!("{s}.1");
    // Both records of `transaction` (`minor` cents, list `list`), each where it belongs, and
    // the messages between the nodes.
    let agree = |transaction: String, minor: i64, list: &'static str| {
        let (a, b, s) = (&a, &b, &s);
        async move {
            let merchant = record_of(&transaction, Side::Merchant, minor, list, agent);
            post(b, kiosk, s, merchant).await.expect(StatusCode::OK);
            let mine = record_of(&transaction, Side::Customer, minor, list, customer);
            post(a, &a.alice, s, mine).await.expect(StatusCode::OK);
            carry(&a.api, &b.api).await;
            carry(&b.api, &a.api).await;
        }
    };
    agree(first.clone(), 400, "a").await;
    assert_eq!(session(&a, &a.alice, &s).await.str("/state"), "cleared");
    assert_eq!(a.available(&a.alice_eur).await, 9600);
    // A's word that it posted is still on its way: B waits for it to pay (the next
    // transaction's initiation below goes with it).
    assert_eq!(session(&b, kiosk, &s).await.str("/state"), "clearing");
    // Not another number, another currency, or another customer's session.
    next(&a, &a.alice, &s, 3, "3.00 EUR")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    next(&a, &a.alice, &s, 2, "3.00 USD")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    next(&a, &a.bob, &s, 2, "3.00 EUR")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(a.available(&a.alice_eur).await, 9600);
    // The next one: a new hold; the same request again is the same step.
    let second = format!("{s}.2");
    let r = next(&a, &a.alice, &s, 2, "3.00 EUR")
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(
        (r.str("/state"), r.str("/transaction")),
        ("held", second.as_str())
    );
    next(&a, &a.alice, &s, 2, "3.00 EUR")
        .await
        .expect(StatusCode::OK);
    next(&a, &a.alice, &s, 2, "2.00 EUR")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(a.available(&a.alice_eur).await, 9300);
    carry(&a.api, &b.api).await;
    carry(&b.api, &a.api).await;
    let r = session(&a, &a.alice, &s).await.expect(StatusCode::OK);
    assert_eq!(
        (r.str("/state"), r.str("/transaction")),
        ("open", second.as_str())
    );
    let r = session(&b, kiosk, &s).await.expect(StatusCode::OK);
    assert_eq!(
        (r.str("/state"), r.str("/transaction")),
        ("open", second.as_str())
    );
    // A record of the first transaction is not one of the second.
    post(
        &b,
        kiosk,
        &s,
        record_of(&first, Side::Merchant, 400, "a", agent),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    // The second clears on its own records: 2.50 of its 3.00.
    let shop_before = b.balance(&b.shop_eur).await;
    agree(second.clone(), 250, "c").await;
    carry(&a.api, &b.api).await;
    let r = session(&a, &a.alice, &s).await.expect(StatusCode::OK);
    assert_eq!(
        (r.str("/state"), r.str("/customer_total")),
        ("cleared", "2.50 EUR")
    );
    assert_eq!(b.balance(&b.shop_eur).await, shop_before + 250);
    assert_eq!(a.balance(&a.alice_eur).await, 9350);
    assert_eq!(a.available(&a.alice_eur).await, 9350);
    // Each transaction billed on its own.
    let bills = a
        .api
        .get("/v1/billing/records")
        .key(&a.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    let mut billed: Vec<(String, i64)> = bills
        .body
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            (
                r["session"].as_str().unwrap_or("").to_string(),
                r["amount_minor"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    billed.sort();
    assert_eq!(billed, vec![(s.clone(), 400), (second.clone(), 250)]);
    let owed = a
        .api
        .get("/v1/clearing")
        .key(&a.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(owed.body[0]["owed_to_minor"].as_i64(), Some(650));
    // Each transaction's receipt, signed by B once it paid, at both nodes (A's came as a
    // message); each checks alone.
    carry(&b.api, &a.api).await;
    let b_id = node_id(&b.api);
    for (w, key) in [(&a, &a.alice), (&b, kiosk)] {
        let r = w
            .api
            .get(&format!("/v1/trading-sessions/{s}/receipts"))
            .key(key)
            .send()
            .await
            .expect(StatusCode::OK);
        let got: Vec<(String, i64)> = r
            .body
            .as_array()
            .expect("receipts")
            .iter()
            .map(|v| {
                let text = v["receipt"].as_str().expect("receipt");
                let receipt = tally_proto::session::receipt::SessionReceipt::open(text)
                    .expect("a receipt that checks");
                assert_eq!(receipt.issuer, b_id);
                assert_eq!(v["transaction"], receipt.clearing.transaction.to_string());
                assert!(receipt.customer.is_some() && receipt.merchant.is_some());
                (
                    receipt.clearing.transaction.to_string(),
                    receipt.clearing.customer_total.minor,
                )
            })
            .collect();
        assert_eq!(got, vec![(first.clone(), 400), (second.clone(), 250)]);
    }
    a.api
        .get(&format!("/v1/trading-sessions/{s}/receipts"))
        .key(&a.bob)
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    a.audit_passes().await;
    b.audit_passes().await;
}

#[tokio::test]
async fn a_session_goes_on_in_its_next_transaction() {
    next_transactions(World::new().await, World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_goes_on_in_its_next_transaction_on_postgres() {
    let Some(a) = world_on_postgres().await else {
        return;
    };
    next_transactions(a, World::new().await).await;
}

#[tokio::test]
async fn sessions_conclude_and_clear_across_two_operators() {
    conclude(World::new().await, World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_conclude_and_clear_across_two_operators_on_postgres() {
    let Some(a) = world_on_postgres().await else {
        return;
    };
    conclude(a, World::new().await).await;
}

/// Two currencies (M6): a customer paying in EUR at A, a merchant paid in USD at B. B
/// converts the deposit at its own published table; at the conclusion B pays the merchant in
/// USD from what A's operator owes it, A posts the customer's EUR total (converted back,
/// rounded up) and releases the rest; each operator's report is in its own currency. Without
/// a valid table the session is refused (`no_rate`) and the deposit released.
async fn two_currencies(a: World, b: World) {
    use tally_kernel::crypto::SigningKey;
    use tally_proto::session::conclusion::{Record, Side};
    pair(&a.api, &b.api).await;
    let usd_shop = b.api.issue_key("merchant", "usd-shop").await;
    let usd_account = b.api.open(&usd_shop, json!({"currency": "USD"})).await;
    b.api
        .call("PUT", "/v1/session-merchants/usd-shop")
        .key(&usd_shop)
        .json(json!({"account": usd_account, "auto_ack": true}))
        .send()
        .await
        .expect(StatusCode::OK);
    let agent = SigningKey::from_seed(&[31; 32]);
    b.api
        .call("PUT", "/v1/session-merchants/usd-shop/agent-key")
        .key(&usd_shop)
        .json(json!({"public_key": agent.verifying_key().to_hex()}))
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);
    let customer = SigningKey::from_seed(&[32; 32]);
    let open = |idem: &'static str| {
        let mut body = order(&a.alice_eur, "10.00 EUR", "usd-shop");
        body["customer_key"] = json!(customer.verifying_key().to_hex());
        let (api, key) = (&a.api, a.alice.clone());
        async move {
            api.post("/v1/trading-sessions")
                .key(&key)
                .idem(idem)
                .json(body)
                .send()
                .await
                .expect(StatusCode::CREATED)
                .str("/session")
                .to_string()
        }
    };
    // No table yet: refused, the deposit released.
    let s0 = open("x0").await;
    carry(&a.api, &b.api).await;
    carry(&b.api, &a.api).await;
    assert_eq!(session(&a, &a.alice, &s0).await.str("/state"), "aborted");
    assert_eq!(
        session(&b, &b.api.admin, &s0).await.str("/refusal"),
        "no_rate"
    );
    assert_eq!(a.available(&a.alice_eur).await, 10_000);
    // B publishes EUR → USD 1.0842 for an hour; only the operator may.
    b.api
        .call("PUT", "/v1/fx/EUR/USD")
        .key(&usd_shop)
        .json(json!({"rate": "1.0842", "valid_for_s": 3600}))
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let t = b
        .api
        .call("PUT", "/v1/fx/EUR/USD")
        .key(&b.api.admin)
        .json(json!({"rate": "1.0842", "valid_for_s": 3600}))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (t.i64("/numerator"), t.i64("/denominator")),
        (1_084_200, 1_000_000)
    );
    let tables = b
        .api
        .get("/v1/fx")
        .key(&usd_shop)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(tables.body.as_array().map(Vec::len), Some(1));
    let s = open("x1").await;
    carry(&a.api, &b.api).await;
    carry(&b.api, &a.api).await;
    let r = session(&a, &a.alice, &s).await.expect(StatusCode::OK);
    assert_eq!(
        (r.str("/state"), r.str("/merchant_deposit"), r.str("/rate")),
        ("open", "10.84 USD", "1084200/1000000")
    );
    // 5.42 USD bought: the customer pays 5.00 EUR (499.9… rounded up), the rest comes back.
    let record = |side: Side, key: &SigningKey| {
        Record {
            transaction: format!("{s}.1").parse().expect("transaction"),
            side,
            total: tally_kernel::Amount::new(
                542,
                tally_kernel::Currency::from_code("USD").expect("USD"),
            ),
            count: 4,
            list: "c".repeat(64),
        }
        .sign(key)
        .expect("sign")
    };
    post(&b, &usd_shop, &s, record(Side::Merchant, &agent))
        .await
        .expect(StatusCode::OK);
    post(&a, &a.alice, &s, record(Side::Customer, &customer))
        .await
        .expect(StatusCode::OK);
    carry(&a.api, &b.api).await;
    carry(&b.api, &a.api).await;
    let r = session(&a, &a.alice, &s).await.expect(StatusCode::OK);
    assert_eq!(
        (r.str("/state"), r.str("/total"), r.str("/customer_total")),
        ("cleared", "5.42 USD", "5.00 EUR")
    );
    assert_eq!(b.balance(&usd_account).await, 0, "paid once A posted");
    carry(&a.api, &b.api).await;
    assert_eq!(b.balance(&usd_account).await, 542);
    assert_eq!(
        (
            a.balance(&a.alice_eur).await,
            a.available(&a.alice_eur).await
        ),
        (9_500, 9_500)
    );
    let at_a = a
        .api
        .get("/v1/clearing")
        .key(&a.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (
            at_a.body[0]["currency"].as_str(),
            at_a.body[0]["owed_to_minor"].as_i64()
        ),
        (Some("EUR"), Some(500))
    );
    let at_b = b
        .api
        .get("/v1/clearing")
        .key(&b.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (
            at_b.body[0]["currency"].as_str(),
            at_b.body[0]["owed_by_minor"].as_i64()
        ),
        (Some("USD"), Some(542))
    );
    // An hour later B's table has expired: the next session is refused (`no_rate`).
    a.advance(3601);
    b.advance(3601);
    let expired = b
        .api
        .get("/v1/fx")
        .key(&usd_shop)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(expired.body.as_array().map(Vec::len), Some(0));
    let s2 = open("x2").await;
    carry(&a.api, &b.api).await;
    carry(&b.api, &a.api).await;
    assert_eq!(
        session(&b, &b.api.admin, &s2).await.str("/refusal"),
        "no_rate"
    );
    assert_eq!(session(&a, &a.alice, &s2).await.str("/state"), "aborted");
    assert_eq!(a.available(&a.alice_eur).await, 9_500);
    a.audit_passes().await;
    b.audit_passes().await;
}

#[tokio::test]
async fn sessions_in_two_currencies() {
    two_currencies(World::new().await, World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_two_currencies_on_postgres() {
    let Some(a) = world_on_postgres().await else {
        return;
    };
    two_currencies(a, World::new().await).await;
}

/// Sweeps the node's session timers (and its expired holds first, as the node's sweeper
/// does); how many sessions moved.
async fn sweep(w: &World) -> usize {
    let node = &w.api.node;
    node.store()
        .expire_due(node.now(), 100)
        .await
        .expect("expire holds");
    node.sessions().sweep_timeouts(100).await.expect("sweep")
}

/// How a session ends without both records (M4, M5). By B's conclusion deadline (the
/// session's end plus the conclusion window): a session with no record expires and A releases
/// the deposit; the customer's record alone clears (what the customer signed it spent); the
/// merchant's alone is a dispute (its MAC key is the merchant's too, so its record proves
/// nothing). A session whose MTA goes silent expires at A when its hold runs out.
async fn ends(a: World, b: World) {
    use std::sync::atomic::Ordering::SeqCst;
    use tally_proto::session::conclusion::Side;
    // One time at both nodes, moved forward to the later of the two: the deadlines below are
    // to the second, and each world's clock started when it was made (B's a second or more
    // after A's on a slow start, which moved B's deadline sweep a step early).
    let now = a.clock.load(SeqCst).max(b.clock.load(SeqCst));
    for w in [&a, &b] {
        w.clock.store(now, SeqCst);
    }
    let k = Kiosk::new(&a, &b).await;
    let quiet = k.open(&a, "e1", "1.00 EUR").await;
    let customers = k.open(&a, "e2", "2.00 EUR").await;
    let merchants = k.open(&a, "e3", "3.00 EUR").await;
    let silent = k.open(&a, "e4", "4.00 EUR").await;
    let late = k.open(&a, "e5", "0.50 EUR").await;
    carry(&a.api, &b.api).await;
    carry(&b.api, &a.api).await;
    for s in [&quiet, &customers, &merchants, &silent, &late] {
        assert_eq!(session(&a, &a.alice, s).await.str("/state"), "open");
    }
    assert_eq!(a.available(&a.alice_eur).await, 8950);
    for (s, minor) in [(&customers, 150), (&late, 40)] {
        post(
            &a,
            &a.alice,
            s,
            record(s, Side::Customer, minor, "c", &k.customer),
        )
        .await
        .expect(StatusCode::OK);
    }
    post(
        &b,
        &k.kiosk,
        &merchants,
        record(&merchants, Side::Merchant, 250, "d", &k.agent),
    )
    .await
    .expect(StatusCode::OK);
    carry(&a.api, &b.api).await;
    let shop_before = b.balance(&b.shop_eur).await;

    // Nothing moves before the deadline: the session's end (3,600 s) plus B's window (3,600 s).
    for w in [&a, &b] {
        w.advance(7199);
    }
    assert_eq!((sweep(&a).await, sweep(&b).await), (0, 0));
    for w in [&a, &b] {
        w.advance(1);
    }
    assert_eq!((sweep(&a).await, sweep(&b).await), (0, 5));
    let at_b = |s: &str| {
        let (b, s) = (&b, s.to_string());
        async move { session(b, &b.api.admin, &s).await.str("/state").to_string() }
    };
    assert_eq!(at_b(&quiet).await, "expired");
    // Cleared on the customer's record alone: paid once A posted it.
    assert_eq!(at_b(&customers).await, "clearing");
    assert_eq!(at_b(&late).await, "clearing");
    assert_eq!(at_b(&merchants).await, "disputed");
    assert_eq!(at_b(&silent).await, "expired");
    assert_eq!(b.balance(&b.shop_eur).await, shop_before);
    // A record after the deadline is refused and pays nothing.
    post(
        &b,
        &k.kiosk,
        &quiet,
        record(&quiet, Side::Merchant, 50, "e", &k.agent),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "session_closed");
    // B's word reaches A, but for `silent` (lost) and `late` (B cannot reach A: it tries
    // again later).
    let store = b.api.node.store();
    let due = store
        .claim_due(b.api.node.now(), 100, 60)
        .await
        .expect("claim");
    for m in due.into_iter().filter(|m| m.message.kind == "peer") {
        let (_, sealed) = b.api.node.federation().outgoing(&m).await.expect("seal");
        if sealed.contains(&late) {
            store
                .mark_attempt_failed(m.id, b.api.node.now(), "held back", false)
                .await
                .expect("held back");
            continue;
        }
        store.mark_sent(m.id, b.api.node.now()).await.expect("sent");
        if !sealed.contains(&silent) {
            let sealed = sealed.into_bytes();
            let r = common::peers::post_sealed(&a.api, sealed).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
    }
    assert_eq!(session(&a, &a.alice, &quiet).await.str("/state"), "expired");
    let r = session(&a, &a.alice, &customers).await;
    assert_eq!(
        (r.str("/state"), r.str("/customer_total")),
        ("cleared", "1.50 EUR")
    );
    assert_eq!(
        session(&a, &a.alice, &merchants).await.str("/state"),
        "disputed"
    );
    assert_eq!(session(&a, &a.alice, &silent).await.str("/state"), "open");
    // Held still: the disputed 3.00, the silent 4.00 and the late 0.50; spent 1.50.
    assert_eq!(
        a.available(&a.alice_eur).await,
        10_000 - 150 - 300 - 400 - 50
    );
    // A posted `customers` and says so: B pays the merchant.
    carry(&a.api, &b.api).await;
    assert_eq!(at_b(&customers).await, "cleared");
    assert_eq!(b.balance(&b.shop_eur).await, shop_before + 150);
    let bills = b
        .api
        .get("/v1/billing/records")
        .key(&b.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (
            bills.body[0]["kind"].as_str(),
            bills.body[0]["amount_minor"].as_i64()
        ),
        (Some("deposit"), Some(150)),
        "{}",
        bills.body
    );

    // A hears nothing more of `silent` and `late`; when their holds run out (the session's
    // end plus the clearing grace of a day) the sessions expire there and the deposits are
    // spendable again. The dispute's hold runs out too (no verdict came): the ledger's
    // timeout applies.
    for w in [&a, &b] {
        w.advance(86_400 - 3600 - 1);
    }
    assert_eq!(sweep(&a).await, 0);
    for w in [&a, &b] {
        w.advance(1);
    }
    assert_eq!(sweep(&a).await, 2);
    for s in [&silent, &late] {
        assert_eq!(session(&a, &a.alice, s).await.str("/state"), "expired");
    }
    assert_eq!(a.available(&a.alice_eur).await, 10_000 - 150);
    assert_eq!(a.balance(&a.alice_eur).await, 10_000 - 150);
    // B's clearing of `late` reaches A only now: A posts nothing and says so, B pays
    // nothing; both books agree that nothing moved.
    carry(&b.api, &a.api).await;
    assert_eq!(session(&a, &a.alice, &late).await.str("/state"), "expired");
    carry(&a.api, &b.api).await;
    assert_eq!(at_b(&late).await, "expired");
    assert_eq!(b.balance(&b.shop_eur).await, shop_before + 150);
    assert_eq!(a.balance(&a.alice_eur).await, 10_000 - 150);
    for w in [&a, &b] {
        let owed = w
            .api
            .get("/v1/clearing")
            .key(&w.api.admin)
            .send()
            .await
            .expect(StatusCode::OK);
        let line = &owed.body[0];
        assert_eq!(
            (
                line["owed_to_minor"].as_i64(),
                line["owed_by_minor"].as_i64()
            ),
            if std::ptr::eq(w, &a) {
                (Some(150), Some(0))
            } else {
                (Some(0), Some(150))
            },
            "{}",
            owed.body
        );
    }
    a.audit_passes().await;
    b.audit_passes().await;
}

#[tokio::test]
async fn sessions_end_by_their_deadlines() {
    ends(World::new().await, World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_by_their_deadlines_on_postgres() {
    let Some(a) = world_on_postgres().await else {
        return;
    };
    ends(a, World::new().await).await;
}

/// Acceptance delivery's keys at the operators (M9): the customer's K1 goes through its
/// operator to the merchant's, which signs it for the merchant; the merchant's agent escrows
/// K2 there, and only the operator hands it out (to an arbiter). The session view names the
/// merchant agent's key, for the customer to check deliveries under.
async fn order_keys(a: World, b: World) {
    use tally_proto::session::acceptance::{Order, OrderKey};
    let k = Kiosk::new(&a, &b).await;
    let s = k.open(&a, "k1", "3.00 EUR").await;
    carry(&a.api, &b.api).await;
    carry(&b.api, &a.api).await;
    let view = session(&a, &a.alice, &s).await.expect(StatusCode::OK);
    assert_eq!(
        view.str("/merchant_key"),
        k.agent.verifying_key().to_hex(),
        "{}",
        view.body
    );
    // M7: each side's key as its own operator certifies it, for this session only, naming
    // nothing else; each checks it under its own operator's node key.
    {
        use tally_proto::session::certs::{Role, SessionCert};
        let key_of = |w: &World| {
            tally_kernel::crypto::VerifyingKey::from_hex(&w.api.node.node_public_key())
                .expect("node key")
        };
        let id: tally_proto::session::ids::SessionId = s.parse().expect("id");
        let now = a.api.node.now().as_micros();
        let m = SessionCert::open(
            view.str("/merchant_cert"),
            &key_of(&a),
            id,
            Role::Merchant,
            now,
        )
        .expect("the merchant's certificate, by A");
        assert_eq!(m.key, k.agent.verifying_key().to_hex());
        let at_b = session(&b, &k.kiosk, &s).await.expect(StatusCode::OK);
        let c = SessionCert::open(
            at_b.str("/customer_cert"),
            &key_of(&b),
            id,
            Role::Customer,
            now,
        )
        .expect("the customer's certificate, by B");
        assert_eq!(c.key, k.customer.verifying_key().to_hex());
        // Not under the other operator's key, not for another session.
        assert!(
            SessionCert::open(
                at_b.str("/customer_cert"),
                &key_of(&a),
                id,
                Role::Customer,
                now
            )
            .is_err()
        );
        let other = format!("{}.999", node_id(&a.api)).parse().expect("id");
        assert!(
            SessionCert::open(
                view.str("/merchant_cert"),
                &key_of(&a),
                other,
                Role::Merchant,
                now
            )
            .is_err()
        );
        // The customer's pseudonym and key are all B holds of the customer.
        assert!(!at_b.body.to_string().contains("alice"), "{}", at_b.body);
    }
    let order = tally_kernel::Id::new().to_string();
    let k1 = "0b".repeat(32);
    let send = |k1: String| {
        let (a, s, order) = (&a, s.clone(), order.clone());
        async move {
            a.api
                .post(&format!("/v1/trading-sessions/{s}/order-keys"))
                .key(&a.alice)
                .json(json!({"order": order, "k1": k1}))
                .send()
                .await
        }
    };
    send(k1.clone()).await.expect(StatusCode::ACCEPTED);
    // Again: the same step; another K1 for the order: refused, nothing sent.
    send(k1.clone()).await.expect(StatusCode::ACCEPTED);
    send("0c".repeat(32))
        .await
        .expect_error(StatusCode::CONFLICT, "idempotency_key_reused");
    send("zz".into())
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let path = format!("/v1/trading-sessions/{s}/order-keys/{order}");
    b.api
        .get(&path)
        .key(&k.kiosk)
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let sent = carry(&a.api, &b.api).await;
    assert_eq!(sent.len(), 1, "one K1 went");
    let signed = b
        .api
        .get(&path)
        .key(&k.kiosk)
        .send()
        .await
        .expect(StatusCode::OK)
        .str("/signed")
        .to_string();
    let mta = tally_kernel::crypto::VerifyingKey::from_hex(&b.api.node.node_public_key())
        .expect("node key");
    let order_of = Order {
        transaction: format!("{s}.1").parse().expect("transaction"),
        order: order.parse().expect("order"),
        product: "p".into(),
        price: tally_kernel::Amount::new(1, tally_kernel::Currency::from_code("EUR").expect("EUR")),
        offer: String::new(),
        at: 0,
    };
    assert_eq!(
        OrderKey::open(signed.as_bytes(), &mta, &order_of).expect("K1"),
        [0x0b; 32]
    );
    // Other customers' and merchants' keys see nothing.
    b.api
        .get(&path)
        .key(&b.api.issue_key("merchant", "other").await)
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    // The escrow: the merchant puts K2, only the operator takes it out.
    let escrow = format!("{path}/escrow");
    let package = "ab".repeat(32);
    b.api
        .call("PUT", &escrow)
        .key(&k.kiosk)
        .json(json!({"k2": "16".repeat(32), "package": package}))
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);
    b.api
        .get(&escrow)
        .key(&k.kiosk)
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let e = b
        .api
        .get(&escrow)
        .key(&b.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (e.str("/k2"), e.str("/package")),
        ("16".repeat(32).as_str(), package.as_str())
    );
    // Nowhere in B's database in the clear.
    let rows = b
        .api
        .node
        .store()
        .order_key(&s, &order)
        .await
        .expect("row")
        .expect("escrowed");
    let sealed = rows.k2_sealed.expect("sealed");
    assert!(!hex::encode(&sealed).contains(&"16".repeat(32)));
    // A session that is not open (here: not answered yet) takes no orders.
    let over = k.open(&a, "k2", "1.00 EUR").await;
    a.api
        .post(&format!("/v1/trading-sessions/{over}/order-keys"))
        .key(&a.alice)
        .json(json!({"order": tally_kernel::Id::new().to_string(), "k1": k1}))
        .send()
        .await
        .expect_error(StatusCode::CONFLICT, "session_closed");
    a.audit_passes().await;
    b.audit_passes().await;
}

#[tokio::test]
async fn order_keys_go_through_the_customers_operator_and_k2_is_escrowed() {
    order_keys(World::new().await, World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_keys_go_through_the_customers_operator_and_k2_is_escrowed_on_postgres() {
    let Some(a) = world_on_postgres().await else {
        return;
    };
    order_keys(a, World::new().await).await;
}
