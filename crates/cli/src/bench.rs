//! Benchmarks that print their figures next to `pgbench` TPC-B measured on the same
//! PostgreSQL in the same run.
//!
//! `tally bench ledger`: durable transfers per second on SQLite and PostgreSQL.
//! What is measured: many concurrent clients submit single transfers through
//! `Store::execute`, the path every API call takes (validation, batched writer, journal,
//! idempotency, checkpoints). A transfer counts only when its caller got the answer, which
//! happens after its transaction committed (`synchronous=FULL` on SQLite, `fsync=on` on
//! PostgreSQL). The run ends with a full audit so a fast but wrong ledger cannot pass.
//! HTTP parsing is not included: the figure is the ledger's, as pgbench's is the database's.
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
use tally_kernel::{Currency, Id};
use tally_ledger::{AccountFlags, AccountKind, Command, Request};
use tally_store::{Store, StoreError, WriteOptions};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable transfers/s on SQLite and PostgreSQL, with pgbench TPC-B as the reference.
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
    #[command(flatten)]
    reference: Reference,
}

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
    pub fn print_table(&self, pgbench: Option<f64>, rows: &[(&str, f64)]) {
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
            lines.push([
                label.to_string(),
                fmt_rate(*rate),
                fmt_ratio(*rate, pgbench, 1),
            ]);
        }
        print_rows(["measurement", "per second", "vs pgbench"], &lines);
    }
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
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
    println!(
        "tally bench ledger: {} clients, {} accounts, {} s per backend, batches of up to {}",
        args.concurrency, args.accounts, args.seconds, args.batch_max
    );
    let dir = tempfile::tempdir()?;
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    compare(
        &args.reference,
        "durable transfers",
        "targets: SQLite >= 20x pgbench, PostgreSQL >= 3x pgbench; every counted transfer was acknowledged after commit",
        async |label, postgres_url| {
            measure(label, postgres_url.unwrap_or(&sqlite_url), &args).await
        },
    )
    .await
}

/// The run shared by every benchmark: `measure` on SQLite (`None`), then, unless PostgreSQL
/// is skipped, on PostgreSQL (its URL) followed by pgbench; then the table (rows "SQLite
/// {what}" and "PostgreSQL {what}") and the `targets` line. Fails when an audit failed.
async fn compare(
    reference: &Reference,
    what: &str,
    targets: &str,
    measure: impl AsyncFn(&str, Option<&str>) -> anyhow::Result<Measured>,
) -> anyhow::Result<ExitCode> {
    let sqlite = measure("SQLite", None).await?;

    let mut pg = None;
    let mut pgbench = None;
    if let Some(postgres) = reference.postgres()? {
        pg = Some(measure("PostgreSQL", Some(&postgres.bench_url)).await?);
        pgbench = Some(reference.pgbench(&postgres).await?);
    }

    let sqlite_label = format!("SQLite {what}");
    let pg_label = format!("PostgreSQL {what}");
    let mut rows = vec![(sqlite_label.as_str(), sqlite.rate)];
    if let Some(pg) = &pg {
        rows.push((pg_label.as_str(), pg.rate));
    }
    reference.print_table(pgbench, &rows);
    println!("{targets}");
    let audits_ok = sqlite.audit_ok && pg.as_ref().is_none_or(|p| p.audit_ok);
    Ok(if audits_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub struct Measured {
    pub rate: f64,
    pub audit_ok: bool,
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
    let elapsed = load(args.concurrency, args.seconds, |client, stop| {
        let (store, accounts, done, refused) = (
            store.clone(),
            accounts.clone(),
            done.clone(),
            refused.clone(),
        );
        async move {
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
        }
    })
    .await?;
    let count = done.load(Ordering::Relaxed);
    let rate = count as f64 / elapsed;
    println!(
        "{label}: {count} transfers acknowledged in {elapsed:.1} s = {} transfers/s ({} refused by limits)",
        fmt_rate(rate),
        refused.load(Ordering::Relaxed)
    );

    // Prove it: recompute everything from the journal.
    audit_and_close(label, &store, &policy, rate).await
}

/// The full audit at the end of a run (printed with up to ten problems), then the store is
/// closed; `rate` is what the load measured.
async fn audit_and_close(
    label: &str,
    store: &Store,
    policy: &tally_store::audit::AuditPolicy,
    rate: f64,
) -> anyhow::Result<Measured> {
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
    store.close().await;
    Ok(Measured {
        rate,
        audit_ok: report.ok(),
    })
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
        "out-of-band authentications (in process, dev inbox)",
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
    let policy = tally_store::audit::AuditPolicy {
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

    audit_and_close(label, node.store(), &policy, rate).await
}
