//! Crash safety, through the real binary: a node is killed with SIGKILL in the middle of a
//! transfer load, `tally ledger audit` must pass on what it left behind, and after a restart
//! every acknowledged transfer is there exactly once. Requests that were in flight at the kill
//! are retried with their idempotency keys: each lands exactly once too, so every balance ends
//! exactly where the full list of attempted transfers says it must.
//!
//! Runs on SQLite (the default) and on PostgreSQL (a throwaway cluster or TEST_DATABASE_URL).

mod common;

use common::{Server, tally};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const CUSTOMERS: usize = 8;
const CLIENTS: usize = 16;
const FUNDING_MINOR: i64 = 1_000_000;

struct Ledger {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Ledger {
    async fn post(
        &self,
        path: &str,
        idem: Option<&str>,
        body: &Value,
    ) -> reqwest::Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .json(body);
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("get");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn open(&self, body: Value) -> String {
        let (status, v) = self.post("/v1/accounts", None, &body).await.expect("open");
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().expect("id").to_string()
    }
}

/// (key, from, to, amount) of every transfer a client started.
type Attempt = (String, usize, usize, i64);

async fn crash_and_recover(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let mut server = Server::start(&data, extra);
    let ledger = Arc::new(Ledger {
        http: reqwest::Client::new(),
        url: server.url.clone(),
        key: server.admin_key.clone(),
    });

    let world = ledger.open(json!({"currency": "EUR", "kind": "settlement", "debits_must_not_exceed_credits": false})).await;
    let mut customers = Vec::new();
    for _ in 0..CUSTOMERS {
        let id = ledger
            .open(json!({"currency": "EUR", "kind": "customer", "owner": "crash-test"}))
            .await;
        let body = json!({"debit_account": world, "credit_account": id, "amount_minor": FUNDING_MINOR, "currency": "EUR"});
        let (status, v) = ledger
            .post("/v1/transfers", Some(&format!("fund-{id}")), &body)
            .await
            .expect("fund");
        assert_eq!(status, 201, "{v}");
        customers.push(id);
    }
    let customers = Arc::new(customers);

    // Load: clients send transfers until the server dies under them.
    let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (ledger, customers, attempts, acked) = (
            ledger.clone(),
            customers.clone(),
            attempts.clone(),
            acked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let (from, to) = ((c + n) % CUSTOMERS, (c + n + 1 + n % 3) % CUSTOMERS);
                let amount = 1 + ((c * 7 + n * 13) % 97) as i64;
                let key = format!("crash-{c}-{n}");
                attempts
                    .lock()
                    .expect("lock")
                    .push((key.clone(), from, to, amount));
                let body = json!({"debit_account": customers[from], "credit_account": customers[to],
                                  "amount_minor": amount, "currency": "EUR"});
                match ledger.post("/v1/transfers", Some(&key), &body).await {
                    Ok((201, v)) => {
                        acked
                            .lock()
                            .expect("lock")
                            .insert(key, v["id"].as_str().expect("id").to_string());
                    }
                    Ok((status, v)) => panic!("unexpected {status}: {v}"),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "the load never reached 300 acknowledged transfers"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill_hard();
    for t in tasks {
        t.await.expect("client task");
    }
    let acked = acked.lock().expect("lock").clone();
    let attempts = attempts.lock().expect("lock").clone();
    assert!(acked.len() >= 300);

    // The audit runs on what the crash left behind.
    let mut audit = tally();
    audit.args(["ledger", "audit", "--data"]).arg(&data);
    if let Some(url) = extra
        .iter()
        .position(|a| *a == "--database-url")
        .map(|i| extra[i + 1])
    {
        audit.args(["--database-url", url]);
    }
    let out = audit.output().expect("audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "audit failed after SIGKILL:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("audit passed"), "{stdout}");

    // Restart: every acknowledged transfer is there, and a retry returns it instead of a copy.
    let server = Server::start(&data, extra);
    let ledger = Ledger {
        http: reqwest::Client::new(),
        url: server.url.clone(),
        key: server.admin_key.clone(),
    };
    for (key, id) in &acked {
        let (status, v) = ledger.get(&format!("/v1/transfers/{id}")).await;
        assert_eq!(status, 200, "acknowledged transfer {id} ({key}) lost: {v}");
    }
    let mut expected = [FUNDING_MINOR; CUSTOMERS];
    for (key, from, to, amount) in &attempts {
        let body = json!({"debit_account": customers[*from], "credit_account": customers[*to],
                          "amount_minor": amount, "currency": "EUR"});
        let (status, v) = ledger
            .post("/v1/transfers", Some(key), &body)
            .await
            .expect("retry");
        let id = v["id"].as_str().expect("id").to_string();
        match acked.get(key) {
            Some(original) => {
                assert_eq!(
                    status, 200,
                    "a retry of an acknowledged transfer must be a replay: {v}"
                );
                assert_eq!(&id, original, "the retry returned a different transfer");
            }
            // In flight at the kill: committed (replay, 200) or not (first time now, 201).
            None => assert!(status == 200 || status == 201, "{status}: {v}"),
        }
        expected[*from] -= amount;
        expected[*to] += amount;
    }
    for (i, id) in customers.iter().enumerate() {
        let (_, v) = ledger.get(&format!("/v1/accounts/{id}")).await;
        assert_eq!(
            v["balance"]["minor"].as_i64(),
            Some(expected[i]),
            "customer {i}: every transfer exactly once"
        );
    }
    let (status, report) = ledger.get("/v1/ledger/audit").await;
    assert_eq!(status, 200);
    assert_eq!(report["ok"], json!(true), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_load_loses_nothing_sqlite() {
    crash_and_recover(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_load_loses_nothing_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    crash_and_recover(&["--database-url", &url]).await;
}
