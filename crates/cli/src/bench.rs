//! Benchmarks that print their figures next to `pgbench` TPC-B measured on the same
//! PostgreSQL in the same run.
//!
//! `tally bench ledger`: durable transfers per second on SQLite and PostgreSQL, three ways.
//! * Single transfers in process: many concurrent clients submit one transfer each through
//!   `Store::execute`, the path every API call takes (validation, batched writer, journal,
//!   idempotency, checkpoints).
//! * Batches in process: a few clients send batches of transfer events (100, and the most a
//!   batch holds, 8,189) to `Store::execute_events` back to back; an event counts only when it
//!   was answered `created`.
//! * Over HTTP on loopback, from a node (`tally serve`'s router) on the same database: the same
//!   batches through `POST /v1/transfers/batch`, and one transfer per `POST /v1/transfers`
//!   (each with its own Idempotency-Key) from 64 connections.
//!
//! Every load moves small amounts between random pairs of funded accounts, and a transfer
//! counts only when its caller got the answer, which happens after its transaction committed
//! (`synchronous=FULL` on SQLite, `fsync=on` on PostgreSQL). A full audit follows every row so
//! a fast but wrong ledger cannot pass. At the end: the process's peak memory and the storage
//! each transfer takes after a checkpoint.
//!
//! `tally bench auth`: completed out-of-band authentications per second (SPEC A1–A4); see
//! [`auth`] for what is measured.
//!
//! `tally bench seal`: locked delivery (issue [3]) file → file in MiB/s, next to `age` on the
//! same file and the `openssl speed` ChaCha20-Poly1305 ceiling; see [`crate::bench_seal`].

use crate::bench_kit::{code_in, fmt_rate, fmt_ratio, load, print_rows};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tally_client::wire::ledger::{TransferBatchRequest, TransferEventDto, TransferRequest};
use tally_kernel::{Currency, Id};
use tally_ledger::batch::{BATCH_EVENTS_MAX, EventStatus, TransferEvent};
use tally_ledger::{AccountFlags, AccountKind, Command, Request};
use tally_store::audit::AuditPolicy;
use tally_store::{Store, StoreError, WriteOptions};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable transfers/s on SQLite and PostgreSQL (single transfers and batches in process,
    /// batches and one transfer per request over HTTP), with pgbench TPC-B as the reference.
    Ledger(LedgerBench),
    /// Completed out-of-band authentications/s (open a login session, read its code from the
    /// dev inbox, verify it; each step durable) on SQLite and PostgreSQL, with pgbench TPC-B
    /// as the reference.
    Auth(AuthBench),
    /// Seal and open a file as a locked-delivery package (file → file, MiB/s) next to age
    /// (X25519 recipient) on the same file, with openssl's ChaCha20-Poly1305 speed as the
    /// in-memory ceiling, and the peak memory at two file sizes.
    Seal(crate::bench_seal::SealBench),
    /// Complete two-party receipts/s (both parties' signatures and the server's made and
    /// verified, stored durably) on SQLite, plain and fair exchange, with `openssl speed
    /// ed25519` as the reference.
    Receipts(crate::bench_receipts::ReceiptsBench),
    /// Purchases/s inside open trading sessions at one merchant agent (each durable before
    /// its answer), in process and over HTTP, with the raw SQLite batched-insert rate of the
    /// same rows as the reference.
    Sessions(crate::bench_sessions::SessionsBench),
    /// Encrypted 1 KiB posts/s through the relay from pad holders into other pads' mailboxes
    /// (enciphered and tagged with pad bytes, debited, durable), over HTTP and in process, on
    /// SQLite and PostgreSQL, and the pad bytes/s they consume, with durable transfers/s over
    /// HTTP on the same node as the reference.
    Pads(crate::bench_pads::PadsBench),
    /// The web pages' latency over HTTP on a seeded node (p50/p99 of each main page, signed in
    /// where it needs a session), next to the JSON API's answer for the same data.
    Web(crate::bench_web::WebBench),
}

#[derive(Args)]
pub struct LedgerBench {
    /// Seconds of load of the single-transfer row, per backend.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients submitting single transfers in process (each waits for its answer
    /// before the next).
    #[arg(long, default_value_t = 4096)]
    concurrency: usize,
    /// Customer accounts the transfers move between (opened in process, and again over HTTP).
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Most transfers per write transaction (group commit) in process.
    #[arg(long, default_value_t = 4096)]
    batch_max: usize,
    /// Seconds of load of each batch row and of each row over HTTP, per backend.
    #[arg(long, default_value_t = 5)]
    batch_seconds: u64,
    /// Concurrent clients sending batches of 8,189, in process and over HTTP (each waits for
    /// its batch's results before sending the next). Smaller batches get as many clients as
    /// keep the same number of events in flight (at most 512), so every batch row offers the
    /// node the same load.
    #[arg(long, default_value_t = 4)]
    batch_clients: usize,
    /// HTTP connections sending one transfer per request (each waits for its answer).
    #[arg(long, default_value_t = 64)]
    http_connections: usize,
    /// Skip the rows over HTTP (no node is started on the database). A node records its keys
    /// in the database, so a kept `--database-url` serves one run with HTTP rows.
    #[arg(long)]
    no_http: bool,
    #[command(flatten)]
    reference: Reference,
}

/// Clients sending batches of `size`: `--batch-clients` for the largest batches, and for
/// smaller ones as many as keep the same number of events in flight, at most 512.
fn batch_clients(args: &LedgerBench, size: usize) -> usize {
    let in_flight = args.batch_clients * BATCH_EVENTS_MAX;
    (in_flight / size.max(1)).clamp(args.batch_clients, 512.max(args.batch_clients))
}

/// The batch sizes measured: a small batch, and the most one batch holds.
const BATCH_SIZES: [usize; 2] = [100, BATCH_EVENTS_MAX];

/// The PostgreSQL under test and the pgbench reference, shared by every benchmark.
#[derive(Args)]
pub struct Reference {
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

/// A PostgreSQL to benchmark on: the URL for Tally, the URL for pgbench, and the throwaway
/// cluster (stopped on drop) when one was started.
pub struct Postgres {
    pub bench_url: String,
    pub pgbench_url: String,
    _cluster: Option<tally_testkit::PgCluster>,
}

impl Reference {
    /// The PostgreSQL to use, or `None` (and a line saying why) when there is none.
    pub fn postgres(&self) -> anyhow::Result<Option<Postgres>> {
        if self.no_postgres {
            return Ok(None);
        }
        if let Some(url) = &self.database_url {
            return Ok(Some(Postgres {
                bench_url: url.clone(),
                pgbench_url: url.clone(),
                _cluster: None,
            }));
        }
        if tally_testkit::postgres_bin_dir().is_none() {
            println!("PostgreSQL: no server binaries found (install Debian's postgresql); skipped");
            return Ok(None);
        }
        eprintln!("starting a throwaway PostgreSQL cluster …");
        let cluster = tally_testkit::PgCluster::start().map_err(|e| anyhow::anyhow!("{e}"))?;
        let bench_url = cluster.url();
        let pgbench_url = cluster
            .create_database("pgbench")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Some(Postgres {
            bench_url,
            pgbench_url,
            _cluster: Some(cluster),
        }))
    }

    /// pgbench TPC-B on `pg`, in transactions per second.
    pub async fn pgbench(&self, pg: &Postgres) -> anyhow::Result<f64> {
        eprintln!(
            "running pgbench TPC-B: -i -s {} then -c 8 -j 2 -T {} …",
            self.pgbench_scale, self.pgbench_seconds
        );
        let (scale, secs) = (self.pgbench_scale, self.pgbench_seconds);
        let url = pg.pgbench_url.clone();
        tokio::task::spawn_blocking(move || tally_testkit::pgbench_tpcb(&url, scale, 8, 2, secs))
            .await?
            .map_err(|e| anyhow::anyhow!("pgbench: {e}"))
    }

    /// The results table: pgbench first (1.0x), then each measurement with its ratio.
    pub fn print_table(&self, pgbench: Option<f64>, rows: &[(String, f64)]) {
        let mut lines = Vec::with_capacity(rows.len() + 1);
        if let Some(tps) = pgbench {
            lines.push([
                format!(
                    "pgbench TPC-B (-s {} -c 8 -j 2 -T {})",
                    self.pgbench_scale, self.pgbench_seconds
                ),
                fmt_rate(tps),
                "1.0x".to_string(),
            ]);
        }
        for (label, rate) in rows {
            lines.push([label.clone(), fmt_rate(*rate), fmt_ratio(*rate, pgbench, 1)]);
        }
        print_rows(["measurement", "per second", "vs pgbench"], &lines);
    }
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    // Quiet by default (the figures are the output); `TALLY_LOG=sqlx::query=debug` shows
    // every statement a run makes, as `tally serve` would log them.
    if std::env::var_os("TALLY_LOG").is_some() {
        crate::serve::init_tracing("text");
    }
    match cmd {
        BenchCommand::Ledger(args) => ledger(args).await,
        BenchCommand::Auth(args) => auth(args).await,
        BenchCommand::Receipts(args) => crate::bench_receipts::run(args).await,
        BenchCommand::Sessions(args) => crate::bench_sessions::run(args).await,
        BenchCommand::Pads(args) => crate::bench_pads::run(args).await,
        BenchCommand::Web(args) => crate::bench_web::run(args).await,
        // Blocking file I/O and child processes: off the async workers.
        BenchCommand::Seal(args) => {
            tokio::task::spawn_blocking(move || crate::bench_seal::run(args)).await?
        }
    }
}

async fn ledger(args: LedgerBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.accounts >= 2,
        "--accounts must be at least 2 (a transfer moves between two)"
    );
    anyhow::ensure!(
        args.concurrency > 0 && args.batch_clients > 0 && args.http_connections > 0,
        "--concurrency, --batch-clients and --http-connections must be at least 1"
    );
    println!(
        "tally bench ledger: {} accounts; single transfers in process: {} clients, {} s, \
         transactions of up to {}; batches of 100 and 8,189: {} and {} clients, {} s each, in \
         process{}",
        args.accounts,
        args.concurrency,
        args.seconds,
        args.batch_max,
        batch_clients(&args, BATCH_SIZES[0]),
        batch_clients(&args, BATCH_EVENTS_MAX),
        args.batch_seconds,
        if args.no_http {
            String::new()
        } else {
            format!(
                " and over HTTP; one transfer per HTTP request: {} connections, {} s",
                args.http_connections, args.batch_seconds
            )
        }
    );
    let dir = tempfile::tempdir()?;
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    compare(
        &args.reference,
        "targets: batched SQLite >= 30x pgbench, one per HTTP request >= 5x, PostgreSQL batched \
         >= 10x, storage <= 300 bytes/transfer; every counted transfer was acknowledged after \
         commit",
        async |label, postgres_url| {
            measure(label, postgres_url.unwrap_or(&sqlite_url), &args).await
        },
    )
    .await
}

/// The run shared by every benchmark: `measure` on SQLite (`None`), then, unless PostgreSQL
/// is skipped, on PostgreSQL (its URL) followed by pgbench; then the table (each row named
/// after its store), the storage each store used, the peak memory, and the `targets` line.
/// Fails when an audit failed.
async fn compare(
    reference: &Reference,
    targets: &str,
    measure: impl AsyncFn(&str, Option<&str>) -> anyhow::Result<Measured>,
) -> anyhow::Result<ExitCode> {
    let mut measured = vec![("SQLite", measure("SQLite", None).await?)];
    let mut pgbench = None;
    if let Some(postgres) = reference.postgres()? {
        let pg = measure("PostgreSQL", Some(&postgres.bench_url)).await?;
        measured.push(("PostgreSQL", pg));
        pgbench = Some(reference.pgbench(&postgres).await?);
    }

    let rows: Vec<(String, f64)> = measured
        .iter()
        .flat_map(|(store, m)| {
            m.rows
                .iter()
                .map(move |(what, rate)| (format!("{store} {what}"), *rate))
        })
        .collect();
    reference.print_table(pgbench, &rows);
    for (store, m) in &measured {
        if let Some(s) = &m.storage {
            println!(
                "{store} storage after a checkpoint: {} bytes per transfer ({} bytes of {}, {} \
                 transfer rows)",
                fmt_rate(s.bytes as f64 / s.transfers.max(1) as f64),
                fmt_rate(s.bytes as f64),
                s.what,
                fmt_rate(s.transfers as f64)
            );
        }
        if let Some(s) = &m.batched {
            println!(
                "{store} storage of the batches of {} alone: {} bytes per transfer ({} bytes \
                 more of {}, for {} more transfer rows)",
                fmt_rate(BATCH_EVENTS_MAX as f64),
                fmt_rate(s.bytes as f64 / s.transfers.max(1) as f64),
                fmt_rate(s.bytes as f64),
                s.what,
                fmt_rate(s.transfers as f64)
            );
        }
    }
    match peak_rss_kib() {
        Some(kib) => println!(
            "peak RSS of this process (VmHWM): {:.1} MiB",
            kib as f64 / 1024.0
        ),
        None => println!("peak RSS of this process: unknown (no VmHWM in /proc/self/status)"),
    }
    println!("{targets}");
    let audits_ok = measured.iter().all(|(_, m)| m.audit_ok);
    if !audits_ok {
        println!("an audit FAILED: the figures above do not count");
    }
    Ok(if audits_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What one store measured: each row (named without the store) and its rate, whether every
/// audit passed, and the storage it used when measured.
pub struct Measured {
    pub rows: Vec<(String, f64)>,
    pub audit_ok: bool,
    pub storage: Option<Storage>,
    /// What the in-process batches of 8,189 alone added: the difference of the storage
    /// measured just before and just after them.
    pub batched: Option<Storage>,
}

/// The bytes a store used after a checkpoint (`what` says which), for its transfer rows.
pub struct Storage {
    pub bytes: u64,
    pub what: &'static str,
    pub transfers: i64,
}

/// This process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    value.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// Random distinct pairs of `n` accounts and small amounts (1 to 100 minor units), so almost
/// every transfer goes through. Xorshift: picking accounts needs no cryptographic randomness.
struct Pairs {
    x: u64,
    n: u64,
}

impl Pairs {
    fn new(seed: usize, n: usize) -> Pairs {
        Pairs {
            x: 0x9E37_79B9_7F4A_7C15 ^ (seed as u64 + 1),
            n: n as u64,
        }
    }

    /// The next pair's indices and amount.
    fn next(&mut self) -> (usize, usize, i64) {
        loop {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            let (a, b) = (self.x % self.n, (self.x >> 32) % self.n);
            if a != b {
                return (a as usize, b as usize, 1 + (self.x % 100) as i64);
            }
        }
    }
}

/// The figures of one store: every row of the table, an audit after each, then the storage.
///
/// In process, on a `Store` of its own with a bench key as checkpoint signer: single transfers,
/// then the batches. Then, unless `--no-http`, a node (HTTP on loopback) on the same database,
/// with accounts of its own opened and funded over HTTP: the batches, then one transfer per
/// request. The audits after the node started trust both signers.
async fn measure(label: &str, url: &str, args: &LedgerBench) -> anyhow::Result<Measured> {
    let key = Arc::new(tally_kernel::crypto::SigningKey::generate());
    let node_defaults = tally_service::NodeConfig::new("");
    let mut policy = AuditPolicy {
        trusted_signers: vec![key.verifying_key().to_bytes()],
        checkpoint_gap_max: Some(
            WriteOptions::default()
                .checkpoint_every
                .max(node_defaults.checkpoint_every)
                + args.batch_max.max(node_defaults.batch_max) as i64,
        ),
    };
    let signer = Arc::new(tally_service::node::NodeSigner(key));
    let options = WriteOptions {
        batch_max: args.batch_max,
        checkpointer: Some(signer),
        ..WriteOptions::default()
    };
    let mut store = Store::open(url, options.clone())
        .await
        .with_context(|| format!("opening {label}"))?;
    let eur = Currency::from_code("EUR")?;
    let accounts = Arc::new(accounts_in_process(&store, args.accounts, eur).await?);

    let mut rows = Vec::new();
    let mut audit_ok = true;
    let rate = singles_in_process(label, &store, &accounts, eur, args).await?;
    rows.push(("single transfers, in process".to_string(), rate));
    audit_ok &= audit(label, &store, &policy).await?;
    let mut before_batched = None;
    for size in BATCH_SIZES {
        if size == BATCH_EVENTS_MAX {
            // The storage just before the largest batches, so what they add can be told
            // apart from the single transfers' (whose journal entries carry a key each).
            let transfers = store.counts().await?.transfers;
            store.close().await;
            before_batched = Some(storage(url, transfers).await?);
            store = Store::open(url, options.clone())
                .await
                .with_context(|| format!("reopening {label}"))?;
        }
        let what = format!("batches of {}, in process", fmt_rate(size as f64));
        let link = Link::Store(store.clone());
        let rate = batches(
            label,
            &what,
            &accounts,
            eur,
            size,
            args,
            || Ok(link.clone()),
        )
        .await?;
        rows.push((what, rate));
        audit_ok &= audit(label, &store, &policy).await?;
    }
    let mut transfers = store.counts().await?.transfers;
    store.close().await;
    let batched = match before_batched {
        Some(before) => {
            let after = storage(url, transfers).await?;
            Some(Storage {
                bytes: after.bytes.saturating_sub(before.bytes),
                what: after.what,
                transfers: transfers - before.transfers,
            })
        }
        None => None,
    };

    if !args.no_http {
        let op = crate::bench_sessions::operator_on(label, Some(url.to_string())).await?;
        policy.trusted_signers.push(
            tally_kernel::crypto::VerifyingKey::from_hex(&op.node.node_public_key())
                .map_err(|e| anyhow::anyhow!("node key: {e}"))?
                .to_bytes(),
        );
        let accounts = Arc::new(accounts_over_http(&op.admin, args.accounts, eur).await?);
        let connect = || -> anyhow::Result<Link> {
            // A client of its own: its own connection.
            Ok(Link::Http(
                tally_client::Client::builder(&op.url)
                    .api_key(op.admin_key.clone())
                    .build()?,
            ))
        };
        for size in BATCH_SIZES {
            let what = format!("HTTP batches of {}", fmt_rate(size as f64));
            let rate = batches(label, &what, &accounts, eur, size, args, connect).await?;
            rows.push((what, rate));
            audit_ok &= audit(label, op.node.store(), &policy).await?;
        }
        let rate = singles_over_http(label, &accounts, args, connect).await?;
        rows.push(("HTTP one transfer per request".to_string(), rate));
        audit_ok &= audit(label, op.node.store(), &policy).await?;
        transfers = op.node.store().counts().await?.transfers;
        op.stop().await;
    }
    let storage = storage(url, transfers).await?;
    Ok(Measured {
        rows,
        audit_ok,
        storage: Some(storage),
        batched,
    })
}

/// Set-up in process: `n` bounded customer accounts, each funded by one settlement account.
async fn accounts_in_process(store: &Store, n: usize, eur: Currency) -> anyhow::Result<Vec<Id>> {
    let run_id = Id::new();
    let bar = crate::progress_bar(n as u64, "opening accounts");
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
            imported_at: None,
            references: Default::default(),
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
    let mut accounts = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(2048) {
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
    fund(&Link::Store(store.clone()), world, &accounts, eur).await?;
    Ok(accounts)
}

/// Set-up over HTTP: `n` bounded customer accounts opened by the operator, 64 requests at a
/// time, each funded by one settlement account.
async fn accounts_over_http(
    admin: &tally_client::Client,
    n: usize,
    eur: Currency,
) -> anyhow::Result<Vec<Id>> {
    use futures::{StreamExt, TryStreamExt};
    use tally_client::wire::ledger::{AccountKindDto, OpenAccountRequest};
    let open = |kind, bounded| {
        let request = OpenAccountRequest {
            owner: None,
            currency: eur.to_string(),
            kind: Some(kind),
            debits_must_not_exceed_credits: Some(bounded),
            ..Default::default()
        };
        async move {
            let opened = admin.account_open(None, &request).await?;
            anyhow::Ok(Id(opened.value.id))
        }
    };
    let world = open(AccountKindDto::Settlement, false).await?;
    let bar = crate::progress_bar(n as u64, "opening accounts (HTTP)");
    let accounts: Vec<Id> = futures::stream::iter(0..n)
        .map(|_| open(AccountKindDto::Customer, true))
        .buffered(64)
        .inspect_ok(|_| bar.inc(1))
        .try_collect()
        .await?;
    bar.finish_and_clear();
    fund(&Link::Http(admin.clone()), world, &accounts, eur).await?;
    Ok(accounts)
}

/// Funds every account with 10,000,000.00 from `world`, in full batches.
async fn fund(link: &Link, world: Id, accounts: &[Id], eur: Currency) -> anyhow::Result<()> {
    for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
        let events = chunk
            .iter()
            .map(|a| TransferEvent::single(Id::new(), world, *a, 1_000_000_000, eur))
            .collect();
        let (created, _) = link.batch(events).await?;
        anyhow::ensure!(
            created == chunk.len() as u64,
            "funding: {created} of {} transfers created",
            chunk.len()
        );
    }
    Ok(())
}

/// Single transfers in process: each of `--concurrency` clients submits one transfer after
/// another through `Store::execute` until the deadline. Transfers per second acknowledged.
async fn singles_in_process(
    label: &str,
    store: &Store,
    accounts: &Arc<Vec<Id>>,
    eur: Currency,
    args: &LedgerBench,
) -> anyhow::Result<f64> {
    let run_id = Id::new();
    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let elapsed = load(args.concurrency, args.seconds, |client, stop| {
        let (store, accounts, done, refused) = (
            store.clone(),
            accounts.clone(),
            done.clone(),
            refused.clone(),
        );
        async move {
            let mut pairs = Pairs::new(client, accounts.len());
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let (a, b, amount_minor) = pairs.next();
                n += 1;
                let r = store
                    .execute(Request {
                        idempotency_key: format!("bench:{run_id}:{client}:{n}"),
                        command: Command::Transfer {
                            debit_account: accounts[a],
                            credit_account: accounts[b],
                            amount_minor,
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
        }
    })
    .await?;
    let count = done.load(Ordering::Relaxed);
    let rate = count as f64 / elapsed;
    println!(
        "{label}: single transfers, in process: {count} acknowledged in {elapsed:.1} s = {} \
         transfers/s ({} refused by limits)",
        fmt_rate(rate),
        refused.load(Ordering::Relaxed)
    );
    Ok(rate)
}

/// Where a client's batches go: the store's writer in process, or a node over HTTP.
#[derive(Clone)]
enum Link {
    Store(Store),
    Http(tally_client::Client),
}

impl Link {
    /// Sends one batch and waits for its results: the events answered `created`, and the
    /// others.
    async fn batch(&self, events: Vec<TransferEvent>) -> anyhow::Result<(u64, u64)> {
        let n = events.len() as u64;
        let created = match self {
            Link::Store(store) => {
                let batched = store.execute_events(events).await?;
                let results = batched.results.iter();
                results.filter(|r| r.status == EventStatus::Created).count()
            }
            Link::Http(client) => {
                let events = events.iter().map(event_dto).collect();
                let answer = client
                    .transfer_batch(&TransferBatchRequest { events })
                    .await?;
                let results = answer.results.iter();
                results.filter(|r| r.status == "created").count()
            }
        } as u64;
        Ok((created, n - created))
    }
}

/// A single transfer event as it goes on the wire.
fn event_dto(e: &TransferEvent) -> TransferEventDto {
    TransferEventDto {
        id: e.id.0,
        kind: None,
        debit_account: e.debit_account.map(|a| a.0),
        credit_account: e.credit_account.map(|a| a.0),
        amount_minor: e.amount_minor,
        currency: e.currency.map(|c| c.to_string()),
        pending_id: None,
        timeout_s: None,
        flags: Default::default(),
        user_data_128: None,
        user_data_64: None,
        user_data_32: None,
        code: None,
        memo: None,
        timestamp: None,
    }
}

/// Batches of `size` single transfers between random pairs of `accounts`: each of
/// [`batch_clients`] clients (each with the link `connect` gives it) sends one batch after
/// another until the deadline. Transfers per second answered `created`.
async fn batches(
    label: &str,
    what: &str,
    accounts: &Arc<Vec<Id>>,
    eur: Currency,
    size: usize,
    args: &LedgerBench,
    connect: impl Fn() -> anyhow::Result<Link>,
) -> anyhow::Result<f64> {
    let created = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let elapsed = load(
        batch_clients(args, size),
        args.batch_seconds,
        |client, stop| {
            let (link, accounts, created, other) =
                (connect(), accounts.clone(), created.clone(), other.clone());
            async move {
                let link = link?;
                let mut pairs = Pairs::new(client, accounts.len());
                while !stop.load(Ordering::Relaxed) {
                    let events = (0..size)
                        .map(|_| {
                            let (a, b, amount) = pairs.next();
                            TransferEvent::single(Id::new(), accounts[a], accounts[b], amount, eur)
                        })
                        .collect();
                    let (c, o) = link.batch(events).await?;
                    created.fetch_add(c, Ordering::Relaxed);
                    other.fetch_add(o, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }
        },
    )
    .await?;
    let count = created.load(Ordering::Relaxed);
    let rate = count as f64 / elapsed;
    println!(
        "{label}: {what}: {count} transfers created in {elapsed:.1} s = {} transfers/s ({} \
         events not created)",
        fmt_rate(rate),
        other.load(Ordering::Relaxed)
    );
    Ok(rate)
}

/// One transfer per `POST /v1/transfers`, each with its own Idempotency-Key, from
/// `--http-connections` clients (each with the link `connect` gives it) until the deadline.
/// Transfers per second answered.
async fn singles_over_http(
    label: &str,
    accounts: &Arc<Vec<Id>>,
    args: &LedgerBench,
    connect: impl Fn() -> anyhow::Result<Link>,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let elapsed = load(args.http_connections, args.batch_seconds, |client, stop| {
        let (link, accounts, done) = (connect(), accounts.clone(), done.clone());
        async move {
            let Link::Http(http) = link? else {
                anyhow::bail!("one transfer per request is measured over HTTP only");
            };
            let mut pairs = Pairs::new(client, accounts.len());
            while !stop.load(Ordering::Relaxed) {
                let (a, b, amount_minor) = pairs.next();
                let request = TransferRequest {
                    debit_account: accounts[a].0,
                    credit_account: accounts[b].0,
                    amount: None,
                    amount_minor: Some(amount_minor),
                    currency: Some("EUR".into()),
                    memo: None,
                    notify: None,
                };
                http.transfer(&Id::new().to_string(), &request).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }
    })
    .await?;
    let count = done.load(Ordering::Relaxed);
    let rate = count as f64 / elapsed;
    println!(
        "{label}: HTTP one transfer per request: {count} acknowledged in {elapsed:.1} s = {} \
         transfers/s",
        fmt_rate(rate)
    );
    Ok(rate)
}

/// The storage the store at `url` uses after a checkpoint, for `transfers` rows, once every
/// connection of the benchmark is closed. SQLite: the closing connection checkpointed the WAL
/// into the database file and removed it, so the file is `page_count × page_size` bytes, read
/// from its header. PostgreSQL: after `CHECKPOINT`, `pg_total_relation_size` (indexes and
/// TOAST included) of the accounts, transfers and journal.
async fn storage(url: &str, transfers: i64) -> anyhow::Result<Storage> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let wal = std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len());
        anyhow::ensure!(
            wal == 0,
            "{path}: {wal} bytes still in the WAL after every connection closed"
        );
        let mut header = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open(path)?, &mut header)?;
        let page_size = match u16::from_be_bytes([header[16], header[17]]) {
            1 => 65_536,
            n => u64::from(n),
        };
        let page_count = u64::from(u32::from_be_bytes([
            header[28], header[29], header[30], header[31],
        ]));
        return Ok(Storage {
            bytes: page_count * page_size,
            what: "the database file (page_count x page_size)",
            transfers,
        });
    }
    let url = url.to_string();
    let bytes = tokio::task::spawn_blocking(move || {
        // CHECKPOINT needs a superuser (a throwaway cluster's is); the sizes do not depend on it.
        let _ = tally_testkit::psql(&url, "CHECKPOINT");
        tally_testkit::psql(
            &url,
            "SELECT pg_total_relation_size('accounts') + pg_total_relation_size('transfers') \
             + pg_total_relation_size('journal')",
        )
    })
    .await?
    .map_err(|e| anyhow::anyhow!("psql: {e}"))?;
    Ok(Storage {
        bytes: bytes.trim().parse().context("pg_total_relation_size")?,
        what: "accounts, transfers and journal with their indexes",
        transfers,
    })
}

/// The full audit after a row (printed with up to ten problems): whether it passed.
async fn audit(label: &str, store: &Store, policy: &AuditPolicy) -> anyhow::Result<bool> {
    let audit_started = Instant::now();
    let report = store
        .audit(&tally_service::node::verify_checkpoint, policy, &|_| {})
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
    Ok(report.ok())
}

/// `tally bench auth`.
#[derive(Args)]
pub struct AuthBench {
    /// Seconds of load per backend (the set-up before it is not counted).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients, each running one authentication after another.
    #[arg(long, default_value_t = 512)]
    clients: usize,
    /// Subscribers, each with a verified dev address; each client takes its own users
    /// (users are shared only when there are fewer users than clients).
    #[arg(long, default_value_t = 512)]
    users: usize,
    /// SMTP connections of the node's e-mail channel, and of the plain sender measuring the
    /// SMTP listener; 0 skips the rows through HTTP and SMTP.
    #[arg(long, default_value_t = 16)]
    smtp_connections: usize,
    /// Concurrent clients of the rows through HTTP and SMTP.
    #[arg(long, default_value_t = 64)]
    smtp_clients: usize,
    #[command(flatten)]
    reference: Reference,
}

/// `tally bench auth`: completed out-of-band authentications per second.
///
/// What is measured: an in-process dev-mode node (`Node::open`, as `tally serve --dev` runs
/// it, without HTTP) per backend. Set-up, not counted: `users` subscribers, each with a `dev`
/// address verified the normal way (`address_add`, the code from the dev inbox,
/// `oob_verify`). Load: `clients` tasks, each looping `oob_open` (a login session for one
/// of its users) → the code read from that user's dev inbox (`Node::dev_inbox`, the message
/// whose `data.session` is this session) → `oob_verify`. One authentication counts when the
/// verification answered with an access token; both the open and the verification are
/// ledger commands whose journal entry, session row and message committed before the call
/// returned (`synchronous=FULL`, `fsync=on`). The journal must grow by at least two entries
/// per counted authentication, and the run ends with a full audit.
async fn auth(args: AuthBench) -> anyhow::Result<ExitCode> {
    if args.clients == 0 || args.users == 0 {
        anyhow::bail!("--clients and --users must be at least 1");
    }
    println!(
        "tally bench auth: {} clients, {} users with a verified dev address, {} s per backend",
        args.clients, args.users, args.seconds
    );
    let code = compare(
        &args.reference,
        "target: SQLite >= 5x pgbench; every counted authentication was verified, its open and its verification each acknowledged after commit",
        async |label, postgres_url| {
            measure_auth(label, postgres_url.map(str::to_string), &args).await
        },
    )
    .await?;
    if args.smtp_connections > 0 {
        println!();
        println!(
            "through the path users take: HTTP on loopback and real SMTP ({} clients, {} SMTP connections, {} s)",
            args.smtp_clients, args.smtp_connections, args.seconds
        );
        let f = crate::bench_smtp::measure(
            args.smtp_clients.max(1),
            args.seconds,
            args.smtp_connections,
        )
        .await?;
        print_rows(
            ["", "per second", "vs listener"],
            &[
                [
                    "SMTP listener, plain sender (messages)".into(),
                    fmt_rate(f.listener_rate),
                    "1.0x".into(),
                ],
                [
                    "Tally e-mail authentications (HTTP + SMTP)".into(),
                    fmt_rate(f.flow_rate),
                    fmt_ratio(f.flow_rate, Some(f.listener_rate), 2),
                ],
            ],
        );
        println!(
            "commit to SMTP handoff under light load: p50 {:.1} ms, p90 {:.1} ms",
            f.handoff_ms.0, f.handoff_ms.1
        );
        println!(
            "targets: flows >= 0.8x the listener; handoff p50 <= 20 ms (each flow is two durable \
             commits and two HTTP requests; the in-process SQLite row above is the node's ceiling)"
        );
    }
    Ok(code)
}

/// The code sent for `session` to the dev inbox `address`, read as `GET
/// /v1/dev/inbox/{address}` reads it (the node puts the code into the stored message, which
/// holds only a placeholder): the newest message, or, when clients share a user and another
/// session's message is newer, the matching one among the latest. Never another session's
/// code.
async fn code_of(
    node: &tally_service::Node,
    admin: &tally_service::Principal,
    address: &str,
    session: &str,
) -> anyhow::Result<String> {
    for limit in [1, 256] {
        let messages = node.dev_inbox(admin, address, limit).await?;
        let mine = messages.iter().find(|m| {
            m.message
                .data
                .get("session")
                .and_then(serde_json::Value::as_str)
                == Some(session)
        });
        if let Some(m) = mine {
            return code_in(&m.message.body)
                .map(str::to_string)
                .with_context(|| format!("no code in the message for session {session}"));
        }
    }
    anyhow::bail!("no message for session {session} in the dev inbox {address}")
}

async fn measure_auth(
    label: &str,
    database_url: Option<String>,
    args: &AuthBench,
) -> anyhow::Result<Measured> {
    use tally_service::oob::{AppRequest, OobSettings, OpenSession, Opened};
    use tally_service::{Node, NodeConfig};

    let dir = tempfile::tempdir()?;
    let config = NodeConfig {
        database_url,
        dev: true,
        oob: OobSettings {
            // A real node caps the codes one address receives (20 per 10 minutes) so nobody
            // can flood a phone; the benchmark sends thousands to each dev inbox on purpose.
            address_quota: i64::MAX,
            // The load's users sign in far more often than a person: no daily cap.
            user_daily_quota: i64::MAX,
            ..OobSettings::default()
        },
        ..NodeConfig::new(dir.path().join("node"))
    };
    let (node, admin_key) = Node::open(&config).await.with_context(|| {
        format!(
            "opening a dev node on {label} (a --database-url must be a database no other node \
             used: it records that node's code key)"
        )
    })?;
    let admin_key = admin_key.context("a fresh data directory gets a first admin key")?;
    let admin = Arc::new(node.authenticate(admin_key.expose()).await?);
    let policy = AuditPolicy {
        trusted_signers: vec![
            tally_kernel::crypto::VerifyingKey::from_hex(&node.node_public_key())
                .map_err(|e| anyhow::anyhow!("node key: {e}"))?
                .to_bytes(),
        ],
        checkpoint_gap_max: Some(config.checkpoint_every + config.batch_max as i64),
    };

    // Set-up (not counted): subscribers with a verified dev address each.
    let tag = Id::new().to_string();
    let tag = &tag[tag.len() - 8..];
    let users: Vec<String> = (0..args.users)
        .map(|i| format!("bench-{tag}-{i}"))
        .collect();
    let bar = crate::progress_bar(args.users as u64, "verifying addresses");
    for chunk in users.chunks(256) {
        let verify = chunk.iter().map(|user| {
            let (node, admin) = (node.clone(), admin.clone());
            async move {
                // The dev inbox is named after the user.
                let view = node
                    .oob()
                    .address_add(&admin, user, "dev", user, None)
                    .await?;
                let code = code_of(&node, &admin, user, &view.session).await?;
                node.oob().verify(&view.session, &code, None).await?;
                anyhow::Ok(())
            }
        });
        for r in futures::future::join_all(verify).await {
            r?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();

    // Load: each client authenticates its users in turn until the deadline.
    let users = Arc::new(users);
    let entries_before = node.store().counts().await?.journal_seq;
    let done = Arc::new(AtomicU64::new(0));
    let elapsed = load(args.clients, args.seconds, |client, stop| {
        let mine: Vec<usize> = if args.users >= args.clients {
            (client..args.users).step_by(args.clients).collect()
        } else {
            vec![client % args.users]
        };
        let (node, admin, users, done) = (node.clone(), admin.clone(), users.clone(), done.clone());
        async move {
            let mut turn = 0;
            while !stop.load(Ordering::Relaxed) {
                let user = &users[mine[turn % mine.len()]];
                turn += 1;
                let opened = node
                    .oob()
                    .open(
                        Some(&admin),
                        None,
                        OpenSession {
                            user: user.clone(),
                            app: AppRequest::Login,
                            channel: None,
                            certificate: None,
                        },
                        None,
                    )
                    .await?;
                let Opened::Secured { session, .. } = opened else {
                    anyhow::bail!("a login was executed without a code");
                };
                let code = code_of(&node, &admin, user, &session.session).await?;
                let verified = node.oob().verify(&session.session, &code, None).await?;
                if verified.token.is_none()
                    || verified.session.state != tally_proto::oob::State::Verified
                {
                    anyhow::bail!(
                        "session {} verified without an access token",
                        session.session
                    );
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }
    })
    .await?;
    let count = done.load(Ordering::Relaxed);
    let rate = count as f64 / elapsed;
    let entries = node.store().counts().await?.journal_seq - entries_before;
    println!(
        "{label}: {count} authentications completed in {elapsed:.1} s = {} sessions/s ({entries} journal entries)",
        fmt_rate(rate)
    );
    // Pair check: every counted authentication journaled its open and its verification.
    anyhow::ensure!(
        entries >= 2 * count as i64,
        "{label}: {count} authentications counted but only {entries} journal entries written"
    );

    let audit_ok = audit(label, node.store(), &policy).await?;
    node.store().close().await;
    Ok(Measured {
        rows: vec![(
            "out-of-band authentications (in process, dev inbox)".to_string(),
            rate,
        )],
        audit_ok,
        storage: None,
        batched: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_two_different_accounts_and_a_small_amount() {
        let mut pairs = Pairs::new(3, 2);
        for _ in 0..1000 {
            let (a, b, amount) = pairs.next();
            assert!(a < 2 && b < 2 && a != b);
            assert!((1..=100).contains(&amount));
        }
    }

    #[test]
    fn a_wire_event_reads_back_as_the_same_event() {
        let eur = Currency::from_code("EUR").expect("EUR");
        let event = TransferEvent::single(Id::new(), Id::new(), Id::new(), 42, eur);
        assert_eq!(event_dto(&event).to_event(), Ok(event));
    }
}
