//! Locked delivery through the HTTP API (SPEC D1–D11): a product sealed as it uploads, sales,
//! the package downloaded whole and by ranges and verified with the sans-IO reader, payment by
//! each path, the key released and opening the product, and every refusal checked for its
//! cause and for leaving the ledger as it was. Runs on SQLite and on PostgreSQL.

mod common;

use axum::http::StatusCode;
use common::{Api, Reply};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tally_http::HttpOptions;
use tally_kernel::Timestamp;
use tally_kernel::crypto::kdf::{hmac_sha256, sha256};
use tally_proto::delivery::{self, PackageError, notification};
use tally_service::delivery::DeliverySettings;
use tally_service::{NodeClock, NodeConfig};

const SECRET: &[u8] = b"bank-shared-secret-0123456789abcdef";

struct World {
    api: Api,
    alice: String,
    bob: String,
    shop: String,
    alice_eur: String,
    bob_eur: String,
    shop_eur: String,
    clock: Arc<AtomicI64>,
    product: String,
    product_bytes: Vec<u8>,
}

impl World {
    async fn new(database_url: Option<String>) -> World {
        let clock = Arc::new(AtomicI64::new(Timestamp::now().as_micros()));
        let c = clock.clone();
        let api = Api::with(
            move |base| NodeConfig {
                dev: true,
                database_url,
                clock: NodeClock(Some(Arc::new(move || Timestamp(c.load(Ordering::SeqCst))))),
                delivery: DeliverySettings {
                    upload_max_bytes: 1 << 20,
                    open_orders_max: 3,
                    ..DeliverySettings::default()
                },
                ..base
            },
            HttpOptions::default(),
        )
        .await;
        let settlement = api
            .open(&api.admin, json!({"currency": "EUR", "kind": "settlement", "debits_must_not_exceed_credits": false}))
            .await;
        let alice = api.issue_key("customer", "alice").await;
        let bob = api.issue_key("customer", "bob").await;
        let shop = api.issue_key("merchant", "shop").await;
        let alice_eur = api.open(&alice, json!({"currency": "EUR"})).await;
        let bob_eur = api.open(&bob, json!({"currency": "EUR"})).await;
        let shop_eur = api.open(&shop, json!({"currency": "EUR"})).await;
        for (to, key) in [(&alice_eur, "fund-a"), (&bob_eur, "fund-b")] {
            api.post("/v1/transfers")
                .key(&api.admin)
                .idem(key)
                .json(json!({"debit_account": settlement, "credit_account": to, "amount": "100.00 EUR"}))
                .send()
                .await
                .expect(StatusCode::CREATED);
        }
        // The bank's settlement account and its HMAC secret.
        let bank = api
            .open(&api.admin, json!({"currency": "EUR", "kind": "settlement", "debits_must_not_exceed_credits": false}))
            .await;
        api.call("PUT", "/v1/receivers/bank")
            .key(&api.admin)
            .json(json!({"account": bank, "hmac_secret": hex::encode(SECRET)}))
            .send()
            .await
            .expect(StatusCode::OK);
        let product_bytes: Vec<u8> = (0..300_000_u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        World {
            api,
            alice,
            bob,
            shop,
            alice_eur,
            bob_eur,
            shop_eur,
            clock,
            product: String::new(),
            product_bytes,
        }
    }

    async fn balance(&self, id: &str) -> i64 {
        self.api.balance(id).await
    }

    async fn balances(&self) -> [i64; 3] {
        [
            self.balance(&self.alice_eur).await,
            self.balance(&self.bob_eur).await,
            self.balance(&self.shop_eur).await,
        ]
    }

    async fn upload(&self, name: &str, kind: &str, bytes: Vec<u8>) -> Reply {
        self.api
            .call(
                "PUT",
                &format!("/v1/products/{}/entries/{name}?kind={kind}", self.product),
            )
            .key(&self.shop)
            .raw("application/octet-stream", bytes)
            .send()
            .await
    }

    async fn buy(&self, key: &str, idem: &str, address: &str) -> Reply {
        self.api
            .post("/v1/sales")
            .key(key)
            .idem(idem)
            .json(json!({"product": self.product, "channel": "dev", "address": address}))
            .send()
            .await
    }

    /// The package bytes (whole, or a `Range`).
    async fn download(&self, key: &str, sale: &str, range: Option<&str>) -> (StatusCode, Vec<u8>) {
        let mut call = self.api.get(&format!("/v1/sales/{sale}/package")).key(key);
        if let Some(r) = range {
            call = call.header("range", r);
        }
        let r = call.send().await;
        (r.status, r.raw)
    }

    async fn pay(&self, key: &str, idem: &str, from: &str, reference: &str, amount: &str) -> Reply {
        self.api
            .post("/v1/sales/pay")
            .key(key)
            .idem(idem)
            .json(json!({"reference": reference, "from_account": from, "amount": amount}))
            .send()
            .await
    }

    async fn notify(&self, body: &Value, ts: i64, secret: &[u8]) -> Reply {
        let body = serde_json::to_vec(body).expect("json");
        let ts = ts.to_string();
        let signed = [notification::DOMAIN, ts.as_bytes(), b".", &body].concat();
        let signature = format!("hmac-sha256={}", hex::encode(hmac_sha256(secret, &signed)));
        self.api
            .post("/v1/receivers/bank/notifications")
            .header("tally-timestamp", &ts)
            .header("tally-signature", &signature)
            .raw("application/json", body)
            .send()
            .await
    }

    fn now_s(&self) -> i64 {
        self.clock.load(Ordering::SeqCst) / 1_000_000
    }

    async fn sale(&self, key: &str, id: &str) -> Reply {
        self.api
            .get(&format!("/v1/sales/{id}"))
            .key(key)
            .send()
            .await
            .expect(StatusCode::OK)
    }

    async fn inbox(&self, address: &str) -> Value {
        self.api
            .get(&format!("/v1/dev/inbox/{address}?limit=50"))
            .key(&self.api.admin)
            .send()
            .await
            .expect(StatusCode::OK)
            .body
    }
}

#[tokio::test]
async fn locked_delivery_end_to_end() {
    walk(World::new(None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_delivery_end_to_end_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    walk(World::new(Some(url)).await).await;
}

async fn walk(mut w: World) {
    // ----- the merchant adds a product -----
    let body = json!({"title": "Blue album", "price": "9.90 EUR", "pay_to": w.shop_eur,
        "producer": "studio", "licence": "Personal use only.", "instructions": "Thank you."});
    let r = w
        .api
        .post("/v1/products")
        .key(&w.shop)
        .idem("p1")
        .json(body.clone())
        .send()
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.str("/state"), "draft");
    w.product = r.str("/id").to_string();
    let again = w
        .api
        .post("/v1/products")
        .key(&w.shop)
        .idem("p1")
        .json(body)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(again.str("/id"), w.product, "a retry is the same product");
    // A customer cannot sell; a product paid to someone else's account is refused.
    w.api
        .post("/v1/products")
        .key(&w.alice)
        .idem("p2")
        .json(json!({"title": "x", "price": "1.00 EUR", "pay_to": w.alice_eur, "licence": "l", "instructions": ""}))
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");

    // Not on sale before it is published; nothing to publish without a product entry.
    w.buy(&w.alice, "early", "alice")
        .await
        .expect_error(StatusCode::CONFLICT, "product_state");
    w.api
        .post(&format!("/v1/products/{}/publish", w.product))
        .key(&w.shop)
        .send()
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");

    // Uploads: an oversize one is refused and leaves nothing behind.
    let r = w
        .upload("huge.bin", "product", vec![7_u8; (1 << 20) + 1])
        .await;
    r.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let r = w
        .upload("album.flac", "product", w.product_bytes.clone())
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.i64("/plain_len"), 300_000);
    assert_eq!(
        r.str("/plain_sha256"),
        hex::encode(sha256(&w.product_bytes))
    );
    w.upload("liner-notes.txt", "document", b"Draft notes.".to_vec())
        .await
        .expect(StatusCode::OK);
    // Uploading a name again replaces the entry (and its sealed file).
    w.upload("liner-notes.txt", "document", b"Recorded in 2026.".to_vec())
        .await
        .expect(StatusCode::OK);
    w.upload("../escape", "document", b"x".to_vec())
        .await
        .expect(StatusCode::NOT_FOUND);
    w.upload("registration.txt", "document", b"x".to_vec())
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let r = w
        .api
        .post(&format!("/v1/products/{}/publish", w.product))
        .key(&w.shop)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/state"), "active");
    let entries = r.body["entries"].as_array().expect("entries").clone();
    assert_eq!(
        entries.len(),
        2,
        "the oversize upload left no entry: {entries:?}"
    );
    let dir = w.api.node.files().dir.join("products").join(&w.product);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("product dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    assert_eq!(
        files.len(),
        2,
        "only the two sealed entries on disk: {files:?}"
    );
    assert!(files.iter().all(|f| f.ends_with(".sealed")));
    // Published products take no more entries.
    w.upload("late.txt", "document", b"x".to_vec())
        .await
        .expect_error(StatusCode::CONFLICT, "product_state");

    // ----- alice buys -----
    assert_eq!(w.balances().await, [10_000, 10_000, 0]);
    let sale = w
        .buy(&w.alice, "buy-1", "alice")
        .await
        .expect(StatusCode::CREATED);
    let sale_id = sale.str("/id").to_string();
    let reference = sale.str("/reference").to_string();
    assert_eq!(sale.str("/state"), "open");
    assert_eq!(sale.str("/price"), "9.90 EUR");
    let retry = w
        .buy(&w.alice, "buy-1", "alice")
        .await
        .expect(StatusCode::OK);
    assert_eq!(retry.str("/id"), sale_id);

    // The whole package verifies, with the instruction file.
    let (status, package) = w.download(&w.alice, &sale_id, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(package.len() as i64, sale.i64("/package_len"));
    let node_key = tally_kernel::crypto::VerifyingKey::from_hex(&w.api.node.node_public_key())
        .expect("node key");
    let inspected = delivery::inspect(&package[..], Some(&node_key)).expect("intact");
    assert_eq!(inspected.header.reference.display(), reference);
    // A product uploaded now is sold in the newest format: BLAKE3 over each sealed entry.
    assert_eq!(inspected.header.v, u32::from(delivery::VERSION));
    assert!(
        inspected
            .header
            .entries
            .iter()
            .all(|e| e.sealed_blake3.is_some() && e.sealed_sha256.is_none())
    );
    assert_eq!(inspected.header.instruction.amount.to_string(), "9.90 EUR");
    assert_eq!(
        hex::encode(inspected.package_sha256),
        sale.str("/package_sha256")
    );
    let names: Vec<_> = inspected
        .header
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["album.flac", "registration.txt", "liner-notes.txt"]);

    // Resume: the second half by Range, glued to the first, is the same package.
    let half = package.len() / 2;
    let (status, tail) = w
        .download(&w.alice, &sale_id, Some(&format!("bytes={half}-")))
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!([&package[..half], &tail[..]].concat(), package);
    let r = w
        .api
        .get(&format!("/v1/sales/{sale_id}/package"))
        .key(&w.alice)
        .header("range", &format!("bytes={}-", package.len()))
        .send()
        .await
        .expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "invalid_request");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{}", package.len()).as_str())
    );
    // An interrupted download does not verify and shows nothing.
    match delivery::inspect(&package[..half], None) {
        Err(PackageError::Truncated(_)) => {}
        other => panic!("a truncated package must be refused as truncated: {other:?}"),
    }
    // Someone else's package is not theirs to download.
    w.api
        .get(&format!("/v1/sales/{sale_id}/package"))
        .key(&w.bob)
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // ----- refusals that change nothing -----
    let before = w.balances().await;
    w.api
        .get(&format!("/v1/sales/{sale_id}/key"))
        .key(&w.alice)
        .send()
        .await
        .expect_error(StatusCode::CONFLICT, "not_released");
    let mut typo = reference.clone();
    let last = typo.pop().expect("check char");
    typo.push(if last == '0' { '1' } else { '0' });
    w.pay(&w.alice, "typo", &w.alice_eur, &typo, "9.90 EUR")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_reference");
    w.pay(&w.alice, "other", &w.bob_eur, &reference, "9.90 EUR")
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let mut ack = serde_json::to_value(inspected.acknowledgement()).expect("ack");
    ack["package_sha256"] = json!(hex::encode([0_u8; 32]));
    w.api
        .post(&format!("/v1/sales/{sale_id}/acknowledge"))
        .key(&w.alice)
        .json(json!({"acknowledgement": ack, "debit_account": w.alice_eur}))
        .send()
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "wrong_package");
    assert_eq!(w.balances().await, before);

    // ----- path (a): the wrong amount is kept, reported and refundable; no release -----
    let r = w
        .pay(&w.alice, "pay-wrong", &w.alice_eur, &reference, "9.00 EUR")
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.str("/status"), "mismatch");
    let wrong_payment = r.str("/id").to_string();
    assert_eq!(w.sale(&w.alice, &sale_id).await.str("/state"), "open");
    assert_eq!(w.balances().await, [10_000 - 900, 10_000, 0]);
    w.api
        .get(&format!("/v1/sales/{sale_id}/key"))
        .key(&w.alice)
        .send()
        .await
        .expect_error(StatusCode::CONFLICT, "not_released");
    w.api
        .post(&format!("/v1/payments/{wrong_payment}/refund"))
        .key(&w.bob)
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let r = w
        .api
        .post(&format!("/v1/payments/{wrong_payment}/refund"))
        .key(&w.shop)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/status"), "refunded");
    w.api
        .post(&format!("/v1/payments/{wrong_payment}/refund"))
        .key(&w.shop)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(w.balances().await, [10_000, 10_000, 0], "refunded once");

    // The right amount releases the key, once.
    let r = w
        .pay(&w.alice, "pay-1", &w.alice_eur, &reference, "9.90 EUR")
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.str("/status"), "matched");
    let replay = w
        .pay(&w.alice, "pay-1", &w.alice_eur, &reference, "9.90 EUR")
        .await
        .expect(StatusCode::OK);
    assert_eq!(replay.str("/id"), r.str("/id"));
    // The replay names the same transfer, the one the ledger booked (a real transfer).
    assert_eq!(replay.str("/transfer"), r.str("/transfer"));
    let booked = w
        .api
        .get(&format!("/v1/transfers/{}", r.str("/transfer")))
        .key(&w.alice)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(booked.i64("/amount/minor"), 990);
    assert_eq!(w.balances().await, [10_000 - 990, 10_000, 990]);
    let s = w.sale(&w.alice, &sale_id).await;
    let listed = s.body["payments"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["id"] == r.str("/id")))
        .expect("the payment in the sale");
    assert_eq!(listed["transfer"], r.str("/transfer"));
    assert_eq!(s.str("/state"), "released");
    let key = w
        .api
        .get(&format!("/v1/sales/{sale_id}/key"))
        .key(&w.alice)
        .send()
        .await
        .expect(StatusCode::OK);
    let unlock: [u8; 32] = hex::decode(key.str("/unlock_key"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    // The key went to alice's channel too (put in at delivery; the outbox holds a placeholder).
    let inbox = w.inbox("alice").await;
    let message = inbox
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| {
            m["subject"]
                .as_str()
                .is_some_and(|s| s.contains("unlock key"))
        })
        .unwrap_or_else(|| panic!("no key message in {inbox}"));
    assert!(
        message["body"]
            .as_str()
            .expect("body")
            .contains(key.str("/unlock_key"))
    );
    // The key opens the product, which is the uploaded one.
    let mut cursor = std::io::Cursor::new(&package);
    let mut product = Vec::new();
    delivery::unlock_entry(&mut cursor, &inspected, &unlock, 0, &mut product).expect("unlocks");
    assert_eq!(sha256(&product), sha256(&w.product_bytes));
    let mut registration = Vec::new();
    delivery::unlock_entry(&mut cursor, &inspected, &unlock, 1, &mut registration).expect("reg");
    let registration = String::from_utf8(registration).expect("utf-8");
    assert!(registration.contains(&reference), "{registration}");
    assert!(registration.contains("Authenticity: "), "{registration}");
    // A second payment of a released sale is a duplicate, kept apart and refundable.
    let r = w
        .pay(&w.alice, "pay-2", &w.alice_eur, &reference, "9.90 EUR")
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.str("/status"), "duplicate");
    assert_eq!(w.balances().await, [10_000 - 1980, 10_000, 990]);
    w.api
        .post(&format!("/v1/payments/{}/refund", r.str("/id")))
        .key(&w.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(w.balances().await, [10_000 - 990, 10_000, 990]);

    // ----- path (b): a bank's signed notification -----
    let bob_sale = w
        .buy(&w.bob, "bob-1", "bob")
        .await
        .expect(StatusCode::CREATED);
    let bob_reference = bob_sale.str("/reference").to_string();
    let note = json!({"id": "bank-tx-1", "reference": bob_reference, "amount": "9.90 EUR",
        "paid_at": w.now_s(), "payer": "Bob B."});
    w.notify(&note, w.now_s(), b"not-the-secret-not-the-secret!!")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    w.notify(&note, w.now_s() - 3600, SECRET)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "stale_notification");
    assert_eq!(
        w.balance(&w.shop_eur).await,
        990,
        "refused notifications move nothing"
    );
    let r = w
        .notify(&note, w.now_s(), SECRET)
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/status"), "matched");
    assert_eq!(r.str("/path"), "receiver");
    let replay = w
        .notify(&note, w.now_s(), SECRET)
        .await
        .expect(StatusCode::OK);
    assert_eq!(replay.str("/id"), r.str("/id"));
    assert_eq!(replay.body["replayed"], true);
    let mut reused = note.clone();
    reused["amount"] = json!("1.00 EUR");
    w.notify(&reused, w.now_s(), SECRET)
        .await
        .expect_error(StatusCode::CONFLICT, "idempotency_key_reused");
    assert_eq!(w.balance(&w.shop_eur).await, 1980, "paid once");
    let bob_sale_id = bob_sale.str("/id");
    assert_eq!(w.sale(&w.bob, bob_sale_id).await.str("/state"), "released");
    // A well-formed but unknown reference is kept as unmatched (the refund path), and so is a
    // typo: the bank received the money; it waits in suspense with the text as quoted.
    let unknown =
        delivery::ReferenceCode::new(tally_kernel::Id::new(), "nobody", Timestamp::now(), [9; 16]);
    let r = w
        .notify(
            &json!({"id": "bank-tx-2", "reference": unknown.display(), "amount": "5.00 EUR",
            "paid_at": w.now_s(), "payer": "Someone"}),
            w.now_s(),
            SECRET,
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/status"), "unmatched");
    let kept = w
        .notify(
            &json!({"id": "bank-tx-3", "reference": typo, "amount": "9.90 EUR",
            "paid_at": w.now_s(), "payer": "Someone"}),
            w.now_s(),
            SECRET,
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(kept.str("/status"), "unmatched");
    assert_eq!(kept.str("/reference"), typo, "kept with the text as quoted");

    // ----- path (c): the acknowledgement with auto-debit -----
    let second = w
        .buy(&w.alice, "buy-2", "alice")
        .await
        .expect(StatusCode::CREATED);
    let second_id = second.str("/id").to_string();
    let (_, second_package) = w.download(&w.alice, &second_id, None).await;
    let second_inspected = delivery::inspect(&second_package[..], Some(&node_key)).expect("ok");
    // The first sale's acknowledgement is not this one's.
    w.api
        .post(&format!("/v1/sales/{second_id}/acknowledge"))
        .key(&w.alice)
        .json(json!({"acknowledgement": inspected.acknowledgement(), "debit_account": w.alice_eur}))
        .send()
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "wrong_package");
    // The buyer signs the acknowledgement with her own key; a signature over another
    // acknowledgement is refused.
    let buyer_key = tally_kernel::crypto::SigningKey::from_seed(&[5; 32]);
    let ack_json =
        tally_kernel::crypto::canonical::canonical_json(&second_inspected.acknowledgement())
            .expect("jcs");
    let wrong_json =
        tally_kernel::crypto::canonical::canonical_json(&inspected.acknowledgement()).expect("jcs");
    let sign = |bytes: &[u8]| {
        buyer_key
            .sign(tally_service::delivery::ACK_DOMAIN, bytes)
            .to_hex()
    };
    w.api
        .post(&format!("/v1/sales/{second_id}/acknowledge"))
        .key(&w.alice)
        .json(
            json!({"acknowledgement": second_inspected.acknowledgement(),
            "public_key": buyer_key.verifying_key().to_hex(), "signature": sign(&wrong_json)}),
        )
        .send()
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "wrong_package");
    let r = w
        .api
        .post(&format!("/v1/sales/{second_id}/acknowledge"))
        .key(&w.alice)
        .json(json!({"acknowledgement": second_inspected.acknowledgement(), "debit_account": w.alice_eur,
            "public_key": buyer_key.verifying_key().to_hex(), "signature": sign(&ack_json)}))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/state"), "released");
    assert!(r.body["delivered_at"].is_number());
    assert_eq!(
        w.balances().await,
        [10_000 - 1980, 10_000, 2970],
        "bob paid through his bank"
    );
    // Another sale's key does not open this package.
    let mut cursor = std::io::Cursor::new(&second_package);
    match delivery::unlock_entry(&mut cursor, &second_inspected, &unlock, 0, &mut Vec::new()) {
        Err(PackageError::WrongKey) => {}
        other => panic!("another sale's key must not open it: {other:?}"),
    }

    // ----- the credit rule: at most 3 unpaid sales per buyer -----
    for i in 0..3 {
        w.buy(&w.bob, &format!("open-{i}"), "bob")
            .await
            .expect(StatusCode::CREATED);
    }
    w.buy(&w.bob, "open-3", "bob")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "credit_refused");

    // ----- complaints -----
    let r = w
        .api
        .post("/v1/complaints")
        .key(&w.alice)
        .json(json!({"reference": reference, "kind": "key_lost"}))
        .send()
        .await
        .expect(StatusCode::OK);
    assert!(r.str("/action").contains("sent again"), "{}", r.body);
    let keys = w.inbox("alice").await;
    let sent = keys
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| {
            m["body"]
                .as_str()
                .is_some_and(|b| b.contains(key.str("/unlock_key")))
        })
        .count();
    assert_eq!(sent, 2, "the key was re-sent");
    let r = w
        .api
        .post("/v1/complaints")
        .key(&w.alice)
        .json(json!({"reference": reference, "kind": "product_deleted"}))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/download"), format!("/v1/sales/{sale_id}/package"));
    w.api
        .post("/v1/complaints")
        .key(&w.bob)
        .json(json!({"reference": reference, "kind": "key_lost"}))
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // ----- overdue alerts: bob's unpaid sales, once -----
    w.clock.fetch_add(8 * 86_400 * 1_000_000, Ordering::SeqCst);
    assert_eq!(
        w.api
            .node
            .delivery()
            .sweep_timeouts(100)
            .await
            .expect("sweep"),
        3
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
    let reminders = w.inbox("bob").await;
    let n = reminders
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| {
            m["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("Reminder"))
        })
        .count();
    assert_eq!(n, 3);

    // ----- six exact payments racing for one sale: one releases it, five are duplicates -----
    let race = w
        .buy(&w.alice, "buy-race", "alice")
        .await
        .expect(StatusCode::CREATED);
    let race_reference = race.str("/reference").to_string();
    let shop_before = w.balance(&w.shop_eur).await;
    let keys: Vec<String> = (0..6).map(|i| format!("race-{i}")).collect();
    let replies = futures::future::join_all(
        keys.iter()
            .map(|k| w.pay(&w.alice, k, &w.alice_eur, &race_reference, "9.90 EUR")),
    )
    .await;
    let mut statuses: Vec<String> = replies
        .into_iter()
        .map(|r| r.expect(StatusCode::CREATED).str("/status").to_string())
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            "duplicate",
            "duplicate",
            "duplicate",
            "duplicate",
            "duplicate",
            "matched"
        ]
    );
    assert_eq!(
        w.balance(&w.shop_eur).await,
        shop_before + 990,
        "paid to the shop once"
    );

    // ----- the producer's report agrees with the ledger -----
    let studio = w.api.issue_key("merchant", "studio").await;
    let r = w
        .api
        .get("/v1/reports/sales?format=json")
        .key(&studio)
        .send()
        .await
        .expect(StatusCode::OK);
    let rows = r.body.as_array().expect("rows");
    assert_eq!(rows.len(), 7);
    let paid: i64 = rows
        .iter()
        .map(|row| {
            let paid = row["paid"].as_str().expect("paid");
            (paid
                .trim_end_matches(" EUR")
                .parse::<f64>()
                .expect("number")
                * 100.0)
                .round() as i64
        })
        .sum();
    assert_eq!(
        paid,
        w.balance(&w.shop_eur).await,
        "report and ledger agree"
    );
    let first = rows
        .iter()
        .find(|row| row["sale"] == sale_id.as_str())
        .expect("first sale");
    assert_eq!(first["key_fingerprint"], hex::encode(&sha256(&unlock)[..8]));
    let csv = w
        .api
        .get("/v1/reports/sales?format=csv")
        .key(&studio)
        .send()
        .await
        .expect(StatusCode::OK);
    let csv = csv.body.as_str().expect("csv text").to_string();
    assert!(csv.starts_with("sale,product,title,producer"), "{csv}");
    assert_eq!(csv.lines().count(), 8);
    let stranger = w.api.issue_key("merchant", "stranger").await;
    let r = w
        .api
        .get("/v1/reports/sales")
        .key(&stranger)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body, json!([]), "others see no sales");

    // The ledger balances.
    let audit = w
        .api
        .get("/v1/ledger/audit")
        .key(&w.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(audit.body["ok"], true, "{}", audit.body);
}
