//! `tally bench sessions`: purchases per second inside open trading sessions at one merchant
//! agent, each one durable before it is answered, next to the raw SQLite batched-insert rate
//! of the same rows in the same run (the ceiling for a durable append); and the same
//! purchases sent over HTTP to the agent on loopback, the path customers take.
//!
//! Then complete sessions per second across two nodes on loopback (open → N purchases → close
//! → cleared at both, everything over HTTP with the nodes' workers delivering the messages
//! between them), for N = 1, 10, 100, next to durable transfers per second over HTTP at the
//! customer's node with as many clients, measured in the same run.

use crate::bench_kit::{fmt_rate, fmt_ratio, print_rows};
use clap::Args;
use std::process::ExitCode;
use std::time::Instant;
use tally_kernel::crypto::SigningKey;
use tally_kernel::{Amount, Currency, Timestamp};
use tally_proto::session::ids::{NodeId, SessionId, TransactionId};
use tally_proto::session::purchase::{MacedPurchase, Purchase, Tab, new_tab};
use tally_store::agent::{AgentJournal, AgentOp};

#[derive(Args)]
pub struct SessionsBench {
    /// Purchases in process (split over the tabs).
    #[arg(long, default_value_t = 262_144)]
    purchases: usize,
    /// Open tabs (sessions) buying at once.
    #[arg(long, default_value_t = 1024)]
    tabs: usize,
    /// Purchases a tab sends before it waits for their answers.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Purchases over HTTP (one connection per tab, each waiting for its answer).
    #[arg(long, default_value_t = 20_000)]
    http_purchases: usize,
    /// Complete sessions per row across two nodes (0: skip those rows).
    #[arg(long, default_value_t = 64)]
    sessions: usize,
    /// Customers running sessions at once across the two nodes.
    #[arg(long, default_value_t = 16)]
    session_clients: usize,
}

const MAC_KEY: [u8; 32] = [7; 32];

fn transaction(n: usize) -> TransactionId {
    // The AM's id once: deriving a key is an Ed25519 base-point multiplication.
    static AM: std::sync::OnceLock<NodeId> = std::sync::OnceLock::new();
    let am = *AM.get_or_init(|| NodeId::of(&SigningKey::from_seed(&[1; 32]).verifying_key()));
    SessionId::new(am, n as u64 + 1)
        .expect("a session number")
        .first_transaction()
}

/// The purchases of tabs `offset..offset + tabs`, `per_tab` each, made (and MACed) before the
/// clock starts.
fn purchases(
    tabs: usize,
    per_tab: usize,
    offset: usize,
) -> anyhow::Result<Vec<Vec<MacedPurchase>>> {
    let eur = Currency::from_code("EUR")?;
    (offset..offset + tabs)
        .map(|t| {
            (1..=per_tab)
                .map(|seq| {
                    Purchase {
                        transaction: transaction(t),
                        seq: seq as u64,
                        price: Amount::new(1, eur),
                        item: format!("track {seq} of album {t}"),
                        at: Timestamp::now().as_micros(),
                    }
                    .mac(&MAC_KEY)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                })
                .collect()
        })
        .collect()
}

async fn open_tabs(journal: &AgentJournal, tabs: usize, offset: usize) -> anyhow::Result<()> {
    let customer = SigningKey::from_seed(&[9; 32]);
    let deposit = Amount::new(1_000_000_000, Currency::from_code("EUR")?);
    for t in offset..offset + tabs {
        let signed = new_tab(&customer, transaction(t), MAC_KEY, Timestamp::now())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let tab = Tab::open(&signed, &customer.verifying_key(), transaction(t), deposit)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        journal
            .submit(transaction(t), AgentOp::Open(Box::new(tab)))
            .await?;
    }
    Ok(())
}

async fn in_process(
    journal: &AgentJournal,
    work: Vec<Vec<MacedPurchase>>,
    window: usize,
) -> anyhow::Result<(usize, f64)> {
    let total: usize = work.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (t, list) in work.into_iter().enumerate() {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            let name = transaction(t);
            let mut list = list.into_iter().peekable();
            while list.peek().is_some() {
                let mut answers = Vec::with_capacity(window.max(1));
                // Each purchase is handed over as the customer made it (no copy).
                for p in list.by_ref().take(window.max(1)) {
                    answers.push(journal.enqueue(name, AgentOp::Buy(p)).await?);
                }
                for a in answers {
                    a.await
                        .map_err(|_| anyhow::anyhow!("the journal stopped"))??;
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

/// The same rows appended by plain batched INSERTs in durable transactions of the journal's
/// batch size, with no tab to decide: the ceiling for a durable append on this machine.
async fn raw_sqlite(dir: &std::path::Path, work: &[Vec<MacedPurchase>]) -> anyhow::Result<f64> {
    // Interleaved as the journal sees them: one purchase of each tab in turn.
    let per_tab = work.iter().map(Vec::len).max().unwrap_or(0);
    let mut rows = Vec::new();
    for seq in 0..per_tab {
        for (t, list) in work.iter().enumerate() {
            if let Some(p) = list.get(seq) {
                rows.push((
                    transaction(t),
                    seq as u64 + 1,
                    p.bytes.clone(),
                    p.mac.clone(),
                    1,
                ));
            }
        }
    }
    Ok(tally_store::agent::raw_append_rate(&dir.join("raw.db"), &rows).await?)
}

async fn over_http(
    journal: AgentJournal,
    work: Vec<Vec<MacedPurchase>>,
    offset: usize,
) -> anyhow::Result<(usize, f64)> {
    let node = tally_client::Client::builder("http://127.0.0.1:9").build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            crate::agent::routes(
                journal,
                node,
                SigningKey::from_seed(&[3; 32]),
                tally_kernel::Secret::new("bench".into()),
            ),
        )
        .await
    });
    let total: usize = work.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (t, list) in work.into_iter().enumerate() {
        let url = format!("{base}/v1/tabs/{}/purchases", transaction(offset + t));
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for p in list {
                let r = http.post(&url).json(&p).send().await?;
                anyhow::ensure!(r.status().is_success(), "refused: {}", r.status());
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    server.abort();
    Ok((total, elapsed))
}

pub async fn run(a: SessionsBench) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let tabs = a.tabs.max(1);
    let per_tab = a.purchases.div_ceil(tabs).max(1);
    println!(
        "trading-session purchases at one merchant agent: {tabs} open tabs, {per_tab} purchases each, \
         {} in flight per tab; every purchase durable (SQLite, synchronous=FULL) before its answer",
        a.window
    );
    let work = purchases(tabs, per_tab, 0)?;
    let reference = raw_sqlite(dir.path(), &work).await?;
    let journal = AgentJournal::open(&dir.path().join("agent.db")).await?;
    open_tabs(&journal, tabs, 0).await?;
    let (n, secs) = in_process(&journal, work, a.window).await?;
    let in_proc = n as f64 / secs;
    let http_tabs = 64.min(tabs);
    let http_per_tab = a.http_purchases.div_ceil(http_tabs).max(1);
    open_tabs(&journal, http_tabs, tabs).await?;
    let http_work = purchases(http_tabs, http_per_tab, tabs)?;
    let (hn, hsecs) = over_http(journal.clone(), http_work, tabs).await?;
    let http = hn as f64 / hsecs;
    journal.close().await;
    print_rows(
        ["measurement", "purchases/s", "of raw insert"],
        &[
            [
                "merchant agent, in process".into(),
                fmt_rate(in_proc),
                fmt_ratio(in_proc, Some(reference), 2),
            ],
            [
                format!("merchant agent, HTTP on loopback ({http_tabs} clients)"),
                fmt_rate(http),
                fmt_ratio(http, Some(reference), 3),
            ],
            [
                "SQLite batched insert of the same rows".into(),
                fmt_rate(reference),
                "1.00x".into(),
            ],
        ],
    );
    if a.sessions == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let clients = a.session_clients.clamp(1, a.sessions);
    println!(
        "\ncomplete sessions across two nodes on loopback (open → N purchases at the merchant \
         agent → close → cleared at both), {} sessions per row, {clients} customers at once, \
         everything over HTTP",
        a.sessions
    );
    let (rates, transfers) = across_nodes(clients, a.sessions, &[1, 10, 100]).await?;
    let mut rows: Vec<[String; 3]> = rates
        .iter()
        .map(|(n, r)| {
            [
                format!("sessions of {n} purchase{}", if *n == 1 { "" } else { "s" }),
                format!("{:.1}", r),
                fmt_ratio(*r, Some(transfers), 4),
            ]
        })
        .collect();
    rows.push([
        format!("transfers over HTTP at the customer's node ({clients} clients)"),
        fmt_rate(transfers),
        "1.00x".into(),
    ]);
    print_rows(["measurement", "per second", "of transfers/s"], &rows);
    Ok(ExitCode::SUCCESS)
}

// ----- complete sessions across two nodes ------------------------------------------------------

/// A node of the benchmark, as `tally serve` runs it: HTTP on loopback, its workers.
pub(crate) struct Operator {
    pub(crate) node: tally_service::Node,
    pub(crate) admin: tally_client::Client,
    /// The admin key `admin` uses.
    pub(crate) admin_key: String,
    pub(crate) url: String,
    workers: tally_service::workers::Workers,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// Stops serving, stops the workers, closes the store.
    pub(crate) async fn stop(self) {
        self.server.abort();
        self.workers.stop();
        self.node.store().close().await;
    }
}

pub(crate) async fn operator() -> anyhow::Result<Operator> {
    operator_on("SQLite", None).await
}

/// A node on a fresh data directory (its database at `database_url`, else SQLite there),
/// serving HTTP on loopback, with its workers; `label` names the store in errors.
pub(crate) async fn operator_on(
    label: &str,
    database_url: Option<String>,
) -> anyhow::Result<Operator> {
    operator_with(label, database_url, false).await
}

/// [`operator_on`], in development mode when `dev` (the dev inbox and the demo data set).
pub(crate) async fn operator_with(
    label: &str,
    database_url: Option<String>,
    dev: bool,
) -> anyhow::Result<Operator> {
    use anyhow::Context;
    let dir = tempfile::tempdir()?;
    let config = tally_service::NodeConfig {
        database_url,
        dev,
        ..tally_service::NodeConfig::new(dir.path().join("node"))
    };
    let (node, admin) = tally_service::Node::open(&config).await.with_context(|| {
        format!(
            "opening a node on {label} (a --database-url must be a database no other node \
             used: it records that node's keys)"
        )
    })?;
    let admin = admin
        .context("a fresh node has an admin key")?
        .expose()
        .clone();
    let workers = tally_service::workers::start(
        node.clone(),
        tally_channels::ChannelSet::new(),
        std::time::Duration::from_millis(200),
    );
    let options = tally_http::HttpOptions {
        rate_limit_per_second: 1_000_000,
        rate_limit_burst: 1_000_000,
        ..tally_http::HttpOptions::default()
    };
    let app = tally_http::router(node.clone(), options)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Operator {
        admin: tally_client::Client::builder(&url)
            .api_key(admin.clone())
            .build()?,
        admin_key: admin,
        node,
        url,
        workers,
        server,
        _dir: dir,
    })
}

fn peer_request(of: &Operator, name: &str) -> tally_client::wire::federation::AddPeerRequest {
    let key = of.node.core().node_key().verifying_key();
    tally_client::wire::federation::AddPeerRequest {
        name: name.into(),
        url: of.url.clone(),
        public_key: key.to_hex(),
        fingerprint: key.fingerprint(),
    }
}

/// An account of `owner` at `op` (opened by the operator), funded from a settlement account
/// when `fund` is set: `(its id, the owner's key)`.
async fn account_of(
    op: &Operator,
    owner: &str,
    role: tally_client::wire::ledger::RoleDto,
    fund: Option<&str>,
) -> anyhow::Result<(uuid::Uuid, String)> {
    use tally_client::wire::ledger::{
        AccountKindDto, NewApiKeyRequest, OpenAccountRequest, TransferRequest,
    };
    let open = |owner: &str, kind| OpenAccountRequest {
        owner: Some(owner.into()),
        currency: "EUR".into(),
        kind: Some(kind),
        ..Default::default()
    };
    let kind = match role {
        tally_client::wire::ledger::RoleDto::Merchant => AccountKindDto::Merchant,
        _ => AccountKindDto::Customer,
    };
    let account = op
        .admin
        .account_open(None, &open(owner, kind))
        .await?
        .value
        .id;
    let key = op
        .admin
        .api_key_create(&NewApiKeyRequest {
            role,
            owner: owner.into(),
            label: None,
        })
        .await?
        .key;
    if let Some(amount) = fund {
        let world = op
            .admin
            .account_open(
                None,
                &OpenAccountRequest {
                    debits_must_not_exceed_credits: Some(false),
                    ..open("operator", AccountKindDto::Settlement)
                },
            )
            .await?
            .value
            .id;
        op.admin
            .transfer(
                &uuid::Uuid::now_v7().to_string(),
                &TransferRequest {
                    debit_account: world,
                    credit_account: account,
                    amount: Some(amount.into()),
                    amount_minor: None,
                    currency: None,
                    memo: None,
                    notify: None,
                },
            )
            .await?;
    }
    Ok((account, key))
}

/// Polls `session` at `client` until it is in none of the states `from` (bounded).
async fn until_not(
    client: &tally_client::Client,
    session: &str,
    from: &[&str],
) -> anyhow::Result<String> {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let s = client.trading_session(session).await?;
        if !from.contains(&s.state.as_str()) {
            return Ok(s.state);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "session {session} stayed {}",
            s.state
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// One complete session: open, `n` purchases at the agent, close; cleared at the AM, then at
/// the MTA (`merchant`, which pays the merchant once the AM posted).
async fn one_session(
    customer: &tally_client::Client,
    merchant: &tally_client::Client,
    account: uuid::Uuid,
    agent: &str,
    http: &reqwest::Client,
    n: usize,
) -> anyhow::Result<()> {
    let key = SigningKey::generate();
    let eur = Currency::from_code("EUR")?;
    let s = customer
        .trading_session_open(
            &tally_client::wire::federation::OpenTradingSession {
                account: tally_kernel::Id(account),
                deposit: Amount::new(10_000, eur),
                merchant: "kiosk".into(),
                operator: "bank-b".into(),
                lifetime_s: None,
                customer_key: Some(key.verifying_key().to_hex()),
            },
            &uuid::Uuid::now_v7().to_string(),
        )
        .await?
        .value;
    anyhow::ensure!(
        until_not(customer, &s.session, &["held"]).await? == "open",
        "not opened"
    );
    let transaction: TransactionId = s.transaction.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut mac_key = [0u8; 32];
    getrandom::fill(&mut mac_key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tab = new_tab(&key, transaction, mac_key, Timestamp::now())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tab: serde_json::Value = serde_json::from_slice(&tab)?;
    let r = http
        .post(format!("{agent}/v1/tabs"))
        .json(&serde_json::json!({"session": s.session, "tab": tab}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "tab refused: {}", r.status());
    let mut list = [0u8; 32];
    for seq in 1..=n {
        let p = Purchase {
            transaction,
            seq: seq as u64,
            price: Amount::new(1, eur),
            item: format!("item {seq}"),
            at: Timestamp::now().as_micros(),
        }
        .mac(&mac_key)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        list = tally_proto::session::purchase::list_next(&list, p.bytes.as_bytes());
        let r = http
            .post(format!("{agent}/v1/tabs/{transaction}/purchases"))
            .json(&p)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "purchase refused: {}", r.status());
    }
    let r = http
        .post(format!("{agent}/v1/tabs/{transaction}/close"))
        .json(&serde_json::json!({
            "mac": tally_proto::session::purchase::close_mac(&mac_key, transaction)
        }))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "close refused: {}", r.status());
    let record = tally_proto::session::conclusion::Record {
        transaction,
        side: tally_proto::session::conclusion::Side::Customer,
        total: Amount::new(n as i64, eur),
        count: n as u64,
        list: hex::encode(list),
    }
    .sign(&key)
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    customer.trading_session_record(&s.session, record).await?;
    anyhow::ensure!(
        until_not(customer, &s.session, &["concluding"]).await? == "cleared",
        "not cleared"
    );
    anyhow::ensure!(
        until_not(merchant, &s.session, &["open", "concluding", "clearing"]).await? == "cleared",
        "not cleared at the merchant's operator"
    );
    Ok(())
}

/// Complete sessions per second across two nodes for each `n`, and durable transfers per
/// second over HTTP at the customer's node with as many clients (the reference).
pub async fn across_nodes(
    clients: usize,
    sessions: usize,
    ns: &[usize],
) -> anyhow::Result<(Vec<(usize, f64)>, f64)> {
    use tally_client::wire::ledger::RoleDto;
    let (a, b) = (operator().await?, operator().await?);
    a.admin.peer_add(&peer_request(&b, "bank-b")).await?;
    b.admin.peer_add(&peer_request(&a, "bank-a")).await?;
    let (kiosk, kiosk_key) = account_of(&b, "kiosk", RoleDto::Merchant, None).await?;
    let kiosk_client = tally_client::Client::builder(&b.url)
        .api_key(kiosk_key)
        .build()?;
    kiosk_client
        .session_merchant_set(
            "kiosk",
            &tally_client::wire::federation::SessionMerchantRequest {
                account: tally_kernel::Id(kiosk),
                auto_ack: true,
            },
        )
        .await?;
    let agent_key = SigningKey::generate();
    kiosk_client
        .session_agent_key("kiosk", &agent_key.verifying_key().to_hex())
        .await?;
    let agent_dir = tempfile::tempdir()?;
    let journal = AgentJournal::open(&agent_dir.path().join("agent.db")).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let agent = format!("http://{}", listener.local_addr()?);
    let merchant = kiosk_client.clone();
    let routes = crate::agent::routes(
        journal,
        kiosk_client,
        agent_key,
        tally_kernel::Secret::new("bench".into()),
    );
    tokio::spawn(async move { axum::serve(listener, routes).await });
    let mut customers = Vec::new();
    for c in 0..clients {
        let (account, key) = account_of(
            &a,
            &format!("buyer-{c}"),
            RoleDto::Customer,
            Some("1000000.00 EUR"),
        )
        .await?;
        customers.push((
            tally_client::Client::builder(&a.url).api_key(key).build()?,
            account,
        ));
    }
    let customers = std::sync::Arc::new(customers);
    let mut rates = Vec::new();
    for &n in ns {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (customers, agent, merchant) = (customers.clone(), agent.clone(), merchant.clone());
            let share = sessions / clients + usize::from(c < sessions % clients);
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let (client, account) = &customers[c];
                for _ in 0..share {
                    one_session(client, &merchant, *account, &agent, &http, n).await?;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        rates.push((n, sessions as f64 / started.elapsed().as_secs_f64()));
    }
    // The reference: durable transfers over HTTP at node A, the same clients, one at a time each.
    let per_client = 200;
    let lanes = (0..clients)
        .map(|c| {
            let (client, account) = &customers[c];
            (client.clone(), *account, customers[(c + 1) % clients].1)
        })
        .collect();
    let transfers = crate::bench_kit::transfer_rate(lanes, per_client).await?;
    Ok((rates, transfers))
}
