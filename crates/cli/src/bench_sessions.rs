//! `tally bench sessions`: purchases per second inside open trading sessions at one merchant
//! agent, each one durable before it is answered, next to the raw SQLite batched-insert rate
//! of the same rows in the same run (the ceiling for a durable append); and the same
//! purchases sent over HTTP to the agent on loopback, the path customers take.
//!
//! Complete sessions per second across two nodes (open → N purchases → close → cleared) need
//! the conclusion and clearing (issue [7] step 5): not measured yet, and the output says so.

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
}

const MAC_KEY: [u8; 32] = [7; 32];

fn transaction(n: usize) -> TransactionId {
    let am = NodeId::of(&SigningKey::from_seed(&[1; 32]).verifying_key());
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
            .submit(&transaction(t).to_string(), AgentOp::Open(Box::new(tab)))
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
            let name = transaction(t).to_string();
            for chunk in list.chunks(window.max(1)) {
                let mut answers = Vec::with_capacity(chunk.len());
                for p in chunk {
                    answers.push(journal.enqueue(&name, AgentOp::Buy(p.clone())).await?);
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
                    transaction(t).to_string(),
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
            crate::agent::routes(journal, node, SigningKey::from_seed(&[3; 32])),
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
    println!(
        "\ncomplete sessions/s across two nodes (open → N purchases → close → cleared): not \
         measured yet — the conclusion and clearing are issue [7] step 5"
    );
    Ok(ExitCode::SUCCESS)
}
