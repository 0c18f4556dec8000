//! Crash safety, through the real binary: a node is killed with SIGKILL in the middle of a
//! transfer load, `tally ledger audit` must pass on what it left behind, and after a restart
//! every acknowledged transfer is there exactly once. Requests that were in flight at the kill
//! are retried with their idempotency keys: each lands exactly once too, so every balance ends
//! exactly where the full list of attempted transfers says it must.
//!
//! The same under `POST /v1/transfers/batch`: batches of 50–200 events with linked chains (some
//! doomed to fail) are acknowledged only after they are durable, each is one transaction (all
//! of it there or none, chains whole, failed chains without a trace, also for batches whose
//! answer the kill cut off), and sending every batch again answers `exists` for what is there
//! and makes the rest.
//!
//! Runs on SQLite (the default) and on PostgreSQL (a throwaway cluster or TEST_DATABASE_URL).

mod common;

use common::{Server, tally};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
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

    /// [`CUSTOMERS`] customer accounts, each funded with `funding` from a settlement account.
    async fn funded_customers(&self, funding: i64) -> Vec<String> {
        let world = self.open(json!({"currency": "EUR", "kind": "settlement", "debits_must_not_exceed_credits": false})).await;
        let mut customers = Vec::new();
        for _ in 0..CUSTOMERS {
            let id = self
                .open(json!({"currency": "EUR", "kind": "customer", "owner": "crash-test"}))
                .await;
            let body = json!({"debit_account": world, "credit_account": id, "amount_minor": funding, "currency": "EUR"});
            let (status, v) = self
                .post("/v1/transfers", Some(&format!("fund-{id}")), &body)
                .await
                .expect("fund");
            assert_eq!(status, 201, "{v}");
            customers.push(id);
        }
        customers
    }

    async fn balance(&self, account: &str) -> i64 {
        let (status, v) = self.get(&format!("/v1/accounts/{account}")).await;
        assert_eq!(status, 200, "{v}");
        v["balance"]["minor"].as_i64().expect("balance")
    }
}

/// `tally ledger audit` passes on the data a killed node left behind.
fn audit_after_crash(data: &Path, extra: &[&str]) {
    let mut audit = tally();
    audit.args(["ledger", "audit", "--data"]).arg(data);
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

    let customers = Arc::new(ledger.funded_customers(FUNDING_MINOR).await);

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
    audit_after_crash(&data, extra);

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

// ---------------------------------------------------------------------------------------------
// Batches: the same crash under `POST /v1/transfers/batch`.
// ---------------------------------------------------------------------------------------------

/// Acknowledged batches before the kill (of 50–200 events each).
const ACKED_BATCHES: usize = 24;
/// Each customer's funding for the batch load: no event but the doomed ones is ever refused.
const BATCH_FUNDING_MINOR: i64 = 1_000_000_000;
/// The index of the account that is never credited: an event debiting it must fail.
const DRY: usize = CUSTOMERS;

/// One event as the client sent it.
struct Event {
    id: String,
    from: usize,
    to: usize,
    amount: i64,
    linked: bool,
}

/// A single event, or a linked chain of 2–4 events; a doomed chain holds one event debiting
/// the dry account, so the whole chain must fail every time it is sent.
struct Unit {
    events: std::ops::Range<usize>,
    failing: Option<usize>,
}

impl Unit {
    /// The statuses the unit's events answer; `there`: the unit was already in the ledger.
    fn answers(&self, there: bool) -> Vec<&'static str> {
        self.events
            .clone()
            .map(|i| match (self.failing, there) {
                (Some(f), _) if i == f => "exceeds_credits",
                (Some(_), _) => "linked_event_failed",
                (None, false) => "created",
                // `exists` breaks a chain: the rest of it answers `linked_event_failed`.
                (None, true) if i == self.events.start => "exists",
                (None, true) => "linked_event_failed",
            })
            .collect()
    }
}

/// A batch as the client sent it (the same body is sent again after the restart).
struct Batch {
    name: String,
    events: Vec<Event>,
    units: Vec<Unit>,
    body: Value,
}

impl Batch {
    fn statuses(answer: &Value) -> Vec<&str> {
        answer["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["status"].as_str().expect("status"))
            .collect()
    }

    fn answers(&self, there: impl Fn(&Unit) -> bool) -> Vec<&'static str> {
        self.units
            .iter()
            .flat_map(|u| u.answers(there(u)))
            .collect()
    }
}

/// SplitMix64: the batches' shapes vary, deterministically per client and batch.
struct Mix(u64);

impl Mix {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % below
    }
}

/// Batch `n` of client `c`: 50–200 events between customers, about a quarter of them in linked
/// chains (at least one chain per batch), and in every third batch one doomed chain.
fn make_batch(c: usize, n: usize, accounts: &[String]) -> Batch {
    let mut mix = Mix(((c as u64) << 32) ^ n as u64);
    let size = 50 + mix.next(151) as usize;
    let mut doomed = (c + n).is_multiple_of(3);
    let (mut events, mut units) = (Vec::new(), Vec::new());
    while events.len() < size {
        let chain = mix.next(10) < 1 || (events.len() >= size / 2 && units.len() == events.len());
        let len = if chain { 2 + mix.next(3) as usize } else { 1 };
        let start = events.len();
        let failing =
            (chain && std::mem::take(&mut doomed)).then(|| start + mix.next(len as u64) as usize);
        for i in start..start + len {
            let from = mix.next(CUSTOMERS as u64) as usize;
            let to = (from + 1 + mix.next(CUSTOMERS as u64 - 1) as usize) % CUSTOMERS;
            events.push(Event {
                id: uuid::Uuid::new_v4().to_string(),
                from: if failing == Some(i) { DRY } else { from },
                to,
                amount: 1 + mix.next(97) as i64,
                linked: i + 1 < start + len,
            });
        }
        units.push(Unit {
            events: start..start + len,
            failing,
        });
    }
    let wire: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut v = json!({"id": e.id, "debit_account": accounts[e.from],
                               "credit_account": accounts[e.to], "amount_minor": e.amount,
                               "currency": "EUR"});
            if e.linked {
                v["flags"] = json!({"linked": true});
            }
            v
        })
        .collect();
    let body = json!({ "events": wire });
    Batch {
        name: format!("batch {c}/{n}"),
        events,
        units,
        body,
    }
}

async fn batch_crash_and_recover(extra: &[&str]) {
    use futures::StreamExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let mut server = Server::start(&data, extra);
    let ledger = Arc::new(Ledger {
        http: reqwest::Client::new(),
        url: server.url.clone(),
        key: server.admin_key.clone(),
    });
    let mut accounts = ledger.funded_customers(BATCH_FUNDING_MINOR).await;
    accounts.push(
        ledger
            .open(json!({"currency": "EUR", "kind": "customer", "owner": "crash-test-dry"}))
            .await,
    );
    let accounts = Arc::new(accounts);

    // Load: clients send batches until the server dies under them. A batch is recorded before
    // it is sent, its answer only once the whole answer has been read.
    let sent: Arc<Mutex<Vec<Arc<Batch>>>> = Arc::default();
    let acked: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let (count, mut counted) = tokio::sync::watch::channel(0usize);
    let count = Arc::new(count);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (ledger, accounts, sent, acked, count) = (
            ledger.clone(),
            accounts.clone(),
            sent.clone(),
            acked.clone(),
            count.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let batch = Arc::new(make_batch(c, n, &accounts));
                sent.lock().expect("lock").push(batch.clone());
                match ledger.post("/v1/transfers/batch", None, &batch.body).await {
                    Ok((200, v)) if v["results"].is_array() => {
                        acked.lock().expect("lock").insert(batch.name.clone(), v);
                        count.send_modify(|k| *k += 1);
                    }
                    Ok((200, _)) | Err(_) => return, // the server is gone
                    Ok((status, v)) => panic!("unexpected {status}: {v}"),
                }
            }
        }));
    }
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        counted.wait_for(|k| *k >= ACKED_BATCHES),
    )
    .await
    .unwrap_or_else(|_| panic!("the load never reached {ACKED_BATCHES} acknowledged batches"))
    .expect("count");
    server.kill_hard();
    for t in tasks {
        t.await.expect("client task");
    }
    let sent = std::mem::take(&mut *sent.lock().expect("lock"));
    let acked = std::mem::take(&mut *acked.lock().expect("lock"));
    assert!(acked.len() >= ACKED_BATCHES);

    // What the node answered before it died: every event as first sent, and one journal
    // entry per batch.
    let mut seqs = std::collections::HashSet::new();
    for batch in &sent {
        let Some(answer) = acked.get(&batch.name) else {
            continue;
        };
        assert_eq!(
            Batch::statuses(answer),
            batch.answers(|_| false),
            "{}: {answer}",
            batch.name
        );
        let seq = answer["journal_seq"].as_i64().expect("journal_seq");
        assert!(
            seqs.insert(seq),
            "{}: journal entry {seq} twice",
            batch.name
        );
    }

    audit_after_crash(&data, extra);

    // Restart, then look up every event ever sent, acknowledged or not.
    let server = Server::start(&data, extra);
    let ledger = Ledger {
        http: reqwest::Client::new(),
        url: server.url.clone(),
        key: server.admin_key.clone(),
    };
    let ledger = &ledger;
    let found: HashMap<String, Value> = futures::stream::iter(sent.iter().flat_map(|b| &b.events))
        .map(|e| async move {
            let (status, v) = ledger.get(&format!("/v1/transfers/{}", e.id)).await;
            assert!(status == 200 || status == 404, "{status}: {v}");
            (status == 200).then(|| (e.id.clone(), v))
        })
        .buffer_unordered(16)
        .filter_map(std::future::ready)
        .collect()
        .await;

    let mut expected = [BATCH_FUNDING_MINOR; CUSTOMERS + 1];
    expected[DRY] = 0;
    let (mut lost_committed, mut lost_not) = (0, 0);
    for batch in &sent {
        for e in &batch.events {
            let Some(t) = found.get(&e.id) else { continue };
            assert_eq!(
                (
                    t["debit_account"].as_str(),
                    t["credit_account"].as_str(),
                    t["amount"]["minor"].as_i64(),
                    t["flags"]["linked"].as_bool().unwrap_or(false),
                ),
                (
                    Some(accounts[e.from].as_str()),
                    Some(accounts[e.to].as_str()),
                    Some(e.amount),
                    e.linked,
                ),
                "{}: event {} is not what was sent: {t}",
                batch.name,
                e.id
            );
            expected[e.from] -= e.amount;
            expected[e.to] += e.amount;
        }
        // Chains whole or absent, doomed ones absent; the batch is one transaction, so all of
        // it that could be made is there, or none.
        let mut made = Vec::new();
        for u in &batch.units {
            let n = u
                .events
                .clone()
                .filter(|&i| found.contains_key(&batch.events[i].id))
                .count();
            match u.failing {
                Some(_) => assert_eq!(n, 0, "{}: a failed chain left a trace", batch.name),
                None => {
                    assert!(
                        n == 0 || n == u.events.len(),
                        "{}: {n} of a chain of {} events survived",
                        batch.name,
                        u.events.len()
                    );
                    made.push(n > 0);
                }
            }
        }
        assert!(
            made.iter().all(|&m| m) || made.iter().all(|&m| !m),
            "{}: the batch was committed in part",
            batch.name
        );
        match acked.get(&batch.name) {
            // Acknowledged: every created event is there exactly as the answer showed it.
            Some(answer) => {
                for (r, e) in answer["results"]
                    .as_array()
                    .expect("results")
                    .iter()
                    .zip(&batch.events)
                {
                    if r["status"] == "created" {
                        assert_eq!(
                            found.get(&e.id),
                            Some(&r["transfer"]),
                            "{}: acknowledged event {} lost or changed",
                            batch.name,
                            e.id
                        );
                    }
                }
            }
            None if made.first() == Some(&true) => lost_committed += 1,
            None => lost_not += 1,
        }
    }
    eprintln!(
        "{} batches sent, {} acknowledged, answers lost: {lost_committed} committed, {lost_not} not",
        sent.len(),
        acked.len()
    );
    for (i, account) in accounts.iter().enumerate() {
        assert_eq!(
            ledger.balance(account).await,
            expected[i],
            "account {i}: the balance is not the sum of the transfers there"
        );
    }

    // Every batch again: what is there answers `exists` (a chain: `exists`, then
    // `linked_event_failed`), the rest is made now, doomed chains fail as before.
    for batch in &sent {
        let there = |u: &Unit| found.contains_key(&batch.events[u.events.start].id);
        let (status, answer) = ledger
            .post("/v1/transfers/batch", None, &batch.body)
            .await
            .expect("resend");
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            Batch::statuses(&answer),
            batch.answers(there),
            "{}: resent: {answer}",
            batch.name
        );
        for u in batch
            .units
            .iter()
            .filter(|u| u.failing.is_none() && !there(u))
        {
            for e in &batch.events[u.events.clone()] {
                expected[e.from] -= e.amount;
                expected[e.to] += e.amount;
            }
        }
    }
    for (i, account) in accounts.iter().enumerate() {
        assert_eq!(
            ledger.balance(account).await,
            expected[i],
            "account {i}: after the resend, every event but the doomed exactly once"
        );
    }
    let (status, report) = ledger.get("/v1/ledger/audit").await;
    assert_eq!(status, 200);
    assert_eq!(report["ok"], json!(true), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_batch_load_loses_nothing_sqlite() {
    batch_crash_and_recover(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_batch_load_loses_nothing_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    batch_crash_and_recover(&["--database-url", &url]).await;
}
