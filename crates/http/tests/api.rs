//! The HTTP API at its boundary: `router(node, options).oneshot(request)` against a real node on
//! SQLite in a temporary directory. No sockets, no sleeps. Every test checks the status *and*
//! the stable `error.code`, and, for writes, what the ledger shows afterwards.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tally_http::HttpOptions;
use tally_kernel::Timestamp;
use tally_service::NodeConfig;
use tower::ServiceExt;

mod common;
use common::{Api, Reply};

/// A node with a settlement account, a customer (alice, funded with 100.00 EUR) and a merchant.
struct World {
    api: Api,
    alice: String,
    alice_eur: String,
    shop: String,
    shop_eur: String,
    settlement: String,
}

impl World {
    async fn new() -> World {
        World::from(Api::start().await).await
    }

    async fn from(api: Api) -> World {
        let settlement = api
            .open(&api.admin, json!({"currency": "EUR", "kind": "settlement", "debits_must_not_exceed_credits": false}))
            .await;
        let alice = api.issue_key("customer", "alice").await;
        let shop = api.issue_key("merchant", "shop").await;
        let alice_eur = api.open(&alice, json!({"currency": "EUR"})).await;
        let shop_eur = api.open(&shop, json!({"currency": "EUR"})).await;
        api.post("/v1/transfers")
            .key(&api.admin)
            .idem("fund-alice")
            .json(json!({"debit_account": settlement, "credit_account": alice_eur, "amount": "100.00 EUR"}))
            .send()
            .await
            .expect(StatusCode::CREATED);
        World {
            api,
            alice,
            alice_eur,
            shop,
            shop_eur,
            settlement,
        }
    }

    /// `POST /v1/transfers` as Alice.
    async fn transfer(&self, idem: Option<&str>, body: Value) -> Reply {
        let call = self.api.post("/v1/transfers").key(&self.alice);
        let call = match idem {
            Some(k) => call.idem(k),
            None => call,
        };
        call.json(body).send().await
    }

    fn pay(&self, amount: Value) -> Value {
        let mut body = json!({"debit_account": self.alice_eur, "credit_account": self.shop_eur});
        if let (Some(obj), Some(extra)) = (body.as_object_mut(), amount.as_object()) {
            obj.extend(extra.clone());
        }
        body
    }
}

#[tokio::test]
async fn healthz_openapi_and_metrics_need_no_key() {
    let api = Api::start().await;
    let r = api.get("/healthz").send().await.expect(StatusCode::OK);
    assert_eq!(r.body, json!({"status": "ok"}));
    assert!(
        r.header("x-request-id").is_some_and(|id| !id.is_empty()),
        "a request id is generated"
    );

    let r = api
        .get("/healthz")
        .header("x-request-id", "trace-42")
        .send()
        .await;
    assert_eq!(
        r.header("x-request-id"),
        Some("trace-42"),
        "a client's plain request id is echoed"
    );
    let r = api
        .get("/healthz")
        .header("x-request-id", "bad id\twith tab")
        .send()
        .await;
    assert!(
        r.header("x-request-id")
            .is_some_and(|id| id != "bad id\twith tab" && !id.is_empty())
    );

    let r = api.get("/openapi.json").send().await.expect(StatusCode::OK);
    assert_eq!(r.str("/openapi"), "3.1.0");
    assert!(
        r.body.pointer("/paths/~1v1~1transfers/post").is_some(),
        "documents POST /v1/transfers"
    );
    assert!(
        r.body
            .pointer("/components/securitySchemes/api_key")
            .is_some()
    );

    let r = api.get("/metrics").send().await.expect(StatusCode::OK);
    let text = r.body.as_str().expect("plain text");
    assert!(text.contains("tally_ledger_accounts"), "{text}");
    assert!(
        text.contains("tally_http_requests_total") && text.contains(r#"route="/healthz""#),
        "{text}"
    );
    assert!(
        text.contains("tally_http_request_duration_seconds_bucket"),
        "latency is a histogram: {text}"
    );
}

/// Every JSON request body names its fields (a schema with properties, or one of such per
/// application), so a contract tester can build valid bodies instead of stopping at 400.
#[test]
fn every_json_request_body_is_described_by_its_fields() {
    let json = serde_json::to_value(tally_http::openapi()).expect("serialises");
    let schemas = &json["components"]["schemas"];
    // A schema's object branches: itself, or the members of its `oneOf`/`allOf`.
    fn has_fields(schema: &Value, schemas: &Value) -> bool {
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            let name = target.trim_start_matches("#/components/schemas/");
            return has_fields(&schemas[name], schemas);
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            return all.iter().all(|s| has_fields(s, schemas));
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            // An optional body is `oneOf: [the body, null]`.
            return one
                .iter()
                .filter(|s| s["type"] != "null")
                .all(|s| has_fields(s, schemas));
        }
        schema
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty())
    }
    let mut bare = Vec::new();
    let mut described = 0;
    for (path, item) in json["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") else {
                continue;
            };
            if has_fields(schema, schemas) {
                described += 1;
            } else {
                bare.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "request bodies without their fields: {bare:?}"
    );
    assert!(
        described >= 28,
        "only {described} JSON request bodies found"
    );
    let session = &schemas["AppRequest"]["oneOf"];
    assert!(
        session.as_array().is_some_and(|apps| apps.len() >= 9),
        "the session body is described per application: {session}"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_the_table_is_complete() {
    let mut api = Api::start().await;
    let doc = tally_http::openapi();
    let mut documented = Vec::new();
    let methods = ["get", "post", "delete", "put", "patch"];
    let json = serde_json::to_value(&doc).expect("serialises");
    for (path, item) in json["paths"].as_object().expect("paths") {
        for method in methods {
            if item.get(method).is_none() {
                continue;
            }
            documented.push(format!("{} {path}", method.to_uppercase()));
            let uri = path
                .replace("{id}", "0190b0a4-0000-7000-8000-000000000000")
                .replace("{address}", "alice")
                .replace("{user}", "alice")
                .replace("{owner}", "alice")
                .replace("{session}", "00000000000000000000000000000000")
                .replace("{name}", "bank")
                .replace("{code}", "PS73H-MSDKV-TWZ18-FFVFH-1");
            let secured = item[method].get("security").is_some();
            // A fresh router per route: its failed-authentication budget per peer (a burst
            // of 40) is smaller than the number of routes that answer 401 here.
            api.app = tally_http::router(api.node.clone(), tally_http::HttpOptions::default());
            let r = api.call(&method.to_uppercase(), &uri).send().await;
            assert!(
                !matches!(
                    r.status,
                    StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
                ) || path.starts_with("/v1/"),
                "{method} {path} -> {}",
                r.status
            );
            if path.starts_with("/v1/") && secured {
                // Unauthenticated: the route exists, so the extractor answers 401 before anything else.
                assert_eq!(
                    (r.status, r.code()),
                    (StatusCode::UNAUTHORIZED, "unauthorized"),
                    "{method} {path}"
                );
            } else if path.starts_with("/v1/") {
                // Routes without an API key (a session number or an access token is the
                // credential) answer for the thing asked about, never "no such route".
                let message = r.body.pointer("/error/message").and_then(Value::as_str);
                assert!(
                    r.status != StatusCode::METHOD_NOT_ALLOWED && message != Some("no such route"),
                    "{method} {path}: {}",
                    r.body
                );
            }
        }
    }
    documented.sort();
    let expected = [
        "DELETE /v1/api-keys/{id}",
        "DELETE /v1/products/{id}",
        "GET /healthz",
        "GET /metrics",
        "GET /openapi.json",
        "GET /v1/accounts",
        "GET /v1/accounts/{id}",
        "GET /v1/accounts/{id}/history",
        "GET /v1/accounts/{id}/transfers",
        "GET /v1/api-keys",
        "GET /v1/arbiter/key",
        "GET /v1/billing/records",
        "GET /v1/certificates",
        "GET /v1/clearing",
        "GET /v1/dev/inbox/{address}",
        "GET /v1/fx",
        "GET /v1/ledger/audit",
        "GET /v1/mail",
        "GET /v1/node",
        "GET /v1/oob/sessions",
        "GET /v1/oob/sessions/{session}",
        "GET /v1/oob/whoami",
        "GET /v1/pad-providers/{name}",
        "GET /v1/pad-providers/{name}/requests/{request}",
        "GET /v1/pads/{pad}",
        "GET /v1/peers",
        "GET /v1/peers/{peer}",
        "GET /v1/products",
        "GET /v1/products/{id}",
        "GET /v1/receipts",
        "GET /v1/receipts/node",
        "GET /v1/receipts/{transaction}",
        "GET /v1/receipts/{transaction}/package",
        "GET /v1/receipts/{transaction}/warrant",
        "GET /v1/reports/sales",
        "GET /v1/sales/by-reference/{code}",
        "GET /v1/sales/{id}",
        "GET /v1/sales/{id}/key",
        "GET /v1/sales/{id}/package",
        "GET /v1/subscribers/{user}/addresses",
        "GET /v1/subscribers/{user}/statement",
        "GET /v1/tokens",
        "GET /v1/tokens/{serial}/writes",
        "GET /v1/trading-sessions",
        "GET /v1/trading-sessions/{session}",
        "GET /v1/trading-sessions/{session}/order-keys/{order}",
        "GET /v1/trading-sessions/{session}/order-keys/{order}/escrow",
        "GET /v1/trading-sessions/{session}/receipts",
        "GET /v1/transfers",
        "GET /v1/transfers/changes",
        "GET /v1/transfers/{id}",
        "GET /v1/trustee/credit/{user}",
        "GET /v1/vouchers/{serial}",
        "GET /v1/warrants",
        "POST /v1/accounts",
        "POST /v1/api-keys",
        "POST /v1/arbiter/decide",
        "POST /v1/arbiter/resolve",
        "POST /v1/arbiter/{transaction}/abort",
        "POST /v1/arbiter/{transaction}/resolve",
        "POST /v1/complaints",
        "POST /v1/exchanges",
        "POST /v1/holds",
        "POST /v1/holds/{id}/post",
        "POST /v1/holds/{id}/void",
        "POST /v1/offers",
        "POST /v1/oob/sessions",
        "POST /v1/oob/sessions/{session}/cancel",
        "POST /v1/oob/sessions/{session}/verify",
        "POST /v1/oob/sign-out",
        "POST /v1/pad-accounts",
        "POST /v1/pad-accounts/{account}/pads",
        "POST /v1/pad-accounts/{account}/pads/{pad}/cancel",
        "POST /v1/pad-accounts/{account}/pads/{pad}/cancel-by-code",
        "POST /v1/pad-accounts/{account}/pads/{pad}/transfer",
        "POST /v1/pad-accounts/{account}/show",
        "POST /v1/pad-escrows/{request}/verdict",
        "POST /v1/pad-frames",
        "POST /v1/pad-providers/{name}/pay",
        "POST /v1/pad-providers/{name}/payout-pad",
        "POST /v1/pad-providers/{name}/replies",
        "POST /v1/pad-settlements",
        "POST /v1/pad-stock",
        "POST /v1/pad-stock/{serial}/activate",
        "POST /v1/pad-stock/{serial}/cancel",
        "POST /v1/pads",
        "POST /v1/parties/{name}/revoke",
        "POST /v1/payments/{id}/refund",
        "POST /v1/peer/messages",
        "POST /v1/peers",
        "POST /v1/peers/{peer}/ping",
        "POST /v1/products",
        "POST /v1/products/{id}/publish",
        "POST /v1/receipts",
        "POST /v1/receipts/verify",
        "POST /v1/receipts/{transaction}/ack",
        "POST /v1/receipts/{transaction}/escrow",
        "POST /v1/receipts/{transaction}/sign",
        "POST /v1/receivers/{name}/notifications",
        "POST /v1/sales",
        "POST /v1/sales/pay",
        "POST /v1/sales/{id}/acknowledge",
        "POST /v1/sales/{id}/cancel",
        "POST /v1/subscribers/{user}",
        "POST /v1/subscribers/{user}/addresses",
        "POST /v1/subscribers/{user}/certificate",
        "POST /v1/tokens",
        "POST /v1/trading-sessions",
        "POST /v1/trading-sessions/{session}/answer",
        "POST /v1/trading-sessions/{session}/end",
        "POST /v1/trading-sessions/{session}/order-keys",
        "POST /v1/trading-sessions/{session}/record",
        "POST /v1/trading-sessions/{session}/transactions",
        "POST /v1/trading-sessions/{session}/verdict",
        "POST /v1/transfers",
        "POST /v1/transfers/batch",
        "POST /v1/trustee/settle",
        "POST /v1/vouchers",
        "POST /v1/vouchers/redeem",
        "POST /v1/vouchers/{serial}/cancel",
        "POST /v1/vouchers/{serial}/sell",
        "POST /v1/warrants",
        "POST /v1/warrants/{serial}/revoke",
        "PUT /v1/fx/{from}/{to}",
        "PUT /v1/oob/rules/{owner}",
        "PUT /v1/pad-accounts/{account}/pads/{pad}/allow",
        "PUT /v1/pad-accounts/{account}/recovery",
        "PUT /v1/pad-aliases/{key}",
        "PUT /v1/pad-providers/{name}",
        "PUT /v1/pad-tariff/{currency}",
        "PUT /v1/products/{id}/entries/{name}",
        "PUT /v1/receivers/{name}",
        "PUT /v1/session-merchants/{name}",
        "PUT /v1/session-merchants/{name}/agent-key",
        "PUT /v1/trading-sessions/{session}/order-keys/{order}/escrow",
        "PUT /v1/trustee/credit/{user}",
    ];
    assert_eq!(documented, expected);
}

#[tokio::test]
async fn v1_needs_a_known_key() {
    let api = Api::start().await;
    let r = api
        .get("/v1/accounts")
        .send()
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    api.get("/v1/accounts")
        .key("tally_admin_not-a-real-key")
        .send()
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    api.get("/v1/accounts")
        .header("authorization", &format!("Basic {}", api.admin))
        .send()
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    api.get("/v1/accounts")
        .key(&api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn customers_see_and_open_only_their_own_accounts() {
    let api = Api::start().await;
    let alice = api.issue_key("customer", "alice").await;
    let bob = api.issue_key("customer", "bob").await;

    let r = api
        .post("/v1/accounts")
        .key(&alice)
        .json(json!({"currency": "EUR"}))
        .send()
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(
        (r.str("/owner"), r.str("/kind"), r.str("/currency")),
        ("alice", "customer", "EUR")
    );
    assert_eq!(
        r.body["flags"]["debits_must_not_exceed_credits"],
        json!(true)
    );
    assert_eq!(
        (r.i64("/balance/minor"), r.str("/balance_display")),
        (0, "0.00 EUR")
    );
    assert_eq!(r.i64("/available_minor"), 0);
    let id = r.str("/id").to_string();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/accounts/{id}").as_str())
    );

    api.post("/v1/accounts")
        .key(&alice)
        .json(json!({"currency": "EUR", "owner": "bob"}))
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    api.post("/v1/accounts")
        .key(&alice)
        .json(json!({"currency": "EUR", "debits_must_not_exceed_credits": false}))
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let r = api
        .post("/v1/accounts")
        .key(&alice)
        .json(json!({"currency": "ZZZ"}))
        .send()
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(r.body["error"]["details"]["field"], json!("currency"));

    // Bob cannot see Alice's account, nor list her accounts.
    api.get(&format!("/v1/accounts/{id}"))
        .key(&bob)
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "account_not_found");
    api.get(&format!("/v1/accounts/{id}/transfers"))
        .key(&bob)
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "account_not_found");
    api.get("/v1/accounts?owner=alice")
        .key(&bob)
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let r = api
        .get("/v1/accounts")
        .key(&alice)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body.as_array().map(Vec::len), Some(1));
    assert_eq!(r.str("/0/id"), id);
    let r = api
        .get("/v1/accounts?owner=alice")
        .key(&api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.str("/0/id"), id, "the operator lists anyone's accounts");

    api.get("/v1/accounts/not-a-uuid")
        .key(&alice)
        .send()
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn open_account_is_idempotent_with_a_key() {
    let api = Api::start().await;
    let alice = api.issue_key("customer", "alice").await;
    let first = api
        .post("/v1/accounts")
        .key(&alice)
        .idem("acct-1")
        .json(json!({"currency": "EUR"}))
        .send()
        .await;
    let first = first.expect(StatusCode::CREATED);
    let again = api
        .post("/v1/accounts")
        .key(&alice)
        .idem("acct-1")
        .json(json!({"currency": "EUR"}))
        .send()
        .await;
    let again = again.expect(StatusCode::OK);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(first.str("/id"), again.str("/id"));
    let list = api.get("/v1/accounts").key(&alice).send().await;
    assert_eq!(
        list.body.as_array().map(Vec::len),
        Some(1),
        "one account, not two"
    );
}

#[tokio::test]
async fn transfers_move_money_once_and_refuse_what_the_ledger_refuses() {
    money_rules(World::new().await).await;
}

#[tokio::test]
async fn transfers_move_money_once_and_refuse_what_the_ledger_refuses_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    let api = Api::with(
        |c| NodeConfig {
            database_url: Some(url),
            ..c
        },
        HttpOptions::default(),
    )
    .await;
    money_rules(World::from(api).await).await;
}

async fn money_rules(w: World) {
    let api = &w.api;
    assert_eq!(api.balance(&w.alice_eur).await, 10_000);
    assert_eq!(api.balance(&w.settlement).await, -10_000);

    // Amount as a display string.
    let r = api
        .post("/v1/transfers")
        .key(&w.alice)
        .idem("order-1")
        .json(w.pay(json!({"amount": "12.50 EUR", "memo": "coffee"})))
        .send()
        .await;
    let r = r.expect(StatusCode::CREATED);
    assert_eq!(r.body["amount"], json!({"minor": 1250, "currency": "EUR"}));
    assert_eq!(
        (r.str("/amount_display"), r.str("/kind"), r.str("/state")),
        ("12.50 EUR", "single", "posted")
    );
    assert_eq!(
        (r.str("/debit_account"), r.str("/credit_account")),
        (w.alice_eur.as_str(), w.shop_eur.as_str())
    );
    assert_eq!(r.body["expires_at"], Value::Null);
    assert_eq!(r.str("/memo"), "coffee");
    let id = r.str("/id").to_string();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/transfers/{id}").as_str())
    );

    // The same request again: 200, marked as a replay, same transfer; the money moved once.
    let again = api
        .post("/v1/transfers")
        .key(&w.alice)
        .idem("order-1")
        .json(w.pay(json!({"amount": "12.50 EUR", "memo": "coffee"})))
        .send()
        .await;
    let again = again.expect(StatusCode::OK);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(again.str("/id"), id);
    assert_eq!(api.balance(&w.alice_eur).await, 10_000 - 1250);
    assert_eq!(api.balance(&w.shop_eur).await, 1250);

    // The same key for a different request.
    api.post("/v1/transfers")
        .key(&w.alice)
        .idem("order-1")
        .json(w.pay(json!({"amount": "13.00 EUR"})))
        .send()
        .await
        .expect_error(StatusCode::CONFLICT, "idempotency_key_reused");

    // Minor units + currency; both parties can read it, others cannot.
    let r = api
        .post("/v1/transfers")
        .key(&w.alice)
        .idem("order-2")
        .json(w.pay(json!({"amount_minor": 250, "currency": "EUR"})))
        .send()
        .await;
    let r = r.expect(StatusCode::CREATED);
    let second = r.str("/id").to_string();
    api.get(&format!("/v1/transfers/{second}"))
        .key(&w.shop)
        .send()
        .await
        .expect(StatusCode::OK);
    let bob = api.issue_key("customer", "bob").await;
    api.get(&format!("/v1/transfers/{second}"))
        .key(&bob)
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "transfer_not_found");
    let history = api
        .get(&format!("/v1/accounts/{}/transfers?limit=1", w.alice_eur))
        .key(&w.alice)
        .send()
        .await;
    let history = history.expect(StatusCode::OK);
    assert_eq!(history.body.as_array().map(Vec::len), Some(1));
    assert_eq!(history.str("/0/id"), second, "newest first");

    // More than Alice has.
    let r = api
        .post("/v1/transfers")
        .key(&w.alice)
        .idem("too-much")
        .json(w.pay(json!({"amount": "500.00 EUR"})))
        .send()
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    assert_eq!(r.i64("/error/details/available_minor"), 10_000 - 1250 - 250);
    assert_eq!(r.i64("/error/details/needed_minor"), 50_000);
    assert_eq!(
        api.balance(&w.alice_eur).await,
        10_000 - 1500,
        "a refused transfer moves nothing"
    );

    // Idempotency-Key is required for money movement, and must be plain.
    let one_euro = w.pay(json!({"amount": "1.00 EUR"}));
    w.transfer(None, one_euro.clone())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "idempotency_key_required");
    for bad in ["has space".to_string(), "k".repeat(129)] {
        w.transfer(Some(&bad), one_euro.clone())
            .await
            .expect_error(StatusCode::BAD_REQUEST, "idempotency_key_invalid");
    }

    // Bodies that are not JSON of the expected shape.
    for (body, content_type, status, code) in [
        (
            "{\"debit_account\": ",
            "application/json",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "[]",
            "application/json",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "{}",
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ] {
        let r = api.post("/v1/transfers").key(&w.alice).idem("raw");
        r.raw(content_type, body)
            .send()
            .await
            .expect_error(status, code);
    }

    // Requests refused by the parser, the service or the ledger: (body, status, code, field).
    let nowhere = "0190b0a4-0000-7000-8000-000000000000";
    let between = |from: &str, to: &str| json!({"debit_account": from, "credit_account": to});
    let with = |base: Value, extra: Value| {
        let mut v = base;
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    };
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let refused = [
        (
            w.pay(json!({"ammount": "1 EUR"})),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
        ),
        (
            w.pay(json!({"amount_minor": "ten", "currency": "EUR"})),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
        ),
        (
            with(between("nope", &w.shop_eur), json!({"amount": "1 EUR"})),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
        ),
        (
            w.pay(json!({"amount": "-5.00 EUR"})),
            unprocessable,
            "amount_not_positive",
            None,
        ),
        (
            w.pay(json!({"amount_minor": 0, "currency": "EUR"})),
            unprocessable,
            "amount_not_positive",
            None,
        ),
        (
            w.pay(json!({"amount": "1.00 USD"})),
            unprocessable,
            "currency_mismatch",
            None,
        ),
        (
            with(
                between(&w.alice_eur, &w.alice_eur),
                json!({"amount": "1 EUR"}),
            ),
            unprocessable,
            "same_account",
            None,
        ),
        (
            with(between(&w.alice_eur, nowhere), json!({"amount": "1 EUR"})),
            StatusCode::NOT_FOUND,
            "account_not_found",
            None,
        ),
        (
            with(
                between(&w.shop_eur, &w.alice_eur),
                json!({"amount": "1 EUR"}),
            ),
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        ),
        (
            w.pay(json!({"amount": "99999999999999999999 EUR"})),
            unprocessable,
            "invalid_request",
            Some("amount"),
        ),
        (
            w.pay(json!({"amount": "1.005 EUR"})),
            unprocessable,
            "invalid_request",
            Some("amount"),
        ),
        (
            w.pay(json!({"amount": "12,50 EUR"})),
            unprocessable,
            "invalid_request",
            Some("amount"),
        ),
        (
            w.pay(json!({"amount": "1 XYZ"})),
            unprocessable,
            "invalid_request",
            Some("amount"),
        ),
        (
            w.pay(json!({"amount": "EUR"})),
            unprocessable,
            "invalid_request",
            Some("amount"),
        ),
        (
            w.pay(json!({})),
            unprocessable,
            "invalid_request",
            Some("amount"),
        ),
        (
            w.pay(json!({"amount_minor": 100})),
            unprocessable,
            "invalid_request",
            Some("currency"),
        ),
        (
            w.pay(json!({"amount_minor": 100, "currency": "EURO"})),
            unprocessable,
            "invalid_request",
            Some("currency"),
        ),
        (
            w.pay(json!({"amount": "1 EUR", "amount_minor": 100, "currency": "EUR"})),
            unprocessable,
            "invalid_request",
            Some("amount"),
        ),
        (
            w.pay(json!({"amount": "1 EUR", "memo": "m".repeat(600)})),
            unprocessable,
            "invalid_request",
            Some("memo"),
        ),
        (
            w.pay(json!({"amount": "1 EUR", "notify": {"channel": "pigeon", "address": "a"}})),
            unprocessable,
            "invalid_request",
            Some("notify.channel"),
        ),
    ];
    for (i, (body, status, code, field)) in refused.into_iter().enumerate() {
        let r = w
            .transfer(Some(&format!("refused-{i}")), body.clone())
            .await;
        let r = r.expect_error(status, code);
        if let Some(field) = field {
            assert_eq!(r.body["error"]["details"]["field"], json!(field), "{body}");
        }
        if code == "currency_mismatch" {
            assert_eq!(r.body["error"]["details"]["account_currency"], json!("EUR"));
        }
    }

    assert_eq!(
        api.balance(&w.alice_eur).await,
        10_000 - 1500,
        "no refused request moved money"
    );
}

#[tokio::test]
async fn oversized_bodies_are_413_in_our_format() {
    let w = World::new().await;
    let big = w
        .pay(json!({"amount": "1.00 EUR", "memo": "x".repeat(70 * 1024)}))
        .to_string();
    // With Content-Length: refused before the body is read.
    let r = w
        .api
        .post("/v1/transfers")
        .key(&w.alice)
        .idem("big")
        .header("content-length", &big.len().to_string())
        .raw("application/json", big.clone())
        .send()
        .await;
    r.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Streamed without a length: refused while reading.
    let stream = futures_body(big);
    let r = w
        .api
        .post("/v1/transfers")
        .key(&w.alice)
        .idem("big")
        .raw("application/json", stream)
        .send()
        .await;
    r.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(w.api.balance(&w.alice_eur).await, 10_000);
}

/// A body without a size hint, so only the reading side can enforce the limit.
fn futures_body(text: String) -> Body {
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = text
        .into_bytes()
        .chunks(8192)
        .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn holds_post_in_part_and_cannot_be_resolved_twice() {
    let w = World::new().await;
    let api = &w.api;
    let hold = |key: &'static str, amount: &'static str| {
        api.post("/v1/holds")
            .key(&w.alice)
            .idem(key)
            .json(w.pay(json!({"amount": amount, "timeout_s": 3600})))
    };

    api.post("/v1/holds")
        .key(&w.alice)
        .idem("h0")
        .json(w.pay(json!({"amount": "1 EUR"})))
        .send()
        .await
        .expect_error(StatusCode::BAD_REQUEST, "malformed_json");
    let r = api
        .post("/v1/holds")
        .key(&w.alice)
        .idem("h0")
        .json(w.pay(json!({"amount": "1 EUR", "timeout_s": 0})))
        .send()
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(r.body["error"]["details"]["field"], json!("timeout_s"));

    let r = hold("h1", "30.00 EUR")
        .send()
        .await
        .expect(StatusCode::CREATED);
    assert_eq!((r.str("/kind"), r.str("/state")), ("pending", "pending"));
    assert!(
        r.body["expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{}",
        r.body
    );
    let h1 = r.str("/id").to_string();
    let alice = api.account(&w.alice, &w.alice_eur).await;
    assert_eq!(
        (
            alice.i64("/balance/minor"),
            alice.i64("/available_minor"),
            alice.i64("/debits_pending")
        ),
        (10_000, 7_000, 3_000)
    );

    // Only the beneficiary captures.
    api.post(&format!("/v1/holds/{h1}/post"))
        .key(&w.alice)
        .idem("p1")
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    api.post(&format!("/v1/holds/{h1}/post"))
        .key(&w.shop)
        .send()
        .await
        .expect_error(StatusCode::BAD_REQUEST, "idempotency_key_required");
    api.post(&format!("/v1/holds/{h1}/post"))
        .key(&w.shop)
        .idem("p1")
        .json(json!({"amount_minor": 3001}))
        .send()
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "post_exceeds_pending");

    // Post 10.00 of the 30.00 held; the other 20.00 is released.
    let r = api
        .post(&format!("/v1/holds/{h1}/post"))
        .key(&w.shop)
        .idem("p1")
        .json(json!({"amount_minor": 1000}))
        .send()
        .await;
    let r = r.expect(StatusCode::CREATED);
    assert_eq!(
        (
            r.str("/kind"),
            r.str("/pending_id"),
            r.i64("/amount/minor"),
            r.i64("/pending_amount_minor")
        ),
        ("post_pending", h1.as_str(), 1000, 3000)
    );
    let alice = api.account(&w.alice, &w.alice_eur).await;
    assert_eq!(
        (
            alice.i64("/balance/minor"),
            alice.i64("/available_minor"),
            alice.i64("/debits_pending")
        ),
        (9_000, 9_000, 0)
    );
    assert_eq!(api.balance(&w.shop_eur).await, 1000);
    let original = api
        .get(&format!("/v1/transfers/{h1}"))
        .key(&w.alice)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(original.str("/state"), "posted");

    // Resolving it again: same key replays, a new key is refused.
    let again = api
        .post(&format!("/v1/holds/{h1}/post"))
        .key(&w.shop)
        .idem("p1")
        .json(json!({"amount_minor": 1000}))
        .send()
        .await;
    assert_eq!(
        again.expect(StatusCode::OK).header("idempotency-replayed"),
        Some("true")
    );
    let r = api
        .post(&format!("/v1/holds/{h1}/void"))
        .key(&w.shop)
        .idem("v-after-post")
        .send()
        .await
        .expect_error(StatusCode::CONFLICT, "pending_not_pending");
    assert_eq!(r.body["error"]["details"]["state"], json!("posted"));

    // A second hold, posted with an empty body (everything), and a third voided twice.
    let h2 = hold("h2", "5.00 EUR")
        .send()
        .await
        .expect(StatusCode::CREATED)
        .str("/id")
        .to_string();
    let r = api
        .post(&format!("/v1/holds/{h2}/post"))
        .key(&w.shop)
        .idem("p2")
        .send()
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.i64("/amount/minor"), 500);
    let h3 = hold("h3", "7.00 EUR")
        .send()
        .await
        .expect(StatusCode::CREATED)
        .str("/id")
        .to_string();
    let r = api
        .post(&format!("/v1/holds/{h3}/void"))
        .key(&w.shop)
        .idem("v3")
        .send()
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(
        (r.str("/kind"), r.str("/state")),
        ("void_pending", "voided")
    );
    api.post(&format!("/v1/holds/{h3}/void"))
        .key(&w.shop)
        .idem("v3-again")
        .send()
        .await
        .expect_error(StatusCode::CONFLICT, "pending_not_pending");
    let alice = api.account(&w.alice, &w.alice_eur).await;
    assert_eq!(
        (alice.i64("/balance/minor"), alice.i64("/available_minor")),
        (10_000 - 1000 - 500, 10_000 - 1500)
    );

    // Holds that do not exist, or are not holds.
    let nowhere = "0190b0a4-0000-7000-8000-000000000000";
    api.post(&format!("/v1/holds/{nowhere}/void"))
        .key(&w.shop)
        .idem("v4")
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "transfer_not_found");
    let post_row = r.str("/id").to_string();
    api.post(&format!("/v1/holds/{post_row}/void"))
        .key(&w.shop)
        .idem("v5")
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "pending_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_apply_a_transfer_once() {
    retry_storm(World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_apply_a_transfer_once_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    let api = Api::with(
        |c| NodeConfig {
            database_url: Some(url),
            ..c
        },
        HttpOptions::default(),
    )
    .await;
    retry_storm(World::from(api).await).await;
}

/// Many copies of one request at once, as a client retrying on timeouts would send them.
async fn retry_storm(w: World) {
    let body = w.pay(json!({"amount": "1.00 EUR"}));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let app = w.api.app.clone();
        let request = Request::post("/v1/transfers")
            .header(header::AUTHORIZATION, format!("Bearer {}", w.alice))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", "retry-storm")
            .body(Body::from(body.to_string()))
            .expect("request");
        tasks.push(tokio::spawn(async move {
            let response = app.oneshot(request).await.expect("infallible");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            let v: Value = serde_json::from_slice(&bytes).expect("json");
            (status, v["id"].as_str().map(str::to_string))
        }));
    }
    let mut created = 0;
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, id) = t.await.expect("task");
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
        ids.insert(id.expect("an id"));
    }
    assert_eq!(created, 1, "exactly one request created the transfer");
    assert_eq!(ids.len(), 1, "all replies name the same transfer");
    assert_eq!(w.api.balance(&w.alice_eur).await, 10_000 - 100);
}

#[tokio::test]
async fn exchanges_need_liquidity_and_move_two_linked_legs() {
    let w = World::new().await;
    let api = &w.api;
    let alice_usd = api.open(&w.alice, json!({"currency": "USD"})).await;
    let order = json!({"debit_account": w.alice_eur, "credit_account": alice_usd, "amount_minor": 1000, "rate": "1.1"});
    // The rate decides how much the operator's liquidity hands out: customers cannot set one.
    api.post("/v1/exchanges")
        .key(&w.alice)
        .idem("fx-alice")
        .json(order.clone())
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let r = api
        .post("/v1/exchanges")
        .key(&api.admin)
        .idem("fx-1")
        .json(order.clone())
        .send()
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "no_liquidity");
    assert_eq!(r.body["error"]["details"]["currency"], json!("EUR"));

    for currency in ["EUR", "USD"] {
        api.open(&api.admin, json!({"currency": currency, "kind": "liquidity", "debits_must_not_exceed_credits": false})).await;
    }
    api.post("/v1/exchanges").key(&api.admin).idem("fx-0").json(json!({"debit_account": w.alice_eur, "credit_account": alice_usd, "amount_minor": 1000, "rate": "abc"})).send().await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    // A stated currency must be the debited account's; one currency on both sides is no exchange.
    api.post("/v1/exchanges").key(&api.admin).idem("fx-usd").json(json!({"debit_account": w.alice_eur, "credit_account": alice_usd, "amount_minor": 1000, "currency": "USD", "rate": "1.1"})).send().await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch");
    let alice_eur_2 = api.open(&w.alice, json!({"currency": "EUR"})).await;
    api.post("/v1/exchanges").key(&api.admin).idem("fx-same").json(json!({"debit_account": w.alice_eur, "credit_account": alice_eur_2, "amount_minor": 1000, "rate": "2"})).send().await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let r = api
        .post("/v1/exchanges")
        .key(&api.admin)
        .idem("fx-1")
        .json(order.clone())
        .send()
        .await
        .expect(StatusCode::CREATED);
    let legs = r.body["transfers"].as_array().expect("legs");
    assert_eq!(legs.len(), 2);
    assert_eq!(
        (
            legs[0]["amount"]["minor"].as_i64(),
            legs[1]["amount"]["minor"].as_i64()
        ),
        (Some(1000), Some(1100))
    );
    assert_eq!(legs[0]["link_id"], legs[1]["link_id"]);
    assert!(legs[0]["rate"]["numerator"].as_i64().is_some());
    let again = api
        .post("/v1/exchanges")
        .key(&api.admin)
        .idem("fx-1")
        .json(order)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(api.balance(&alice_usd).await, 1100);
    assert_eq!(api.balance(&w.alice_eur).await, 10_000 - 1000);
}

#[tokio::test]
async fn api_keys_are_admin_only_shown_once_and_revocable() {
    let api = Api::start().await;
    let alice = api.issue_key("customer", "alice").await;
    assert!(alice.starts_with("tally_customer_"));
    api.post("/v1/api-keys")
        .key(&alice)
        .json(json!({"role": "admin", "owner": "alice"}))
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    api.get("/v1/api-keys")
        .key(&alice)
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    api.post("/v1/api-keys")
        .key(&api.admin)
        .json(json!({"role": "root", "owner": "x"}))
        .send()
        .await
        .expect_error(StatusCode::BAD_REQUEST, "malformed_json");

    let r = api
        .get("/v1/api-keys")
        .key(&api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    let keys = r.body.as_array().expect("list");
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter().all(|k| k.get("key").is_none()),
        "secrets are never listed"
    );
    assert!(!r.body.to_string().contains(&alice));
    let alice_id = keys
        .iter()
        .find(|k| k["owner"] == "alice")
        .and_then(|k| k["id"].as_str())
        .expect("alice's key");

    api.call("DELETE", &format!("/v1/api-keys/{alice_id}"))
        .key(&api.admin)
        .send()
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get("/v1/accounts")
        .key(&alice)
        .send()
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    api.call(
        "DELETE",
        "/v1/api-keys/0190b0a4-0000-7000-8000-000000000000",
    )
    .key(&api.admin)
    .send()
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn rate_limit_answers_429_per_client() {
    let options = HttpOptions {
        rate_limit_per_second: 1,
        rate_limit_burst: 3,
        ..HttpOptions::default()
    };
    let api = Api::with(|c| c, options).await;
    for _ in 0..3 {
        api.get("/healthz").send().await.expect(StatusCode::OK);
    }
    let r = api
        .get("/healthz")
        .send()
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry_after: u64 = r
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .expect("Retry-After seconds");
    assert!(retry_after >= 1);
    assert_eq!(
        r.i64("/error/details/retry_after_s"),
        i64::try_from(retry_after).expect("small")
    );
    // Another client (an API key) has its own budget.
    api.get("/v1/accounts")
        .key(&api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn a_failing_key_is_refused_but_not_its_address() {
    // A key that keeps failing is refused from that address past the quota; the address's
    // valid keys, and its other keys, are not locked out.
    let api = Api::start().await;
    let burst = 2 * tally_http::middleware::FAILED_AUTH_PER_SECOND as usize;
    let bad = format!("tally_admin_{:064x}", 7);
    let mut statuses = Vec::new();
    for _ in 0..burst + 5 {
        statuses.push(api.get("/v1/accounts").key(&bad).send().await.status);
    }
    assert!(
        statuses[..burst]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    api.get("/v1/accounts")
        .key(&api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    api.get("/v1/accounts")
        .key(&format!("tally_admin_{:064x}", 8))
        .send()
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn made_up_keys_cannot_escape_the_limit() {
    // Each made-up key would get its own allowance; keys not yet seen to authenticate share one
    // budget per address (the client rate), so a guesser gets 429s instead of lookups, while a
    // key that authenticated passes.
    let options = HttpOptions {
        rate_limit_per_second: 2,
        rate_limit_burst: 10,
        ..HttpOptions::default()
    };
    let api = Api::with(|c| c, options).await;
    api.get("/v1/accounts")
        .key(&api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    let mut statuses = Vec::new();
    for i in 0..40 {
        let r = api
            .get("/v1/accounts")
            .key(&format!("tally_admin_{i:064x}"))
            .send()
            .await;
        statuses.push(r.status);
    }
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(unauthorized + limited, 40, "{statuses:?}");
    assert!(
        (9..=12).contains(&unauthorized),
        "lookups beyond the address's budget: {statuses:?}"
    );
    api.get("/v1/accounts")
        .key(&api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn dev_inbox_is_off_unless_the_node_runs_in_dev_mode() {
    let api = Api::start().await;
    api.get("/v1/dev/inbox/alice")
        .key(&api.admin)
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "dev_inbox_disabled");

    let w = World::from(Api::with(|c| NodeConfig { dev: true, ..c }, HttpOptions::default()).await)
        .await;
    let api = &w.api;
    let body = w.pay(json!({"amount": "2.50 EUR", "memo": "thanks", "notify": {"channel": "dev", "address": "alice"}}));
    api.post("/v1/transfers")
        .key(&w.alice)
        .idem("notify-1")
        .json(body)
        .send()
        .await
        .expect(StatusCode::CREATED);
    api.post("/v1/transfers")
        .key(&w.alice)
        .idem("notify-2")
        .json(
            w.pay(json!({"amount": "1 EUR", "notify": {"channel": "pigeon", "address": "alice"}})),
        )
        .send()
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");

    // The dev inbox is the outbox itself: the message is there when the transfer commits,
    // and the delivery worker has nothing left to do for it.
    let delivered = tally_service::workers::deliver_due(
        &api.node,
        &tally_channels::ChannelSet::new(),
        Timestamp::now(),
    )
    .await
    .expect("delivery pass");
    assert_eq!(delivered, 0);
    let r = api
        .get("/v1/dev/inbox/alice?limit=10")
        .key(&w.alice)
        .send()
        .await
        .expect(StatusCode::OK);
    let messages = r.body.as_array().expect("list");
    assert_eq!(messages.len(), 1, "{}", r.body);
    assert_eq!(
        (r.str("/0/channel"), r.str("/0/address"), r.str("/0/state")),
        ("dev", "alice", "sent")
    );
    assert!(r.str("/0/body").contains("2.50 EUR") && r.str("/0/body").contains("thanks"));
    assert_eq!(r.i64("/0/data/amount_minor"), 250);
    // Another party's inbox is not the shop's to read; the operator reads any.
    api.get("/v1/dev/inbox/alice")
        .key(&w.shop)
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    api.get("/v1/dev/inbox/alice")
        .key(&api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn audit_is_for_the_operator_and_balances() {
    let w = World::new().await;
    w.api
        .post("/v1/transfers")
        .key(&w.alice)
        .idem("a1")
        .json(w.pay(json!({"amount": "3.00 EUR"})))
        .send()
        .await
        .expect(StatusCode::CREATED);
    w.api
        .get("/v1/ledger/audit")
        .key(&w.alice)
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    w.api
        .get("/v1/ledger/audit")
        .key(&w.shop)
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let r = w
        .api
        .get("/v1/ledger/audit")
        .key(&w.api.admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["ok"], json!(true), "{}", r.body);
    assert_eq!(r.body["problems"], json!([]));
    assert_eq!((r.i64("/accounts"), r.i64("/transfers")), (3, 2));
    assert!(
        r.i64("/entries") >= 5,
        "3 accounts + 2 transfers journaled: {}",
        r.body
    );
    let eur = &r.body["totals"]["EUR"];
    assert_eq!(eur["debits_posted"], eur["credits_posted"]);
    assert_eq!(eur["debits_posted"], json!(10_300));
}

#[tokio::test]
async fn error_format_covers_routes_and_methods_we_do_not_have() {
    let api = Api::start().await;
    api.get("/v2/nothing")
        .send()
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let r = api
        .call("DELETE", "/v1/transfers")
        .key(&api.admin)
        .send()
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert!(r.header("allow").is_some_and(|a| a.contains("POST")));
    // `limit` is a parameter of the account list (issue [10]): a malformed one is refused.
    api.get("/v1/accounts?limit=x&owner=")
        .key(&api.admin)
        .send()
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    api.get("/v1/accounts/0190b0a4-0000-7000-8000-000000000000/transfers?limit=ten")
        .key(&api.admin)
        .send()
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
}
