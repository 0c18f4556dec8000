//! `tally bench ledger`: durable transfers per second on SQLite and PostgreSQL, next to
//! `pgbench` TPC-B measured on the same PostgreSQL in the same run.
//!
//! What is measured: many concurrent clients submit single transfers through
//! `Store::execute`, the path every API call takes (validation, batched writer, journal,
//! idempotency, checkpoints). A transfer counts only when its caller got the answer, which
//! happens after its transaction committed (`synchronous=FULL` on SQLite, `fsync=on` on
//! PostgreSQL). The run ends with a full audit so a fast but wrong ledger cannot pass.
//! HTTP parsing is not included: the figure is the ledger's, as pgbench's is the database's.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tally_kernel::{Currency, Id};
use tally_ledger::{AccountFlags, AccountKind, Command, Request};
use tally_store::{Store, StoreError, WriteOptions};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable transfers/s on SQLite and PostgreSQL, with pgbench TPC-B as the reference.
    Ledger(LedgerBench),
}

#[derive(Args)]
pub struct LedgerBench {
    /// Seconds of load per backend.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients submitting transfers (each waits for its answer before the next).
    #[arg(long, default_value_t = 4096)]
    concurrency: usize,
    /// Customer accounts the transfers move between.
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Most transfers per write transaction (group commit).
    #[arg(long, default_value_t = 4096)]
    batch_max: usize,
    /// Use this PostgreSQL instead of starting a throwaway cluster (its data is kept).
    #[arg(long, env = "TALLY_BENCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Skip PostgreSQL and pgbench.
    #[arg(long)]
    no_postgres: bool,
    /// pgbench -T seconds.
    #[arg(long, default_value_t = 20)]
    pgbench_seconds: u32,
    /// pgbench -s scale.
    #[arg(long, default_value_t = 10)]
    pgbench_scale: u32,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    let BenchCommand::Ledger(args) = cmd;
    println!(
        "tally bench ledger: {} clients, {} accounts, {} s per backend, batches of up to {}",
        args.concurrency, args.accounts, args.seconds, args.batch_max
    );
    let dir = tempfile::tempdir()?;
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite = measure("SQLite", &sqlite_url, &args).await?;

    let mut pg = None;
    let mut pgbench = None;
    let mut _cluster = None;
    if !args.no_postgres {
        let urls = match &args.database_url {
            Some(url) => Some((url.clone(), url.clone())),
            None => match tally_testkit::postgres_bin_dir() {
                Some(_) => {
                    eprintln!("starting a throwaway PostgreSQL cluster …");
                    let cluster =
                        tally_testkit::PgCluster::start().map_err(|e| anyhow::anyhow!("{e}"))?;
                    let bench_url = cluster.url();
                    let pgbench_url = cluster
                        .create_database("pgbench")
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    _cluster = Some(cluster);
                    Some((bench_url, pgbench_url))
                }
                None => {
                    println!(
                        "PostgreSQL: no server binaries found (install Debian's postgresql); skipped"
                    );
                    None
                }
            },
        };
        if let Some((bench_url, pgbench_url)) = urls {
            pg = Some(measure("PostgreSQL", &bench_url, &args).await?);
            eprintln!(
                "running pgbench TPC-B: -i -s {} then -c 8 -j 2 -T {} …",
                args.pgbench_scale, args.pgbench_seconds
            );
            let (scale, secs) = (args.pgbench_scale, args.pgbench_seconds);
            let tps = tokio::task::spawn_blocking(move || {
                tally_testkit::pgbench_tpcb(&pgbench_url, scale, 8, 2, secs)
            })
            .await?
            .map_err(|e| anyhow::anyhow!("pgbench: {e}"))?;
            pgbench = Some(tps);
        }
    }

    println!();
    println!(
        "{:<44} {:>14} {:>16}",
        "measurement", "per second", "vs pgbench"
    );
    if let Some(tps) = pgbench {
        println!(
            "{:<44} {:>14} {:>16}",
            format!(
                "pgbench TPC-B (-s {} -c 8 -j 2 -T {})",
                args.pgbench_scale, args.pgbench_seconds
            ),
            fmt_rate(tps),
            "1.0x"
        );
    }
    let ratio = |v: f64| pgbench.map_or("-".to_string(), |p| format!("{:.1}x", v / p));
    println!(
        "{:<44} {:>14} {:>16}",
        "SQLite durable transfers",
        fmt_rate(sqlite.rate),
        ratio(sqlite.rate)
    );
    if let Some(pg) = &pg {
        println!(
            "{:<44} {:>14} {:>16}",
            "PostgreSQL durable transfers",
            fmt_rate(pg.rate),
            ratio(pg.rate)
        );
    }
    println!(
        "targets: SQLite >= 20x pgbench, PostgreSQL >= 3x pgbench; every counted transfer was acknowledged after commit"
    );
    let audits_ok = sqlite.audit_ok && pg.as_ref().is_none_or(|p| p.audit_ok);
    Ok(if audits_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn fmt_rate(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

struct Measured {
    rate: f64,
    audit_ok: bool,
}

async fn measure(label: &str, url: &str, args: &LedgerBench) -> anyhow::Result<Measured> {
    let key = Arc::new(tally_kernel::crypto::SigningKey::generate());
    let policy = tally_store::audit::AuditPolicy {
        trusted_signers: vec![key.verifying_key().to_bytes()],
        checkpoint_gap_max: Some(WriteOptions::default().checkpoint_every + args.batch_max as i64),
    };
    let signer = Arc::new(tally_service::node::NodeSigner(key));
    let options = WriteOptions {
        batch_max: args.batch_max,
        checkpointer: Some(signer),
        ..WriteOptions::default()
    };
    let store = Store::open(url, options)
        .await
        .with_context(|| format!("opening {label}"))?;
    let eur = Currency::from_code("EUR")?;
    let run_id = Id::new();

    // Setup: a settlement account funds every customer account.
    let bar = crate::progress_bar(args.accounts as u64, "opening accounts");
    let open = |kind: AccountKind, bounded: bool, key: String| Request {
        idempotency_key: key,
        command: Command::OpenAccount {
            owner: format!("bench-{run_id}"),
            currency: eur,
            kind,
            flags: AccountFlags {
                debits_must_not_exceed_credits: bounded,
                ..Default::default()
            },
            limit_minor: 0,
        },
    };
    let world = store
        .execute(open(
            AccountKind::Settlement,
            false,
            format!("bench:{run_id}:world"),
        ))
        .await?
        .account()
        .map(|a| a.id)
        .context("settlement account")?;
    let mut accounts = Vec::with_capacity(args.accounts);
    for chunk in (0..args.accounts).collect::<Vec<_>>().chunks(2048) {
        let futs = chunk.iter().map(|i| {
            store.execute(open(
                AccountKind::Customer,
                true,
                format!("bench:{run_id}:open:{i}"),
            ))
        });
        for r in futures::future::join_all(futs).await {
            accounts.push(r?.account().map(|a| a.id).context("account")?);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let fund = accounts.iter().enumerate().map(|(i, a)| {
        store.execute(Request {
            idempotency_key: format!("bench:{run_id}:fund:{i}"),
            command: Command::Transfer {
                debit_account: world,
                credit_account: *a,
                amount_minor: 1_000_000_000,
                currency: eur,
                timeout_s: None,
                memo: String::new(),
            },
        })
    });
    for r in futures::future::join_all(fund).await {
        r?;
    }

    // Load: each client submits transfers back to back until the deadline.
    let accounts = Arc::new(accounts);
    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let bar = crate::progress_bar(args.seconds, "load");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.concurrency);
    for client in 0..args.concurrency {
        let (store, accounts, done, refused, stop) = (
            store.clone(),
            accounts.clone(),
            done.clone(),
            refused.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (client as u64 + 1);
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                // xorshift: picking accounts needs no cryptographic randomness.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let a = (x % accounts.len() as u64) as usize;
                let b = ((x >> 32) % accounts.len() as u64) as usize;
                if a == b {
                    continue;
                }
                n += 1;
                let r = store
                    .execute(Request {
                        idempotency_key: format!("bench:{run_id}:{client}:{n}"),
                        command: Command::Transfer {
                            debit_account: accounts[a],
                            credit_account: accounts[b],
                            amount_minor: 1 + (x % 100) as i64,
                            currency: eur,
                            timeout_s: None,
                            memo: String::new(),
                        },
                    })
                    .await;
                match r {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(StoreError::Ledger(_)) => refused.fetch_add(1, Ordering::Relaxed),
                    Err(e) => return Err(e),
                };
            }
            Ok(())
        }));
    }
    for _ in 0..args.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let count = done.load(Ordering::Relaxed);
    let rate = count as f64 / elapsed;
    println!(
        "{label}: {count} transfers acknowledged in {elapsed:.1} s = {} transfers/s ({} refused by limits)",
        fmt_rate(rate),
        refused.load(Ordering::Relaxed)
    );

    // Prove it: recompute everything from the journal.
    let audit_started = Instant::now();
    let report = store
        .audit(&tally_service::node::verify_checkpoint, &policy, &|_| {})
        .await?;
    println!(
        "{label}: audit {} ({} journal entries, {} signed checkpoints, {:.1} s)",
        if report.ok() { "passed" } else { "FAILED" },
        report.ledger.entries,
        report.signatures_verified,
        audit_started.elapsed().as_secs_f64()
    );
    for p in report.ledger.problems.iter().take(10) {
        println!("  problem: {p}");
    }
    store.close().await;
    Ok(Measured {
        rate,
        audit_ok: report.ok(),
    })
}
