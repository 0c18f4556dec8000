//! `POST /v1/transfers/batch` through the router (issue [10]): one result per event in the
//! fixed JSON shape, linked chains whole, a retried batch harmless, the client's references
//! and flags on the transfers read back, closing transfers seen by the single-transfer API,
//! imported history on accounts opened in the past, and the audit passing after it all.

mod common;

use axum::http::StatusCode;
use common::Api;
use serde_json::{Value, json};

fn statuses(r: &common::Reply) -> Vec<String> {
    r.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|x| x["status"].as_str().expect("status").to_string())
        .collect()
}

async fn batch(api: &Api, events: Value) -> common::Reply {
    api.post("/v1/transfers/batch")
        .key(&api.admin)
        .json(json!({ "events": events }))
        .send()
        .await
        .expect(StatusCode::OK)
}

fn id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

#[tokio::test]
async fn batches_answer_each_event_and_chains_whole() {
    let api = Api::start().await;
    let admin = api.admin.clone();
    let world = api
        .open(
            &admin,
            json!({"currency": "EUR", "kind": "settlement", "debits_must_not_exceed_credits": false}),
        )
        .await;
    let alice = api
        .open(
            &admin,
            json!({"currency": "EUR", "owner": "alice", "kind": "customer"}),
        )
        .await;
    let bob = api
        .open(
            &admin,
            json!({"currency": "EUR", "owner": "bob", "kind": "customer"}),
        )
        .await;
    let event = |n: u32, from: &str, to: &str, amount: i64| {
        json!({"id": id(n), "debit_account": from, "credit_account": to,
            "amount_minor": amount, "currency": "EUR"})
    };
    let linked = |mut e: Value| {
        e["flags"] = json!({"linked": true});
        e
    };
    // History first (imports come before anything live, as in TigerBeetle): accounts opened
    // in the past take transfers dated between then and now.
    let day_ago = tally_kernel::Timestamp::now()
        .plus_seconds(-86_400)
        .to_rfc3339();
    let past = |owner: &str| {
        json!({"currency": "EUR", "owner": owner, "kind": "customer",
            "debits_must_not_exceed_credits": false, "imported_at": day_ago})
    };
    let (x, y) = (
        api.open(&admin, past("x")).await,
        api.open(&admin, past("y")).await,
    );
    let customer = api.issue_key("customer", "carol").await;
    api.post("/v1/accounts")
        .key(&customer)
        .json(json!({"currency": "EUR", "imported_at": day_ago}))
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let at = tally_kernel::Timestamp::now()
        .plus_seconds(-3_600)
        .to_rfc3339();
    let mut imported = event(7, &x, &y, 50);
    imported["flags"] = json!({"imported": true});
    imported["timestamp"] = json!(at);
    let r = batch(&api, json!([imported.clone(), event(8, &x, &y, 1)])).await;
    assert_eq!(statuses(&r), ["created", "imported_event_expected"]);
    assert_eq!(r.body["results"][0]["transfer"]["created_at"], at);
    assert_eq!(r.body["results"][0]["transfer"]["flags"]["imported"], true);
    imported["id"] = json!(id(9));
    let r = batch(&api, json!([imported])).await;
    assert_eq!(statuses(&r), ["imported_event_timestamp_must_not_regress"]);

    let mut funding = event(1, &world, &alice, 1_000);
    funding["user_data_128"] = json!("340282366920938463463374607431768211455");
    funding["user_data_64"] = json!(u64::MAX);
    funding["code"] = json!(7);
    let events = json!([
        funding,
        linked(event(2, &alice, &bob, 300)),
        event(3, &bob, &world, 5_000),
        event(4, &alice, &bob, 100),
    ]);
    let r = batch(&api, events.clone()).await;
    assert_eq!(
        statuses(&r),
        [
            "created",
            "linked_event_failed",
            "exceeds_credits",
            "created"
        ]
    );
    // Golden shape of one result: the status and the transfer as `GET /v1/transfers/{id}`
    // shows it, references included.
    let first = &r.body["results"][0];
    assert_eq!(
        first["transfer"]["user_data_128"],
        "340282366920938463463374607431768211455"
    );
    assert_eq!(first["transfer"]["user_data_64"], json!(u64::MAX));
    assert_eq!(first["transfer"]["code"], 7);
    assert_eq!(first["transfer"]["id"], id(1));
    assert!(r.body["results"][1].get("transfer").is_none());
    let read = api
        .get(&format!("/v1/transfers/{}", id(1)))
        .key(&admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(read.body, first["transfer"]);
    assert_eq!(
        (api.balance(&alice).await, api.balance(&bob).await),
        (900, 100)
    );
    // The same batch again: nothing moves twice.
    let r = batch(&api, events).await;
    assert_eq!(
        statuses(&r),
        ["exists", "linked_event_failed", "exceeds_credits", "exists"]
    );
    assert_eq!(
        (api.balance(&alice).await, api.balance(&bob).await),
        (900, 100)
    );

    // A closing hold closes alice's account for the single-transfer API too.
    let mut closing = event(5, &alice, &world, 1);
    closing["kind"] = json!("pending");
    closing["flags"] = json!({"closing_debit": true});
    assert_eq!(statuses(&batch(&api, json!([closing])).await), ["created"]);
    let account = api.account(&admin, &alice).await;
    assert_eq!(account.body["flags"]["closed"], true);
    api.post("/v1/transfers")
        .key(&admin)
        .idem("after-close")
        .json(json!({"debit_account": alice, "credit_account": bob, "amount": "1.00 EUR"}))
        .send()
        .await
        .expect_error(StatusCode::CONFLICT, "account_closed");
    let reopen = json!({"id": id(6), "kind": "void", "pending_id": id(5)});
    assert_eq!(statuses(&batch(&api, json!([reopen])).await), ["created"]);
    let account = api.account(&admin, &alice).await;
    assert!(account.body["flags"].get("closed").is_none());

    let audit = api
        .get("/v1/ledger/audit")
        .key(&admin)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(audit.body["ok"], true, "{}", audit.body);
}

#[tokio::test]
async fn transfers_are_found_by_filters_a_page_at_a_time_and_history_is_kept() {
    let api = Api::start().await;
    let admin = api.admin.clone();
    let alice_key = api.issue_key("customer", "alice").await;
    let bob_key = api.issue_key("customer", "bob").await;
    let world = api
        .open(
            &admin,
            json!({"currency": "EUR", "kind": "settlement", "debits_must_not_exceed_credits": false}),
        )
        .await;
    let alice = api
        .open(
            &alice_key,
            json!({"currency": "EUR", "history": true, "code": 9, "user_data_32": 77,
                "user_data_128": "123456789012345678901234567890"}),
        )
        .await;
    api.open(&alice_key, json!({"currency": "EUR", "code": 8}))
        .await;
    let listed = api
        .get("/v1/accounts?code=9")
        .key(&alice_key)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1));
    assert_eq!(listed.body[0]["id"], json!(alice));
    assert_eq!(
        listed.body[0]["user_data_128"],
        "123456789012345678901234567890"
    );
    assert_eq!(listed.body[0]["user_data_32"], 77);
    let after = api
        .get(&format!("/v1/accounts?after={alice}"))
        .key(&alice_key)
        .send()
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        after.body[0]["code"], 8,
        "the page after alice's first account"
    );
    assert_eq!(
        api.account(&alice_key, &alice).await.body["flags"]["history"],
        true
    );
    let events: Vec<Value> = (1..=5)
        .map(|n: u32| {
            json!({"id": id(100 + n), "debit_account": world, "credit_account": alice,
                "amount_minor": n * 100, "currency": "EUR", "code": n % 2 + 1,
                "user_data_128": (u128::from(n) << 90).to_string()})
        })
        .collect();
    assert_eq!(statuses(&batch(&api, json!(events)).await), ["created"; 5]);
    let get = |uri: String, key: String| {
        let api = &api;
        async move { api.get(&uri).key(&key).send().await }
    };
    let ids = |r: &common::Reply| -> Vec<String> {
        r.body["transfers"]
            .as_array()
            .expect("transfers")
            .iter()
            .map(|t| t["id"].as_str().expect("id").to_string())
            .collect()
    };
    // By code, as the account's owner.
    let r = get(
        format!("/v1/transfers?account={alice}&code=1"),
        alice_key.clone(),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(ids(&r), [id(102), id(104)]);
    // By the 128-bit reference.
    let third = (3_u128 << 90).to_string();
    let r = get(
        format!("/v1/transfers?account={alice}&user_data_128={third}"),
        alice_key.clone(),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(ids(&r), [id(103)]);
    // Pages of two, newest first, following `next`.
    let mut seen = Vec::new();
    let mut uri = format!("/v1/transfers?account={alice}&side=credit&reversed=true&limit=2");
    loop {
        let r = get(uri.clone(), alice_key.clone())
            .await
            .expect(StatusCode::OK);
        seen.extend(ids(&r));
        match r.body["next"].as_str() {
            Some(next) => {
                uri = format!(
                    "/v1/transfers?account={alice}&side=credit&reversed=true&limit=2&after={next}"
                )
            }
            None => break,
        }
    }
    assert_eq!(seen, [id(105), id(104), id(103), id(102), id(101)]);
    // Another customer's account is not found; no account at all is for the operator only.
    get(format!("/v1/transfers?account={alice}"), bob_key.clone())
        .await
        .expect_error(StatusCode::NOT_FOUND, "account_not_found");
    get("/v1/transfers".to_string(), alice_key.clone())
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let r = get("/v1/transfers?code=2".to_string(), admin.clone())
        .await
        .expect(StatusCode::OK);
    assert_eq!(ids(&r), [id(101), id(103), id(105)]);
    // History: the balance after each of the five credits.
    let r = get(format!("/v1/accounts/{alice}/history"), alice_key.clone())
        .await
        .expect(StatusCode::OK);
    let balances: Vec<i64> = r.body["balances"]
        .as_array()
        .expect("balances")
        .iter()
        .map(|b| b["balance_minor"].as_i64().expect("balance"))
        .collect();
    assert_eq!(balances, [100, 300, 600, 1_000, 1_500]);
    get(format!("/v1/accounts/{alice}/history"), bob_key)
        .await
        .expect_error(StatusCode::NOT_FOUND, "account_not_found");
}

/// Reads server-sent events from `body` until `n` have arrived (bounded: a stream that stops
/// short fails the test instead of hanging it); each as (id, transfer JSON).
async fn events(
    body: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    n: usize,
) -> Vec<(String, Value)> {
    use futures::StreamExt;
    let mut text = String::new();
    let mut out = Vec::new();
    let read = async {
        while out.len() < n {
            let chunk = body.next().await.expect("stream open").expect("chunk");
            text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim_start().to_string())
                };
                if field("event:").as_deref() == Some("transfer") {
                    let id = field("id:").expect("id");
                    let data = serde_json::from_str(&field("data:").expect("data")).expect("json");
                    out.push((id, data));
                }
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read)
        .await
        .expect("events arrive");
    out
}

#[tokio::test]
async fn committed_transfers_stream_in_journal_order_and_resume_where_a_client_left() {
    use tower::ServiceExt;
    let api = Api::start().await;
    let admin = api.admin.clone();
    let world = api
        .open(
            &admin,
            json!({"currency": "EUR", "kind": "settlement", "debits_must_not_exceed_credits": false}),
        )
        .await;
    let alice = api
        .open(
            &admin,
            json!({"currency": "EUR", "owner": "alice", "kind": "customer"}),
        )
        .await;
    let event = |n: u32| {
        json!({"id": id(200 + n), "debit_account": world, "credit_account": alice,
            "amount_minor": n, "currency": "EUR"})
    };
    // One entry of three transfers, then one of one.
    batch(&api, json!([event(1), event(2), event(3)])).await;
    batch(&api, json!([event(4)])).await;
    let open = |after: Option<&str>, last: Option<&str>| {
        let mut req = axum::http::Request::get(match after {
            Some(a) => format!("/v1/transfers/changes?after={a}"),
            None => "/v1/transfers/changes".to_string(),
        })
        .header("authorization", format!("Bearer {admin}"));
        if let Some(l) = last {
            req = req.header("last-event-id", l);
        }
        let app = api.app.clone();
        async move {
            let r = app
                .oneshot(req.body(axum::body::Body::empty()).expect("request"))
                .await
                .expect("answer");
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(
                r.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("text/event-stream")
            );
            r.into_body().into_data_stream()
        }
    };
    let mut body = open(None, None).await;
    let got = events(&mut body, 4).await;
    let amounts: Vec<i64> = got
        .iter()
        .map(|(_, t)| t["amount"]["minor"].as_i64().expect("amount"))
        .collect();
    assert_eq!(amounts, [1, 2, 3, 4], "journal order");
    assert_eq!(got[0].1["id"], id(201));
    // The first entry's three events share its position and count up inside it.
    let seq = got[0].0.split('.').next().expect("seq").to_string();
    assert_eq!(
        got.iter()
            .take(3)
            .map(|(i, _)| i.clone())
            .collect::<Vec<_>>(),
        [format!("{seq}.0"), format!("{seq}.1"), format!("{seq}.2")]
    );
    // Live: a commit after the client caught up reaches it (woken by the commit).
    batch(&api, json!([event(5)])).await;
    let live = events(&mut body, 1).await;
    assert_eq!(live[0].1["id"], id(205));
    drop(body);
    // Resume after the second event of the first entry: the third comes next, nothing lost.
    let mut body = open(None, Some(&got[1].0)).await;
    let resumed = events(&mut body, 3).await;
    assert_eq!(
        resumed
            .iter()
            .map(|(_, t)| t["id"].clone())
            .collect::<Vec<_>>(),
        [json!(id(203)), json!(id(204)), json!(id(205))]
    );
    // After a whole entry.
    let mut body = open(Some(&seq), None).await;
    assert_eq!(events(&mut body, 1).await[0].1["id"], id(204));
    // Only the operator; a malformed position is refused before the stream starts.
    let alice_key = api.issue_key("customer", "alice").await;
    api.get("/v1/transfers/changes")
        .key(&alice_key)
        .send()
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    api.get("/v1/transfers/changes?after=x")
        .key(&admin)
        .send()
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
}
