//! Two-party signed receipts through the HTTP API (SPEC R1–R6): tokens, warrants, the plain
//! protocol with the token's secure write, ack and retry, proxy signing with and without a
//! warrant, and every branch of the fair exchange (seed blocks 301–317) including a party
//! that stops answering at each step, with the arbiter's abort and resolve. The client side
//! is played with the sans-IO code a real client uses (`tally_proto::receipt`), and every
//! finished receipt is checked offline with `verify_package`. Runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use common::{Api, Reply};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tally_http::HttpOptions;
use tally_kernel::Timestamp;
use tally_kernel::crypto::bls::{self, ArbiterPublicKey, BlsPublicKey, BlsSecretKey, BlsSignature};
use tally_kernel::crypto::warrant::{Counterparties, WarrantTerms, issue_warrant};
use tally_kernel::crypto::{Certificate, SigningKey, VerifyingKey};
use tally_proto::receipt::token::{SecureWrite, Stored, Token, TokenError};
use tally_proto::receipt::{self, Fields, Package, PartySignature, ReceiptError};
use tally_service::{NodeClock, NodeConfig};
use tally_wire::receipts::NewToken;

struct Party {
    api_key: String,
    key: SigningKey,
    bls: BlsSecretKey,
    cert: Certificate,
    token: Token,
}

struct World {
    api: Api,
    clock: Arc<AtomicI64>,
    alice: Party,
    bob: Party,
    server_key: VerifyingKey,
    proxy_bls: BlsPublicKey,
    arbiter: ArbiterPublicKey,
    ca: Certificate,
}

fn hex32(text: &str) -> [u8; 32] {
    hex::decode(text)
        .expect("hex")
        .try_into()
        .expect("32 bytes")
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
                ..base
            },
            HttpOptions::default(),
        )
        .await;
        let node = api
            .get("/v1/receipts/node")
            .key(&api.admin)
            .send()
            .await
            .expect(StatusCode::OK);
        let server_key = VerifyingKey::from_hex(node.str("/server_key")).expect("key");
        assert_eq!(node.str("/server_id"), server_key.fingerprint());
        let proxy_bls = BlsPublicKey::from_hex(node.str("/proxy_bls_key")).expect("bls");
        let arbiter = ArbiterPublicKey::from_hex(node.str("/arbiter_key")).expect("arbiter");
        let ca = Certificate::from_pem(node.str("/ca_certificate")).expect("ca");
        let alice = party(&api, "alice", "customer", "customer").await;
        let bob = party(&api, "bob", "merchant", "manager").await;
        World {
            api,
            clock,
            alice,
            bob,
            server_key,
            proxy_bls,
            arbiter,
            ca,
        }
    }

    fn advance(&self, seconds: i64) {
        self.clock.fetch_add(seconds * 1_000_000, Ordering::SeqCst);
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.clock.load(Ordering::SeqCst))
    }

    /// Bob warrants the node's receipt key to sign with `counterparties`.
    async fn warrant(&self, by: &Party, counterparties: Counterparties, days: i64) -> Reply {
        let terms = WarrantTerms {
            counterparties,
            bls_key: Some(self.proxy_bls.to_bytes()),
        };
        let now = self.now();
        let w = issue_warrant(
            &by.cert,
            &by.key,
            &self.server_key,
            "tally receipt service",
            &terms,
            now,
            now.plus_seconds(days * 86_400),
        )
        .expect("warrant");
        self.api
            .post("/v1/warrants")
            .key(&by.api_key)
            .json(json!({"certificate": w.to_pem()}))
            .send()
            .await
    }

    async fn offer(&self, record: &str, fair: bool, idem: &str) -> Reply {
        self.api
            .post("/v1/receipts")
            .key(&self.bob.api_key)
            .idem(idem)
            .json(json!({"record": record, "party_a": "bob", "party_b": "alice", "fair": fair}))
            .send()
            .await
    }

    async fn get(&self, key: &str, tx: u64) -> Reply {
        self.api
            .get(&format!("/v1/receipts/{tx}"))
            .key(key)
            .send()
            .await
    }

    async fn post(&self, key: &str, path: String, body: Value) -> Reply {
        self.api.post(&path).key(key).json(body).send().await
    }
}

fn token_body(t: NewToken) -> Value {
    serde_json::to_value(t).expect("json")
}

async fn party(api: &Api, name: &str, api_role: &str, role: &str) -> Party {
    let api_key = api.issue_key(api_role, name).await;
    let key = SigningKey::generate();
    let bls = BlsSecretKey::generate();
    let r = api
        .post("/v1/tokens")
        .key(&api.admin)
        .idem(&format!("token-{name}"))
        .json(token_body(NewToken::signed(
            name,
            role,
            &key,
            Some(&bls),
            Some(2),
            None,
        )))
        .send()
        .await
        .expect(StatusCode::CREATED);
    let cert = Certificate::from_pem(r.str("/certificate")).expect("cert");
    assert_eq!(cert.role().as_deref(), Some(role));
    let serial: [u8; 16] = hex::decode(r.str("/serial"))
        .expect("hex")
        .try_into()
        .expect("16");
    let token = Token::new(serial, hex32(r.str("/app_key")), 2);
    Party {
        api_key,
        key,
        bls,
        cert,
        token,
    }
}

/// Fields 1–7 from an offer, checked against what the client knows.
fn fields_of(w: &World, view: &Reply) -> Fields {
    let record = view.str("/record");
    assert_eq!(
        hex::encode(receipt::content_hash(record)),
        view.str("/content_hash")
    );
    assert_eq!(view.str("/server_id"), w.server_key.fingerprint());
    Fields {
        version: view.body["version"].as_u64().expect("version") as u8,
        server_id: hex32(view.str("/server_id")),
        transaction: view.body["transaction"].as_u64().expect("tx"),
        time: view.i64("/time"),
        content_hash: hex32(view.str("/content_hash")),
        party_a: hex32(view.str("/party_a_fingerprint")),
        party_b: hex32(view.str("/party_b_fingerprint")),
    }
}

fn tx_of(r: &Reply) -> u64 {
    r.body["transaction"].as_u64().expect("transaction")
}

fn sign_ed(p: &Party, f: &Fields) -> String {
    p.key.sign(receipt::PARTY_DOMAIN, &f.party_part()).to_hex()
}

fn sign_bls(p: &Party, f: &Fields) -> BlsSignature {
    p.bls.sign(receipt::PARTY_DOMAIN, &f.party_part())
}

/// B's token reserves a slot; the sign request's `token` part.
fn begin_write(p: &mut Party, f: &Fields, seed: u8) -> Value {
    let challenge = [seed; 32];
    let (slot, _) = p.token.begin(challenge, f.transaction, f.content_hash, 0);
    json!({"serial": hex::encode(p.token.serial), "challenge": hex::encode(challenge), "slot": slot})
}

async fn package(w: &World, key: &str, tx: u64) -> Package {
    let r = w
        .api
        .get(&format!("/v1/receipts/{tx}/package"))
        .key(key)
        .send()
        .await
        .expect(StatusCode::OK);
    Package::from_bytes(&r.raw).expect("package parses")
}

async fn plain_walk(mut w: World) {
    // No warrant yet: the node refuses to sign for bob (block 303).
    let record = "Order 1042\n2 x Blue album\nTotal 19.80 EUR\n";
    w.offer(record, false, "o0")
        .await
        .expect_error(StatusCode::FORBIDDEN, "no_warrant");
    w.warrant(&w.bob, Counterparties::Names(vec!["alice".into()]), 30)
        .await
        .expect(StatusCode::OK);

    // 301–303: the offer; a retry with the same key is the same offer.
    let offer = w
        .offer(record, false, "o1")
        .await
        .expect(StatusCode::CREATED);
    let again = w.offer(record, false, "o1").await.expect(StatusCode::OK);
    assert_eq!(tx_of(&offer), tx_of(&again));
    assert_eq!(offer.str("/state"), "offered");
    assert!(
        offer.body["signature_a"].is_null(),
        "A's signature comes after B's"
    );
    let tx = tx_of(&offer);
    let view = w.get(&w.alice.api_key, tx).await.expect(StatusCode::OK);
    assert_eq!(
        view.str("/record"),
        record,
        "B is shown the record as flat text"
    );
    let f = fields_of(&w, &view);
    assert_eq!(
        f.party_b,
        tally_kernel::crypto::kdf::sha256(&w.alice.key.verifying_key().to_bytes())
    );

    // Someone who is not party B cannot sign; a signature by the wrong key is refused and
    // nothing is stored.
    w.post(
        &w.bob.api_key,
        format!("/v1/receipts/{tx}/sign"),
        json!({"signature_b": sign_ed(&w.alice, &f)}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let wrong = w
        .bob
        .key
        .sign(receipt::PARTY_DOMAIN, &f.party_part())
        .to_hex();
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/sign"),
        json!({"signature_b": wrong}),
    )
    .await
    .expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    let mut tampered = f;
    tampered.content_hash[0] ^= 1;
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/sign"),
        json!({"signature_b": sign_ed(&w.alice, &tampered)}),
    )
    .await
    .expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    assert_eq!(w.get(&w.alice.api_key, tx).await.str("/state"), "offered");

    // 311–315: B signs and asks for the secure write.
    let write_req = begin_write(&mut w.alice, &f, 7);
    let signed = w
        .post(
            &w.alice.api_key,
            format!("/v1/receipts/{tx}/sign"),
            json!({"signature_b": sign_ed(&w.alice, &f), "token": write_req}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(signed.str("/state"), "signed");
    let write =
        SecureWrite::from_bytes(&hex::decode(signed.str("/write")).expect("hex")).expect("write");
    let number = signed.body["receipt_number"].as_u64().expect("number");
    // The token checks the server's signature and the record hash, stores it once.
    assert_eq!(
        w.alice.token.store(&write, &w.server_key),
        Ok(Stored::New(number))
    );
    assert_eq!(
        w.alice.token.store(&write, &w.server_key),
        Ok(Stored::Already(number))
    );
    let mut other = write.clone();
    other.receipt_number += 1;
    assert_eq!(
        w.alice.token.store(&other, &w.server_key),
        Err(TokenError::Replayed)
    );
    // 316: the ack.
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/ack"),
        json!({"receipt_number": number + 1}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let acked = w
        .post(
            &w.alice.api_key,
            format!("/v1/receipts/{tx}/ack"),
            json!({"receipt_number": number}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(acked.str("/state"), "acked");

    // 317: both hold the receipt; anyone verifies it offline with the CA certificate.
    let core = hex::decode(acked.str("/core")).expect("hex");
    let pkg = package(&w, &w.bob.api_key, tx).await;
    assert_eq!(pkg.receipt.to_bytes(), core);
    let v = receipt::verify_package(&pkg, &w.ca).expect("genuine receipt verifies");
    assert_eq!((v.party_a.as_str(), v.party_b.as_str()), ("bob", "alice"));
    assert!(
        v.warrant_a.is_some(),
        "A's proxy signature names its warrant"
    );
    assert_eq!(v.journal_seq.map(|s| s > 0), Some(true));
    let mut bad = pkg.clone();
    bad.record = Some(record.replace("19.80", "1.98"));
    assert_eq!(
        receipt::verify_package(&bad, &w.ca),
        Err(ReceiptError::RecordAltered)
    );
    let mut bad = pkg.clone();
    bad.warrant_a = None;
    assert_eq!(
        receipt::verify_package(&bad, &w.ca),
        Err(ReceiptError::BadSignature("party A"))
    );
    // Signing again with the same signature is a harmless retry; another signature is not.
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/sign"),
        json!({"signature_b": sign_ed(&w.alice, &f)}),
    )
    .await
    .expect(StatusCode::OK);
    let list = w
        .api
        .get("/v1/receipts")
        .key(&w.alice.api_key)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(list.body.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn plain_receipt_end_to_end() {
    plain_walk(World::new(None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_receipt_end_to_end_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    plain_walk(World::new(Some(url)).await).await;
}

#[tokio::test]
async fn token_write_is_retried_until_acked() {
    let mut w = World::new(None).await;
    w.warrant(&w.bob, Counterparties::Any, 30)
        .await
        .expect(StatusCode::OK);
    let tx = tx_of(
        &w.offer("Subscription, 1 month\n", false, "o1")
            .await
            .expect(StatusCode::CREATED),
    );
    let f = fields_of(&w, &w.get(&w.alice.api_key, tx).await);
    let write_req = begin_write(&mut w.alice, &f, 9);
    let serial = hex::encode(w.alice.token.serial);
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/sign"),
        json!({"signature_b": sign_ed(&w.alice, &f), "token": write_req}),
    )
    .await
    .expect(StatusCode::OK);
    // The answer was lost: the write never reached the token and no ack came. The node
    // offers the same write again when the holder asks, counting the attempts.
    let tokens = w
        .api
        .get("/v1/tokens")
        .key(&w.alice.api_key)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(tokens.body[0]["unacked"], 1);
    let pending = w
        .api
        .get(&format!("/v1/tokens/{serial}/writes"))
        .key(&w.alice.api_key)
        .send()
        .await
        .expect(StatusCode::OK);
    let pending2 = w
        .api
        .get(&format!("/v1/tokens/{serial}/writes"))
        .key(&w.alice.api_key)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        pending.body[0]["write"], pending2.body[0]["write"],
        "a retry is the same write"
    );
    // Polling does not grow the journal; a retry after a pause is counted.
    assert_eq!(pending2.body[0]["write_attempts"], 1);
    w.advance(31);
    let pending3 = w
        .api
        .get(&format!("/v1/tokens/{serial}/writes"))
        .key(&w.alice.api_key)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(pending3.body[0]["write_attempts"], 2);
    assert_eq!(pending3.body[0]["write"], pending.body[0]["write"]);
    w.api
        .get(&format!("/v1/tokens/{serial}/writes"))
        .key(&w.bob.api_key)
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let write = SecureWrite::from_bytes(
        &hex::decode(pending.body[0]["write"].as_str().expect("write")).expect("hex"),
    )
    .expect("write");
    let Ok(Stored::New(number)) = w.alice.token.store(&write, &w.server_key) else {
        panic!("the retried write stores");
    };
    // A write for another token does not open there.
    let mut bob_token = Token::new(w.bob.token.serial, [5; 32], 2);
    bob_token.begin([9; 32], f.transaction, f.content_hash, 0);
    assert_eq!(
        bob_token.store(&write, &w.server_key),
        Err(TokenError::WrongKey)
    );
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/ack"),
        json!({"receipt_number": number}),
    )
    .await
    .expect(StatusCode::OK);
    let pending = w
        .api
        .get(&format!("/v1/tokens/{serial}/writes"))
        .key(&w.alice.api_key)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(pending.body, json!([]));
    // A full token replaces the lowest-priority, oldest receipt (the client exports it first).
    w.alice.token.slots[1] = w.alice.token.slots[0].clone();
    let (slot, displaced) = w.alice.token.begin([3; 32], 99, [0; 32], 1);
    assert_eq!(
        (slot, displaced.map(|s| s.receipt_number)),
        (0, Some(number))
    );
}

#[tokio::test]
async fn proxy_signing_needs_a_matching_unrevoked_warrant() {
    let w = World::new(None).await;
    // A warrant for carol only does not let the node sign with alice.
    w.warrant(&w.bob, Counterparties::Names(vec!["carol".into()]), 30)
        .await
        .expect(StatusCode::OK);
    let r = w
        .offer("Quote 7\n", false, "o1")
        .await
        .expect_error(StatusCode::FORBIDDEN, "no_warrant");
    assert!(
        r.body.to_string().contains("does not name alice"),
        "{}",
        r.body
    );
    // A warrant signed by someone else's key, or posted by another party, is refused.
    let terms = WarrantTerms {
        counterparties: Counterparties::Any,
        bls_key: None,
    };
    let now = w.now();
    let forged = issue_warrant(
        &w.bob.cert,
        &w.alice.key,
        &w.server_key,
        "x",
        &terms,
        now,
        now.plus_seconds(86_400),
    );
    if let Ok(forged) = forged {
        w.post(
            &w.bob.api_key,
            "/v1/warrants".into(),
            json!({"certificate": forged.to_pem()}),
        )
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_warrant");
    }
    let other_key = SigningKey::generate();
    let for_other = issue_warrant(
        &w.bob.cert,
        &w.bob.key,
        &other_key.verifying_key(),
        "x",
        &terms,
        now,
        now.plus_seconds(86_400),
    )
    .expect("warrant");
    w.post(
        &w.bob.api_key,
        "/v1/warrants".into(),
        json!({"certificate": for_other.to_pem()}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_warrant");
    w.warrant(&w.bob, Counterparties::Any, 30)
        .await
        .expect(StatusCode::OK);
    let bobs = w
        .api
        .get("/v1/warrants")
        .key(&w.bob.api_key)
        .send()
        .await
        .expect(StatusCode::OK);
    let any = bobs
        .body
        .as_array()
        .expect("list")
        .iter()
        .find(|x| x["counterparties"] == "*")
        .expect("any");
    let serial = any["serial"].as_str().expect("serial").to_string();
    w.post(
        &w.alice.api_key,
        format!("/v1/warrants/{serial}/revoke"),
        json!({}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // With the warrant the node signs for bob, naming the warrant.
    let ok = w
        .offer("Quote 7\n", false, "o2")
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(ok.body["warrant_a"], serial.as_str());
    // Revoked: refused again, and a pending offer can no longer be completed under it.
    w.post(
        &w.bob.api_key,
        format!("/v1/warrants/{serial}/revoke"),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    w.offer("Quote 8\n", false, "o3")
        .await
        .expect_error(StatusCode::FORBIDDEN, "no_warrant");
    let tx = tx_of(&ok);
    let f = fields_of(&w, &w.get(&w.alice.api_key, tx).await);
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/sign"),
        json!({"signature_b": sign_ed(&w.alice, &f)}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "no_warrant");
    assert_eq!(w.get(&w.alice.api_key, tx).await.str("/state"), "offered");
    // An expired warrant does not count either.
    w.warrant(&w.bob, Counterparties::Any, 1)
        .await
        .expect(StatusCode::OK);
    w.advance(2 * 86_400);
    w.offer("Quote 9\n", false, "o4")
        .await
        .expect_error(StatusCode::FORBIDDEN, "no_warrant");

    // A customer may warrant the node too (reverse auction): both sides signed at once.
    w.warrant(&w.bob, Counterparties::Any, 30)
        .await
        .expect(StatusCode::OK);
    w.warrant(&w.alice, Counterparties::Names(vec!["bob".into()]), 30)
        .await
        .expect(StatusCode::OK);
    let both = w
        .api
        .post("/v1/receipts")
        .key(&w.bob.api_key)
        .idem("o5")
        .json(json!({"record": "Bid accepted: lot 3\n", "party_a": "bob", "party_b": "alice", "proxy_b": true}))
        .send()
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(both.str("/state"), "signed");
    let v = receipt::verify_package(&package(&w, &w.alice.api_key, tx_of(&both)).await, &w.ca)
        .expect("verifies");
    assert!(v.warrant_a.is_some() && v.warrant_b.is_some());
}

/// A fair exchange up to B's verifiable escrow (blocks 301–308).
async fn fair_offer(w: &World, idem: &str) -> (u64, Fields, Reply) {
    w.warrant(&w.bob, Counterparties::Any, 30)
        .await
        .expect(StatusCode::OK);
    let offer = w
        .offer("Contract 88: both sign or neither\n", true, idem)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(offer.body["version"], 2);
    assert!(
        offer.body["escrow_a"].is_string(),
        "the node sends a non-verifiable escrow"
    );
    assert!(
        offer.body["signature_a"].is_null(),
        "…and keeps its signature back"
    );
    let view = w
        .get(&w.alice.api_key, tx_of(&offer))
        .await
        .expect(StatusCode::OK);
    (tx_of(&offer), fields_of(w, &view), view)
}

async fn send_escrow(w: &World, tx: u64, f: &Fields) -> Reply {
    let ves = bls::encrypt_signature(
        &w.alice.bls,
        &w.arbiter,
        receipt::PARTY_DOMAIN,
        &f.party_part(),
    );
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/escrow"),
        json!({"ves": ves.to_hex()}),
    )
    .await
}

fn check_sig_a(w: &World, f: &Fields, hex_sig: &str) {
    let sig = BlsSignature::from_hex(hex_sig).expect("sig");
    w.proxy_bls
        .verify(receipt::PARTY_DOMAIN, &f.party_part(), &sig)
        .expect("A's signature verifies");
}

async fn fair_walk(mut w: World) {
    let (tx, f, _) = fair_offer(&w, "f1").await;
    // Signing before escrowing is refused in a fair exchange.
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/sign"),
        json!({"signature_b": sign_bls(&w.alice, &f).to_hex()}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "receipt_state");
    // 305–308: a good escrow releases A's signature.
    let escrowed = send_escrow(&w, tx, &f).await.expect(StatusCode::OK);
    assert_eq!(escrowed.str("/state"), "escrowed");
    check_sig_a(&w, &f, escrowed.str("/signature_a"));
    // 309–316.
    let write_req = begin_write(&mut w.alice, &f, 4);
    let signed = w
        .post(
            &w.alice.api_key,
            format!("/v1/receipts/{tx}/sign"),
            json!({"signature_b": sign_bls(&w.alice, &f).to_hex(), "token": write_req}),
        )
        .await
        .expect(StatusCode::OK);
    let write =
        SecureWrite::from_bytes(&hex::decode(signed.str("/write")).expect("hex")).expect("write");
    let Ok(Stored::New(n)) = w.alice.token.store(&write, &w.server_key) else {
        panic!("stores")
    };
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/ack"),
        json!({"receipt_number": n}),
    )
    .await
    .expect(StatusCode::OK);
    let v =
        receipt::verify_package(&package(&w, &w.alice.api_key, tx).await, &w.ca).expect("verifies");
    assert_eq!(v.fields.version, 2);
    // 317 reached: nothing left to abort; the arbiter was never involved.
    w.post(&w.bob.api_key, format!("/v1/arbiter/{tx}/abort"), json!({}))
        .await
        .expect_error(StatusCode::CONFLICT, "receipt_state");
}

#[tokio::test]
async fn fair_exchange_completes_without_the_arbiter() {
    fair_walk(World::new(None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_exchange_completes_without_the_arbiter_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    fair_walk(World::new(Some(url)).await).await;
}

#[tokio::test]
async fn fair_exchange_bad_escrow_is_aborted() {
    // 306 → 307: an escrow of another message does not verify; the node aborts.
    let w = World::new(None).await;
    let (tx, f, _) = fair_offer(&w, "f1").await;
    let mut other = f;
    other.time += 1;
    let ves = bls::encrypt_signature(
        &w.alice.bls,
        &w.arbiter,
        receipt::PARTY_DOMAIN,
        &other.party_part(),
    );
    let r = w
        .post(
            &w.alice.api_key,
            format!("/v1/receipts/{tx}/escrow"),
            json!({"ves": ves.to_hex()}),
        )
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_escrow");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("abort"),
        "{}",
        r.body
    );
    let view = w.get(&w.alice.api_key, tx).await.expect(StatusCode::OK);
    assert_eq!(view.str("/state"), "aborted");
    assert!(
        view.body["signature_a"].is_null(),
        "no signature leaves an aborted exchange"
    );
    // Neither side can get the other's signature afterwards.
    w.post(
        &w.alice.api_key,
        format!("/v1/arbiter/{tx}/resolve"),
        json!({"signature_b": sign_bls(&w.alice, &f).to_hex()}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "exchange_aborted");
    send_escrow(&w, tx, &f)
        .await
        .expect_error(StatusCode::CONFLICT, "exchange_aborted");
    // Garbage is refused as malformed, before any cryptography.
    let (tx2, _, _) = fair_offer(&w, "f2").await;
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx2}/escrow"),
        json!({"ves": "00"}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_escrow");
}

#[tokio::test]
async fn fair_exchange_client_silent_after_offer_then_originator_aborts() {
    // 304 without an answer: the originator aborts; nothing can be resolved afterwards.
    let w = World::new(None).await;
    let (tx, f, _) = fair_offer(&w, "f1").await;
    w.post(
        &w.alice.api_key,
        format!("/v1/arbiter/{tx}/abort"),
        json!({}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let a = w
        .post(&w.bob.api_key, format!("/v1/arbiter/{tx}/abort"), json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (a.str("/decision"), a.body["signature"].is_null()),
        ("aborted", true)
    );
    // Aborting again is the same answer.
    w.post(&w.bob.api_key, format!("/v1/arbiter/{tx}/abort"), json!({}))
        .await
        .expect(StatusCode::OK);
    send_escrow(&w, tx, &f)
        .await
        .expect_error(StatusCode::CONFLICT, "exchange_aborted");
    w.post(
        &w.bob.api_key,
        format!("/v1/arbiter/{tx}/resolve"),
        json!({}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "exchange_aborted");
}

#[tokio::test]
async fn fair_exchange_node_silent_after_escrow_then_client_resolves() {
    // 309 → 310: B sent its escrow and got no good signature back: B resolves, depositing
    // its own signature, and gets A's from the node's escrow. The originator's later abort
    // then yields B's signature (the seed's abort-after-resolve).
    let w = World::new(None).await;
    let (tx, f, _) = fair_offer(&w, "f1").await;
    send_escrow(&w, tx, &f).await.expect(StatusCode::OK);
    // A wrong deposit is refused without deciding anything.
    let wrong = w.bob.bls.sign(receipt::PARTY_DOMAIN, &f.party_part());
    w.post(
        &w.alice.api_key,
        format!("/v1/arbiter/{tx}/resolve"),
        json!({"signature_b": wrong.to_hex()}),
    )
    .await
    .expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    let sig_b = sign_bls(&w.alice, &f);
    let r = w
        .post(
            &w.alice.api_key,
            format!("/v1/arbiter/{tx}/resolve"),
            json!({"signature_b": sig_b.to_hex()}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/decision"), "resolved");
    check_sig_a(&w, &f, r.str("/signature"));
    assert_eq!(r.str("/receipt/state"), "resolved");
    let v =
        receipt::verify_package(&package(&w, &w.alice.api_key, tx).await, &w.ca).expect("verifies");
    assert_eq!(v.fields.transaction, tx);
    let a = w
        .post(&w.bob.api_key, format!("/v1/arbiter/{tx}/abort"), json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(a.str("/decision"), "resolved");
    assert_eq!(
        a.str("/signature"),
        sig_b.to_hex(),
        "the originator gets B's signature"
    );
}

#[tokio::test]
async fn fair_exchange_client_silent_after_signature_a_then_node_resolves() {
    // 312 → 314: B got A's signature and never sent its own: the node resolves with B's
    // verifiable escrow, and both end with both signatures.
    let w = World::new(None).await;
    let (tx, f, _) = fair_offer(&w, "f1").await;
    send_escrow(&w, tx, &f).await.expect(StatusCode::OK);
    let r = w
        .post(
            &w.bob.api_key,
            format!("/v1/arbiter/{tx}/resolve"),
            json!({}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/decision"), "resolved");
    let sig_b = BlsSignature::from_hex(r.str("/signature")).expect("sig");
    w.alice
        .bls
        .public_key()
        .verify(receipt::PARTY_DOMAIN, &f.party_part(), &sig_b)
        .expect("B's signature, opened by the arbiter");
    let pkg = package(&w, &w.bob.api_key, tx).await;
    assert_eq!(pkg.receipt.signature_b, PartySignature::Bls(sig_b));
    receipt::verify_package(&pkg, &w.ca).expect("verifies");
    // B later asks the arbiter too and gets A's signature.
    let r = w
        .post(
            &w.alice.api_key,
            format!("/v1/arbiter/{tx}/resolve"),
            json!({"signature_b": sign_bls(&w.alice, &f).to_hex()}),
        )
        .await
        .expect(StatusCode::OK);
    check_sig_a(&w, &f, r.str("/signature"));
}

#[tokio::test]
async fn fair_exchange_bad_signature_from_client_is_resolved_by_the_node() {
    // 312: B's signature does not verify → 314: the node resolves with B's escrow.
    let w = World::new(None).await;
    let (tx, f, _) = fair_offer(&w, "f1").await;
    send_escrow(&w, tx, &f).await.expect(StatusCode::OK);
    let mut other = f;
    other.time -= 1;
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/sign"),
        json!({"signature_b": sign_bls(&w.alice, &other).to_hex()}),
    )
    .await
    .expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    let view = w.get(&w.bob.api_key, tx).await.expect(StatusCode::OK);
    assert_eq!(view.str("/state"), "resolved");
    receipt::verify_package(&package(&w, &w.bob.api_key, tx).await, &w.ca).expect("verifies");
}

#[tokio::test]
async fn once_a_is_released_neither_side_can_break_the_exchange() {
    // After B's escrow released A's signature, the originator may no longer abort (only a
    // resolve is fair), and B cannot fail the exchange by showing the arbiter a forged escrow:
    // the arbiter opens the escrow the node recorded. (A failed resolve — the node's own
    // escrow holding no good signature — is covered by the decision table in proto.)
    let w = World::new(None).await;
    let (tx, f, view) = fair_offer(&w, "f1").await;
    send_escrow(&w, tx, &f).await.expect(StatusCode::OK);
    w.post(&w.bob.api_key, format!("/v1/arbiter/{tx}/abort"), json!({}))
        .await
        .expect_error(StatusCode::CONFLICT, "receipt_state");
    let mut forged = hex::decode(view.str("/escrow_a")).expect("hex");
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let sig_b = sign_bls(&w.alice, &f);
    let r = w
        .post(
            &w.alice.api_key,
            format!("/v1/arbiter/{tx}/resolve"),
            json!({"signature_b": sig_b.to_hex(), "escrow_a": hex::encode(&forged)}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/decision"), "resolved");
    check_sig_a(&w, &f, r.str("/signature"));
    let r = w
        .post(
            &w.bob.api_key,
            format!("/v1/arbiter/{tx}/resolve"),
            json!({}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/signature"), sig_b.to_hex());
    // B may not resolve before escrowing (it sends the escrow again instead).
    let (tx2, f2, _) = fair_offer(&w, "f2").await;
    w.post(
        &w.alice.api_key,
        format!("/v1/arbiter/{tx2}/resolve"),
        json!({"signature_b": sign_bls(&w.alice, &f2).to_hex()}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "receipt_state");
}

#[tokio::test]
async fn bad_receipt_requests_change_nothing() {
    let w = World::new(None).await;
    w.warrant(&w.bob, Counterparties::Any, 30)
        .await
        .expect(StatusCode::OK);
    // Markup-free plain text only: a bidirectional override could show the signer another text.
    w.offer("Pay \u{202e}0001 EUR\n", false, "b1")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_receipt");
    w.offer("   ", false, "b2")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_receipt");
    let r = w
        .api
        .post("/v1/receipts")
        .key(&w.bob.api_key)
        .idem("b3")
        .json(json!({"record": "x", "party_a": "bob", "party_b": "nobody"}))
        .send()
        .await;
    r.expect_error(StatusCode::NOT_FOUND, "not_found");
    // Only the operator issues tokens.
    w.api
        .post("/v1/tokens")
        .key(&w.bob.api_key)
        .idem("t")
        .json(token_body(NewToken::signed(
            "eve", "customer", &w.bob.key, None, None, None,
        )))
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // Unknown and foreign receipts look the same.
    w.get(&w.alice.api_key, 12345)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let tx = tx_of(
        &w.offer("Plain order\n", false, "b4")
            .await
            .expect(StatusCode::CREATED),
    );
    let eve = w.api.issue_key("customer", "eve").await;
    w.get(&eve, tx)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    // Arbiter calls on a plain receipt, malformed signatures, a write request for another
    // party's token.
    w.post(&w.bob.api_key, format!("/v1/arbiter/{tx}/abort"), json!({}))
        .await
        .expect_error(StatusCode::CONFLICT, "receipt_state");
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/sign"),
        json!({"signature_b": "zz"}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_receipt");
    let f = fields_of(&w, &w.get(&w.alice.api_key, tx).await);
    let token = json!({"serial": hex::encode(w.bob.token.serial), "challenge": hex::encode([1u8; 32]), "slot": 0});
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{tx}/sign"),
        json!({"signature_b": sign_ed(&w.alice, &f), "token": token}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_write");
    assert_eq!(w.get(&w.alice.api_key, tx).await.str("/state"), "offered");
    // The journal still audits.
    w.api
        .get("/v1/ledger/audit")
        .key(&w.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn a_fair_exchange_completes_after_the_warrant_is_revoked_once_a_is_released() {
    // A's signature was made under a valid warrant and released to B against B's escrow:
    // revoking the warrant afterwards must not leave B holding A's signature while the node
    // refuses B's (the exchange would no longer be fair).
    let w = World::new(None).await;
    let (tx, f, view) = fair_offer(&w, "f1").await;
    let serial = view.str("/warrant_a").to_string();
    send_escrow(&w, tx, &f).await.expect(StatusCode::OK);
    w.post(
        &w.bob.api_key,
        format!("/v1/warrants/{serial}/revoke"),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    let done = w
        .post(
            &w.alice.api_key,
            format!("/v1/receipts/{tx}/sign"),
            json!({"signature_b": sign_bls(&w.alice, &f).to_hex()}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(done.str("/state"), "signed");
    // New offers are refused under the revoked warrant.
    w.offer("Contract 89\n", true, "f2")
        .await
        .expect_error(StatusCode::FORBIDDEN, "no_warrant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_escrow_racing_a_good_one_cannot_abort_after_a_is_released() {
    let w = World::new(None).await;
    for round in 0..8 {
        let (tx, f, _) = fair_offer(&w, &format!("race-{round}")).await;
        let good = bls::encrypt_signature(
            &w.alice.bls,
            &w.arbiter,
            receipt::PARTY_DOMAIN,
            &f.party_part(),
        );
        let mut other = f;
        other.time += 1;
        let bad = bls::encrypt_signature(
            &w.alice.bls,
            &w.arbiter,
            receipt::PARTY_DOMAIN,
            &other.party_part(),
        );
        let path = format!("/v1/receipts/{tx}/escrow");
        let (g, b) = tokio::join!(
            w.post(
                &w.alice.api_key,
                path.clone(),
                json!({"ves": good.to_hex()})
            ),
            w.post(&w.alice.api_key, path.clone(), json!({"ves": bad.to_hex()})),
        );
        let view = w.get(&w.bob.api_key, tx).await.expect(StatusCode::OK);
        if g.status == StatusCode::OK {
            // A was released: the exchange must still be completable.
            assert_eq!(view.str("/state"), "escrowed", "round {round}: {}", b.body);
            w.post(
                &w.bob.api_key,
                format!("/v1/arbiter/{tx}/resolve"),
                json!({}),
            )
            .await
            .expect(StatusCode::OK);
        } else {
            assert_eq!(view.str("/state"), "aborted", "round {round}");
            assert!(view.body["signature_a"].is_null());
        }
    }
}

/// Offers and token issues are idempotent like the ledger (issue [6] item 12): a retry is the
/// first answer, the same key with another body is `idempotency_key_reused`, and a retry that
/// races the first request gets the same result.
async fn idempotent_walk(w: World) {
    w.warrant(&w.bob, Counterparties::Any, 30)
        .await
        .expect(StatusCode::OK);
    let first = w
        .offer("order 1", false, "o-1")
        .await
        .expect(StatusCode::CREATED);
    let again = w
        .offer("order 1", false, "o-1")
        .await
        .expect(StatusCode::OK);
    assert_eq!(tx_of(&again), tx_of(&first));
    w.offer("order 2", false, "o-1")
        .await
        .expect_error(StatusCode::CONFLICT, "idempotency_key_reused");
    // Racing retries: one receipt.
    let (a, b) = tokio::join!(
        w.offer("order 3", false, "o-3"),
        w.offer("order 3", false, "o-3")
    );
    assert!(
        a.status.is_success() && b.status.is_success(),
        "{} {}",
        a.body,
        b.body
    );
    assert_eq!(tx_of(&a), tx_of(&b));
    let listed = w
        .api
        .get("/v1/receipts")
        .key(&w.bob.api_key)
        .send()
        .await
        .expect(StatusCode::OK);
    let with_3 = listed
        .body
        .as_array()
        .expect("list")
        .iter()
        .filter(|r| r["transaction"] == tx_of(&a))
        .count();
    assert_eq!(with_3, 1, "{}", listed.body);

    // Tokens.
    let key = SigningKey::generate();
    let token = |holder: &str| {
        token_body(NewToken::signed(
            holder,
            "customer",
            &key,
            None,
            Some(2),
            None,
        ))
    };
    let issue = |body: Value| {
        w.api
            .post("/v1/tokens")
            .key(&w.api.admin)
            .idem("t-carol")
            .json(body)
            .send()
    };
    let first = issue(token("carol")).await.expect(StatusCode::CREATED);
    let again = issue(token("carol")).await.expect(StatusCode::OK);
    assert_eq!(again.str("/serial"), first.str("/serial"));
    issue(token("dave"))
        .await
        .expect_error(StatusCode::CONFLICT, "idempotency_key_reused");
    // One key, one party: carol's key for dave is refused, not a server error.
    w.api
        .post("/v1/tokens")
        .key(&w.api.admin)
        .idem("t-dave")
        .json(token("dave"))
        .send()
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let erin = SigningKey::generate();
    let erin_token = token_body(NewToken::signed(
        "erin",
        "customer",
        &erin,
        None,
        Some(2),
        None,
    ));
    let racing = |idem: &'static str| {
        w.api
            .post("/v1/tokens")
            .key(&w.api.admin)
            .idem(idem)
            .json(erin_token.clone())
            .send()
    };
    let (a, b) = tokio::join!(racing("t-erin"), racing("t-erin"));
    assert!(
        a.status.is_success() && b.status.is_success(),
        "{} {}",
        a.body,
        b.body
    );
    assert_eq!(a.str("/serial"), b.str("/serial"));
}

#[tokio::test]
async fn offers_and_tokens_are_idempotent() {
    idempotent_walk(World::new(None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_and_tokens_are_idempotent_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    idempotent_walk(World::new(Some(url)).await).await;
}

/// A fair exchange B leaves unanswered is aborted at the arbiter after the exchange timeout
/// (issue [6] item 14; `tally serve --exchange-timeout-hours`, 24 by default): the timers do it
/// for the originator, once; a late escrow is refused; an answered exchange is left alone.
async fn timeout_walk(w: World) {
    let (tx, f, _) = fair_offer(&w, "t1").await;
    let (answered, g, _) = fair_offer(&w, "t2").await;
    send_escrow(&w, answered, &g).await.expect(StatusCode::OK);
    let sweep = || async {
        w.api
            .node
            .receipts()
            .sweep_timeouts(100)
            .await
            .expect("sweep")
    };
    w.advance(86_399);
    assert_eq!(sweep().await, 0, "not yet");
    w.advance(2);
    assert_eq!(sweep().await, 1, "the unanswered one, not the escrowed one");
    assert_eq!(sweep().await, 0, "once");
    let r = w.get(&w.bob.api_key, tx).await.expect(StatusCode::OK);
    assert_eq!(r.str("/state"), "aborted");
    send_escrow(&w, tx, &f)
        .await
        .expect_error(StatusCode::CONFLICT, "exchange_aborted");
    let r = w.get(&w.bob.api_key, answered).await.expect(StatusCode::OK);
    assert_eq!(r.str("/state"), "escrowed");
}

#[tokio::test]
async fn an_unanswered_fair_exchange_times_out_into_an_abort() {
    timeout_walk(World::new(None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_fair_exchange_times_out_into_an_abort_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    timeout_walk(World::new(Some(url)).await).await;
}

/// A party certificate revoked by the operator signs no new receipt (a pending offer cannot
/// be signed, a new offer naming it is refused); a receipt completed before stands, and online
/// verification reports the revocation; a package that does not verify is answered as such.
async fn revocation_walk(w: World) {
    w.warrant(&w.bob, Counterparties::Names(vec!["alice".into()]), 30)
        .await
        .expect(StatusCode::OK);
    // A receipt completed before the revocation.
    let done = tx_of(
        &w.offer("Order 1\n", false, "r1")
            .await
            .expect(StatusCode::CREATED),
    );
    let f = fields_of(&w, &w.get(&w.alice.api_key, done).await);
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{done}/sign"),
        json!({"signature_b": sign_ed(&w.alice, &f)}),
    )
    .await
    .expect(StatusCode::OK);
    let bytes = w
        .api
        .get(&format!("/v1/receipts/{done}/package"))
        .key(&w.alice.api_key)
        .send()
        .await
        .expect(StatusCode::OK)
        .raw;
    let verify = |body: Vec<u8>| async {
        w.api
            .post("/v1/receipts/verify")
            .raw("application/octet-stream", body)
            .send()
            .await
    };
    let before = verify(bytes.clone()).await.expect(StatusCode::OK);
    assert_eq!(before.body["valid"], true, "{}", before.body);
    assert_eq!(before.body["revoked"], json!([]));
    assert_eq!(before.str("/party_b"), "alice");
    // An offer made before the revocation, to be signed after it.
    let pending = tx_of(
        &w.offer("Order 2\n", false, "r2")
            .await
            .expect(StatusCode::CREATED),
    );
    let f2 = fields_of(&w, &w.get(&w.alice.api_key, pending).await);

    // Only the operator revokes; revoking again answers the first revocation.
    w.api
        .post("/v1/parties/alice/revoke")
        .key(&w.alice.api_key)
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    w.api
        .post("/v1/parties/nobody/revoke")
        .key(&w.api.admin)
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    w.advance(1);
    let revoked = w
        .api
        .post("/v1/parties/alice/revoke")
        .key(&w.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        revoked.str("/certificate_serial"),
        w.alice.cert.serial_hex()
    );
    w.advance(1);
    let again = w
        .api
        .post("/v1/parties/alice/revoke")
        .key(&w.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(again.body, revoked.body);

    // Nothing new is signed with the revoked certificate.
    w.post(
        &w.alice.api_key,
        format!("/v1/receipts/{pending}/sign"),
        json!({"signature_b": sign_ed(&w.alice, &f2)}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_certificate");
    assert_eq!(
        w.get(&w.alice.api_key, pending).await.str("/state"),
        "offered"
    );
    w.offer("Order 3\n", false, "r3")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_certificate");

    // The receipt made before stands; online verification says the certificate is revoked
    // since.
    let after = verify(bytes.clone()).await.expect(StatusCode::OK);
    assert_eq!(after.body["valid"], true, "{}", after.body);
    assert_eq!(after.str("/revoked/0/what"), "party B");
    assert_eq!(after.str("/revoked/0/serial"), w.alice.cert.serial_hex());
    assert_eq!(after.body["revoked"][0]["before_receipt"], false);

    // Not a package, and a package altered after signing.
    verify(b"not a package".to_vec())
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_receipt");
    let mut pkg = Package::from_bytes(&bytes).expect("package");
    pkg.record = Some("Order 1\nand a free car\n".into());
    let altered = verify(pkg.to_bytes()).await.expect(StatusCode::OK);
    assert_eq!(altered.body["valid"], false);
    assert!(altered.body["problem"].is_string(), "{}", altered.body);
}

#[tokio::test]
async fn a_revoked_party_certificate_signs_nothing_new_and_online_verification_reports_it() {
    revocation_walk(World::new(None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_party_certificate_signs_nothing_new_and_online_verification_reports_it_on_postgres()
 {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    revocation_walk(World::new(Some(url)).await).await;
}

/// An arbiter node (issue [6] item 14) checks what a receipt node shows it against the CA it
/// trusts, opens the escrows with its own key, and keeps the first decision per exchange.
/// The test plays the receipt node: bob's warrant names a proxy BLS key the test holds.
#[tokio::test]
async fn an_arbiter_node_checks_the_case_and_keeps_its_first_decision() {
    arbiter_walk(None).await;
}

/// The same with the arbiter node's decisions in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arbiter_node_checks_the_case_and_keeps_its_first_decision_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    arbiter_walk(Some(url)).await;
}

async fn arbiter_walk(database_url: Option<String>) {
    let w = World::new(None).await;
    let trusts = w.ca.clone();
    let arbiter = Api::with(
        move |c| NodeConfig {
            arbiter_role: Some(tally_service::receipt::remote::ArbiterRole { trusts }),
            database_url,
            ..c
        },
        HttpOptions {
            arbiter_only: true,
            ..HttpOptions::default()
        },
    )
    .await;
    arbiter
        .get("/v1/receipts/node")
        .key(&arbiter.admin)
        .send()
        .await
        .expect(StatusCode::NOT_FOUND);
    let key = ArbiterPublicKey::from_hex(
        arbiter
            .get("/v1/arbiter/key")
            .send()
            .await
            .expect(StatusCode::OK)
            .str("/arbiter_key"),
    )
    .expect("arbiter key");

    // The receipt node the test plays: its proxy key, named by bob's warrant.
    let proxy = BlsSecretKey::from_seed(&[42; 32]);
    let now = w.now();
    let warrant = issue_warrant(
        &w.bob.cert,
        &w.bob.key,
        &w.server_key,
        "tally receipt service",
        &WarrantTerms {
            counterparties: Counterparties::Any,
            bls_key: Some(proxy.public_key().to_bytes()),
        },
        now,
        now.plus_seconds(86_400),
    )
    .expect("warrant");
    let fields = |tx: u64| Fields {
        version: receipt::VERSION_BLS,
        server_id: [7; 32],
        transaction: tx,
        time: now.as_micros() / 1_000_000,
        content_hash: receipt::content_hash("Contract 9\n"),
        party_a: tally_kernel::crypto::kdf::sha256(&w.bob.key.verifying_key().to_bytes()),
        party_b: tally_kernel::crypto::kdf::sha256(&w.alice.key.verifying_key().to_bytes()),
    };
    let case = |f: &Fields, cert_b: &Certificate, ask: Value| {
        json!({"fields": hex::encode(f.party_part()), "certificate_a": hex::encode(w.bob.cert.as_der()),
               "warrant_a": hex::encode(warrant.as_der()), "certificate_b": hex::encode(cert_b.as_der()),
               "ask": ask})
    };
    let decide = |body: Value| {
        arbiter
            .post("/v1/arbiter/decide")
            .key(&arbiter.admin)
            .json(body)
            .send()
    };
    let msg = |f: &Fields| f.party_part();
    let escrow_a =
        |f: &Fields| bls::encrypt_signature(&proxy, &key, receipt::PARTY_DOMAIN, &msg(f)).to_hex();
    let sig_b = |f: &Fields| w.alice.bls.sign(receipt::PARTY_DOMAIN, &msg(f)).to_hex();
    // B's resolve of `f`, showing A's escrow of `escrowed`.
    let by_b = |f: &Fields, escrowed: &Fields| json!({"kind": "resolve_by_client", "signature_b": sig_b(f), "escrow_a": escrow_a(escrowed)});

    // B resolves with its signature: the arbiter opens A's escrow and hands A's signature over;
    // asked again, and by an abort, it answers from that decision.
    let f1 = fields(1);
    let resolve = by_b(&f1, &f1);
    let r = decide(case(&f1, &w.alice.cert, resolve.clone()))
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/decision"), "resolved", "{}", r.body);
    let a_sig = BlsSignature::from_hex(r.str("/signature")).expect("A's signature");
    proxy
        .public_key()
        .verify(receipt::PARTY_DOMAIN, &msg(&f1), &a_sig)
        .expect("A's signature, opened by the arbiter");
    let again = decide(case(&f1, &w.alice.cert, resolve.clone()))
        .await
        .expect(StatusCode::OK);
    assert_eq!(again.body, r.body);
    // B may ask itself, with no key (its signature authenticates it): the same ruling; an
    // abort is not taken that way.
    let by_b_itself = arbiter
        .post("/v1/arbiter/resolve")
        .json(case(&f1, &w.alice.cert, resolve))
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(by_b_itself.body, r.body);
    arbiter
        .post("/v1/arbiter/resolve")
        .json(case(&f1, &w.alice.cert, json!({"kind": "abort"})))
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let abort = decide(case(&f1, &w.alice.cert, json!({"kind": "abort"})))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (abort.str("/decision"), abort.str("/signature")),
        ("resolved", sig_b(&f1).as_str()),
        "an abort after a resolve gets B's signature"
    );

    // Another exchange shown under the same transaction id is refused, not answered from
    // the first one's decision.
    let mut other = fields(1);
    other.content_hash = receipt::content_hash("Another contract\n");
    decide(case(&other, &w.alice.cert, json!({"kind": "abort"})))
        .await
        .expect_error(StatusCode::CONFLICT, "receipt_state");

    // Aborted first: no resolve succeeds afterwards.
    let f2 = fields(2);
    let r = decide(case(&f2, &w.alice.cert, json!({"kind": "abort"})))
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/decision"), "aborted");
    let r = decide(case(&f2, &w.alice.cert, by_b(&f2, &f2)))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (r.str("/decision"), r.str("/refused")),
        ("aborted", "aborted")
    );

    // An escrow that does not open to A's signature fails the exchange, for good.
    let f3 = fields(3);
    let r = decide(case(&f3, &w.alice.cert, by_b(&f3, &f1)))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (r.str("/decision"), r.str("/refused")),
        ("failed", "bad_escrow")
    );

    // What the arbiter does not trust changes nothing: a B certificate from another CA, a
    // forged signature of B, fields of another length.
    let f4 = fields(4);
    let other_ca =
        tally_kernel::crypto::CertificateAuthority::generate("Other CA", now, 30).expect("ca");
    let stranger = other_ca
        .issue(
            "alice",
            &w.alice.key.verifying_key(),
            "customer",
            now,
            now.plus_seconds(86_400),
            &[],
        )
        .expect("cert");
    decide(case(&f4, &stranger, json!({"kind": "abort"})))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_certificate");
    let forged = w.bob.bls.sign(receipt::PARTY_DOMAIN, &msg(&f4)).to_hex();
    let r = decide(case(
        &f4,
        &w.alice.cert,
        json!({"kind": "resolve_by_client",
            "signature_b": forged, "escrow_a": escrow_a(&f4)}),
    ))
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let mut short = case(&f4, &w.alice.cert, json!({"kind": "abort"}));
    short["fields"] = json!("00");
    decide(short)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_receipt");
    // …so exchange 4 is still open: B's good resolve succeeds.
    let r = decide(case(&f4, &w.alice.cert, by_b(&f4, &f4)))
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/decision"), "resolved");
    // Without a key of the arbiter node, nothing is asked.
    arbiter
        .post("/v1/arbiter/decide")
        .json(case(&f4, &w.alice.cert, json!({"kind": "abort"})))
        .send()
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}
