//! The out-of-band world of the HTTP tests: a node with a dev inbox and a test clock, the
//! operator's settlement account, customers alice (100.00 EUR) and bob (20.00 EUR) with
//! verified dev addresses, a merchant `shop`, and helpers to open and verify sessions.

use super::{Api, Reply};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tally_http::HttpOptions;
use tally_kernel::Timestamp;
use tally_kernel::crypto::VerifyingKey;
use tally_kernel::crypto::canonical::SignedRecord;
use tally_service::{NodeClock, NodeConfig};
/// The first run of 6 to 10 digits after the word "code" in a message body.
pub fn code_in(body: &str) -> String {
    let at = body.find("code").expect("the message names a code");
    body[at..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|run| (6..=10).contains(&run.len()))
        .expect("a code of 6 to 10 digits")
        .to_string()
}

/// A node with the operator's settlement account, customers alice (100.00 EUR) and bob
/// (20.00 EUR) with verified dev addresses, and a merchant `shop`.
pub struct World {
    pub api: Api,
    pub alice: String,
    pub bob: String,
    pub shop: String,
    pub alice_eur: String,
    pub bob_eur: String,
    pub shop_eur: String,
    pub settlement: String,
    /// The test's clock, µs; the node reads it.
    pub clock: Arc<AtomicI64>,
}

impl World {
    pub async fn new() -> World {
        World::with(|c| c).await
    }

    pub async fn with(config: impl FnOnce(NodeConfig) -> NodeConfig) -> World {
        let clock = Arc::new(AtomicI64::new(Timestamp::now().as_micros()));
        let c = clock.clone();
        let api = Api::with(
            move |base| {
                config(NodeConfig {
                    dev: true,
                    clock: NodeClock(Some(Arc::new(move || Timestamp(c.load(Ordering::SeqCst))))),
                    ..base
                })
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
        for (to, amount, key) in [
            (&alice_eur, "100.00 EUR", "fund-a"),
            (&bob_eur, "20.00 EUR", "fund-b"),
        ] {
            api.post("/v1/transfers")
                .key(&api.admin)
                .idem(key)
                .json(json!({"debit_account": settlement, "credit_account": to, "amount": amount}))
                .send()
                .await
                .expect(StatusCode::CREATED);
        }
        let w = World {
            api,
            alice,
            bob,
            shop,
            alice_eur,
            bob_eur,
            shop_eur,
            settlement,
            clock,
        };
        for (user, key) in [("alice", w.alice.clone()), ("bob", w.bob.clone())] {
            let r = w
                .api
                .post(&format!("/v1/subscribers/{user}/addresses"))
                .key(&key)
                .json(json!({"channel": "dev", "address": user}))
                .send()
                .await
                .expect(StatusCode::CREATED);
            assert_eq!(r.str("/application"), "verify_address");
            let session = r.str("/session").to_string();
            let code = w.code_for(user, &session).await;
            w.verify(&session, &code, None).await.expect(StatusCode::OK);
        }
        let r = w
            .api
            .get("/v1/subscribers/alice/addresses")
            .key(&w.alice)
            .send()
            .await
            .expect(StatusCode::OK);
        assert!(r.body[0]["verified_at"].is_number(), "{}", r.body);
        w
    }

    /// The code of `session` from `address`'s dev inbox (checked to be that session's).
    pub async fn code_for(&self, address: &str, session: &str) -> String {
        let r = self.inbox(address).await;
        let m = r
            .body
            .as_array()
            .and_then(|all| all.iter().find(|m| m["data"]["session"] == session))
            .unwrap_or_else(|| panic!("no code for {session} in {}", r.body));
        code_in(m["body"].as_str().expect("body"))
    }

    pub async fn inbox(&self, address: &str) -> Reply {
        self.api
            .get(&format!("/v1/dev/inbox/{address}?limit=50"))
            .key(&self.api.admin)
            .send()
            .await
            .expect(StatusCode::OK)
    }

    pub async fn open(&self, key: &str, body: Value) -> Reply {
        self.api
            .post("/v1/oob/sessions")
            .key(key)
            .json(body)
            .send()
            .await
    }

    /// Opens a secured session and returns (session number, code, the session JSON).
    pub async fn open_secured(&self, key: &str, body: Value) -> (String, String, Value) {
        let user = body["user"].as_str().expect("user").to_string();
        let r = self.open(key, body).await.expect(StatusCode::CREATED);
        assert_eq!(r.str("/outcome"), "secured", "{}", r.body);
        let session = r.str("/session/session").to_string();
        let code = self.code_for(&user, &session).await;
        (session, code, r.body["session"].clone())
    }

    pub async fn verify(&self, session: &str, code: &str, confirm: Option<Value>) -> Reply {
        let mut body = json!({ "code": code });
        if let Some(c) = confirm {
            body["confirm"] = c;
        }
        self.api
            .post(&format!("/v1/oob/sessions/{session}/verify"))
            .json(body)
            .send()
            .await
    }

    /// A payment of alice to the shop, from the account she names (without contract).
    pub fn payment(&self, amount: &str, description: &str) -> Value {
        json!({"user": "alice", "application": "payment", "payer_account": self.alice_eur,
               "merchant_account": self.shop_eur, "amount": amount, "description": description})
    }

    /// A certified transfer from alice to bob.
    pub fn transfer(&self, amount: &str, memo: &str) -> Value {
        json!({"user": "alice", "application": "transfer", "debit_account": self.alice_eur,
               "credit_account": self.bob_eur, "amount": amount, "memo": memo})
    }

    pub async fn balance(&self, id: &str) -> i64 {
        self.api.balance(id).await
    }

    pub async fn balances(&self) -> [i64; 3] {
        [
            self.balance(&self.alice_eur).await,
            self.balance(&self.bob_eur).await,
            self.balance(&self.shop_eur).await,
        ]
    }

    pub async fn available(&self, id: &str) -> i64 {
        self.api
            .account(&self.api.admin, id)
            .await
            .i64("/available_minor")
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.fetch_add(seconds * 1_000_000, Ordering::SeqCst);
    }

    pub async fn audit_passes(&self) {
        let r = self
            .api
            .get("/v1/ledger/audit")
            .key(&self.api.admin)
            .send()
            .await
            .expect(StatusCode::OK);
        assert_eq!(r.body["ok"], true, "{}", r.body);
    }

    pub fn node_key(&self) -> VerifyingKey {
        VerifyingKey::from_hex(&self.api.node.node_public_key()).expect("node key")
    }

    /// Checks a certificate from a result: signed by the node, naming `kind`.
    pub fn check_certificate(&self, cert: &Value, kind: &str) -> Value {
        let record: SignedRecord = serde_json::from_value(cert.clone()).expect("a signed record");
        let body: Value = record.open(&self.node_key()).expect("signed by the node");
        assert_eq!(body["kind"], kind, "{body}");
        body
    }
}

impl World {
    /// `POST path` with `key`, an `Idempotency-Key` when given, and a JSON body.
    pub async fn post(&self, path: &str, key: &str, idem: Option<&str>, body: Value) -> Reply {
        let mut call = self.api.post(path).key(key);
        if let Some(i) = idem {
            call = call.idem(i);
        }
        call.json(body).send().await
    }

    /// The shop's product "Album" at 9.90 EUR, paid to its account, with one entry, on sale;
    /// its id.
    pub async fn album(&self) -> String {
        let r = self
            .api
            .post("/v1/products")
            .key(&self.shop)
            .idem("album")
            .json(
                json!({"title": "Album", "price": "9.90 EUR", "pay_to": self.shop_eur,
                         "licence": "Personal use.", "instructions": "Enjoy."}),
            )
            .send()
            .await
            .expect(StatusCode::CREATED);
        let product = r.str("/id").to_string();
        self.api
            .call(
                "PUT",
                &format!("/v1/products/{product}/entries/a.bin?kind=product"),
            )
            .key(&self.shop)
            .raw("application/octet-stream", vec![5_u8; 4096])
            .send()
            .await
            .expect(StatusCode::OK);
        self.api
            .post(&format!("/v1/products/{product}/publish"))
            .key(&self.shop)
            .send()
            .await
            .expect(StatusCode::OK);
        product
    }
}
