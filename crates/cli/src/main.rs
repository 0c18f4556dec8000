//! `tally`: run a node, talk to one, audit and benchmark the ledger.
//!
//! Parsing is two-stage (as in ripgrep): clap turns argv into the raw [`Cli`] structs here,
//! and each command module validates them into what it needs (an [`Amount`], a URL, a
//! duration) before doing any work, so a typo fails fast with a message naming the flag.
//!
//! The binary wires crates together and holds no business logic: `serve` builds a
//! `tally_service::Node` and serves `tally_http::router`; client commands (`client`, `oob`
//! for out-of-band authentication, `delivery` for products, sales and locked packages)
//! speak the HTTP API, and `receipt` (tokens, warrants, signed receipts, the arbiter) also
//! signs and verifies offline; `ledger audit` and `bench ledger` open the store directly, `bench
//! auth` an in-process node, `bench seal` files and the proto crate's delivery package.

/// `println!` for the whole binary: when stdout is closed (`tally … | head`), the process ends
/// quietly with status 141 (as a tool killed by SIGPIPE does) instead of panicking. Declared
/// before the modules so it shadows the standard macro in all of them.
macro_rules! println {
    () => {
        $crate::stdout_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::stdout_line(format_args!($($arg)*))
    };
}

mod accounts;
mod agent;
mod agent_orders;
mod arbiter_link;
mod batch;
mod bench;
mod bench_kit;
mod bench_pads;
mod bench_receipts;
mod bench_seal;
mod bench_sessions;
mod bench_smtp;
mod bench_web;
mod client;
mod conn_cap;
mod delivery;
mod federation;
mod fx_cache;
mod log_export;
mod oob;
mod pad_keys;
mod pads;
mod pkcs11;
mod providers;
mod receipt;
mod serve;
mod trading;
mod trading_orders;
mod vouchers;
mod wallet;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Default address of `tally serve` and of client commands.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8640";

#[derive(Parser)]
#[command(name = "tally", version, about = "Tally: a self-hostable secure-commerce server", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a node: the HTTP API, the outbox worker and the expiry sweeper.
    ///
    /// The first start creates the data directory, the node key, the node CA and an admin
    /// API key (written to DATA/admin.key). SQLite in DATA/tally.db unless --database-url.
    Serve(serve::ServeArgs),
    /// Accounts: open, show, list, history, balances.
    #[command(subcommand)]
    Account(accounts::AccountCommand),
    /// Move money now (debits --from, credits --to), or send a file of transfer events.
    Transfer(accounts::TransferArgs),
    /// Find transfers: by account and side, time, the client's references and code, a page at
    /// a time.
    Transfers(accounts::QueryArgs),
    /// Hold money (a pending transfer) until posted, voided or expired.
    Hold(accounts::HoldArgs),
    /// Post (capture) a hold, in full or in part.
    Post(accounts::PostArgs),
    /// Void (release) a hold.
    Void(accounts::VoidArgs),
    /// Exchange between two currencies through the operator's liquidity accounts.
    Exchange(accounts::ExchangeArgs),
    /// API keys (operator only): create, list, revoke.
    #[command(name = "api-key", subcommand)]
    ApiKey(accounts::ApiKeyCommand),
    /// Read a development inbox (node started with --dev).
    Inbox(accounts::InboxArgs),
    /// The out-of-band subscriber directory: users, their second-channel addresses, and
    /// certificates naming those addresses.
    #[command(subcommand)]
    Subscriber(oob::SubscriberCommand),
    /// Out-of-band authentication: open a session for a sign-in, transfer, bet, payment,
    /// trustee payment, declaration or offers; a code goes to the user's second channel;
    /// confirm it with `tally auth confirm SESSION`.
    #[command(subcommand)]
    Auth(oob::AuthCommand),
    /// Registered mail: sender and recipient each confirm with a code; both keep
    /// certificates.
    #[command(subcommand)]
    Mail(oob::MailCommand),
    /// Personalised offers, left in a user's mailbox by merchants.
    #[command(subcommand)]
    Offer(oob::OfferCommand),
    /// A user's statement: each authenticated transaction and session, totals per currency
    /// and the total session time.
    Statement(oob::StatementArgs),
    /// The node-signed certificates a user holds (transfers, payments, mail, declarations).
    Certificates(oob::UserArgs),
    /// Threshold rules: which amounts need out-of-band confirmation.
    #[command(subcommand)]
    Rule(oob::RuleCommand),
    /// Federation: other operators' nodes this node exchanges signed messages with (add a
    /// peer, list them, ping one).
    #[command(subcommand)]
    Federation(federation::FederationCommand),
    /// Trading sessions across operators: open one (the deposit held), show, list, answer
    /// (merchants), and let a merchant take them.
    #[command(subcommand)]
    Session(trading::SessionCommand),
    /// Anonymous prepaid pads: sell one at the counter (operator); show, post, collect and
    /// send requests to providers with it (the holder, no API key: the pad's bytes are the
    /// credential); PIN accounts; inspect it, set the tariff.
    #[command(subcommand)]
    Pad(pads::PadCommand),
    /// Service providers of pad holders: register (price and webhook), answer requests;
    /// settle the clearing and decide disputed escrows (operator).
    #[command(subcommand)]
    Provider(providers::ProviderCommand),
    /// Voucher cards for pads: issue (operator), show, sell at the till (the retailer),
    /// cancel (operator); `tally pad redeem CODE` redeems one.
    #[command(subcommand)]
    Voucher(vouchers::VoucherCommand),
    /// Billing records of cleared trading sessions (operator).
    #[command(subcommand)]
    Billing(trading::BillingCommand),
    /// What this operator and its peers owe each other (operator).
    #[command(subcommand)]
    Clearing(trading::ClearingCommand),
    /// Exchange tables: publish a rate with a lifespan (operator), show the valid ones.
    #[command(subcommand)]
    Fx(trading::FxCommand),
    /// Trustee payments: pay merchants what users owe through the operator.
    #[command(subcommand)]
    Trustee(oob::TrusteeCommand),
    /// Products sold by locked delivery (merchants): add (upload and publish), list, show,
    /// withdraw.
    #[command(subcommand)]
    Product(delivery::ProductCommand),
    /// Buy a product: open a sale and download its locked package; then inspect it, pay by
    /// its reference code, and unlock it.
    Buy(delivery::BuyArgs),
    /// Locked packages: download (resumable), inspect (verified offline; shows the
    /// instruction file), unlock (decrypts and checks every entry).
    #[command(subcommand)]
    Package(delivery::PackageCommand),
    /// Pay a sale from a ledger account by its reference code (checked locally first). Exits
    /// 1 unless the payment matched the sale (a wrong amount releases nothing).
    Pay(delivery::PayArgs),
    /// Payments of sales: refund one that released nothing.
    #[command(subcommand)]
    Payment(delivery::PaymentCommand),
    /// Payment receivers that notify the node of payments by reference code (operator only).
    #[command(subcommand)]
    Receiver(delivery::ReceiverCommand),
    /// Reports for merchants, producers and the operator.
    #[command(subcommand)]
    Report(delivery::ReportCommand),
    /// Complain about a sale: the key was lost, the package is broken, the product was
    /// deleted.
    #[command(subcommand)]
    Complaint(delivery::ComplaintCommand),
    /// Receipt tokens: issue a party's software token (operator), show what a token holds,
    /// store receipts whose acknowledgement was lost.
    #[command(subcommand)]
    Token(receipt::TokenCommand),
    /// Warrants: let the node sign receipts on your behalf with named counterparties.
    #[command(subcommand)]
    Warrant(receipt::WarrantCommand),
    /// Receipt parties: revoke a party's certificate (operator).
    #[command(subcommand)]
    Party(receipt::PartyCommand),
    /// Two-party signed receipts: offer a record, sign it, verify a receipt offline, list and
    /// export receipts.
    #[command(subcommand)]
    Receipt(receipt::ReceiptCommand),
    /// The arbiter of fair-exchange receipts: abort or resolve an exchange that stopped half
    /// way.
    #[command(subcommand)]
    Arbiter(receipt::ArbiterCommand),
    /// Ledger maintenance.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Benchmarks that print figures next to a reference measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Recompute every balance from the journal; check the hash chain and the signed
    /// checkpoints. Exit status 0 only when everything balances.
    Audit(AuditArgs),
    /// Export the hash-chained journal (from a position to its head) with a checkpoint the
    /// node signs for the export, for auditors and for `tally receipt verify --log`.
    Export(log_export::ExportArgs),
}

/// Where the store is, for commands that open it directly.
#[derive(Args, Clone)]
pub struct StoreLocation {
    /// Node data directory (uses DATA/tally.db and DATA/node.key).
    #[arg(long, default_value = "./tally-data", env = "TALLY_DATA")]
    data: PathBuf,
    /// PostgreSQL URL (postgres://…); overrides the SQLite file in --data.
    #[arg(long, env = "TALLY_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl StoreLocation {
    fn url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data.join("tally.db").display()),
        }
    }
}

#[derive(Args)]
struct AuditArgs {
    #[command(flatten)]
    store: StoreLocation,
    /// Also trust checkpoints signed by this node public key (hex); repeat for every node
    /// sharing a PostgreSQL database. The key in DATA/node.key is always trusted.
    #[arg(long = "trust-key")]
    trust_keys: Vec<String>,
    /// The nodes' checkpoint interval: history longer than this (plus one batch) without a
    /// signed checkpoint fails the audit.
    #[arg(long, default_value_t = 10_000)]
    checkpoint_every: i64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Writes one line to stdout; a closed stdout ends the process (see `println!` above).
pub(crate) fn stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// The process's allocator: mimalloc instead of glibc's malloc (see `docs/ARCHITECTURE.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider for the whole process (reqwest, sqlx and the server all use rustls).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Commands::Serve(a) => serve::run(a).await,
            Commands::Account(c) => accounts::account(c).await,
            Commands::Transfer(a) => accounts::transfer(a).await,
            Commands::Transfers(a) => accounts::transfers(a).await,
            Commands::Hold(a) => accounts::hold(a).await,
            Commands::Post(a) => accounts::post(a).await,
            Commands::Void(a) => accounts::void(a).await,
            Commands::Exchange(a) => accounts::exchange(a).await,
            Commands::ApiKey(c) => accounts::api_key(c).await,
            Commands::Inbox(a) => accounts::inbox(a).await,
            Commands::Subscriber(c) => oob::subscriber(c).await,
            Commands::Auth(c) => oob::auth(c).await,
            Commands::Mail(c) => oob::mail(c).await,
            Commands::Offer(c) => oob::offer(c).await,
            Commands::Statement(a) => oob::statement(a).await,
            Commands::Certificates(a) => oob::certificates(a).await,
            Commands::Rule(c) => oob::rule(c).await,
            Commands::Trustee(c) => oob::trustee(c).await,
            Commands::Federation(c) => federation::federation(c).await,
            Commands::Session(c) => trading::session(c).await,
            Commands::Pad(c) => pads::pad(c).await,
            Commands::Voucher(c) => vouchers::voucher(c).await,
            Commands::Provider(c) => providers::provider(c).await,
            Commands::Billing(c) => trading::billing(c).await,
            Commands::Clearing(c) => trading::clearing(c).await,
            Commands::Fx(c) => trading::fx(c).await,
            Commands::Product(c) => delivery::product(c).await,
            Commands::Buy(a) => delivery::buy(a).await,
            Commands::Package(c) => delivery::package(c).await,
            Commands::Pay(a) => delivery::pay(a).await,
            Commands::Payment(c) => delivery::payment(c).await,
            Commands::Receiver(c) => delivery::receiver(c).await,
            Commands::Report(c) => delivery::report(c).await,
            Commands::Complaint(c) => delivery::complaint(c).await,
            Commands::Token(c) => receipt::token(c).await,
            Commands::Warrant(c) => receipt::warrant(c).await,
            Commands::Party(c) => receipt::party(c).await,
            Commands::Receipt(c) => receipt::receipt(c).await,
            Commands::Arbiter(c) => receipt::arbiter(c).await,
            Commands::Ledger(LedgerCommand::Audit(a)) => audit(a).await,
            Commands::Ledger(LedgerCommand::Export(a)) => log_export::export(a).await,
            Commands::Bench(b) => bench::run(b).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the store a local operator command names (refusing to create an empty one).
async fn open_store(loc: &StoreLocation) -> anyhow::Result<tally_store::Store> {
    use anyhow::Context;
    let url = loc.url();
    if loc.database_url.is_none() && !loc.data.join("tally.db").exists() {
        anyhow::bail!(
            "no database at {} (give --data DIR or --database-url URL)",
            loc.data.display()
        );
    }
    tally_store::Store::open(&url, tally_store::WriteOptions::default())
        .await
        .with_context(|| format!("opening {}", redact_url(&url)))
}

async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store).await?;
    // Which keys may sign: the node key in --data, if there is one, and every --trust-key.
    let node_key = std::fs::read_to_string(args.store.data.join("node.key"))
        .ok()
        .and_then(|pem| tally_kernel::crypto::SigningKey::from_pkcs8_pem(&pem).ok())
        .map(|k| k.verifying_key().to_hex());
    let mut trusted_signers = Vec::new();
    for hex_key in node_key.iter().chain(&args.trust_keys) {
        let key = tally_kernel::crypto::VerifyingKey::from_hex(hex_key)
            .map_err(|e| anyhow::anyhow!("--trust-key {hex_key}: {e}"))?;
        trusted_signers.push(key.to_bytes());
    }
    if trusted_signers.is_empty() {
        eprintln!(
            "note: no node key (DATA/node.key or --trust-key): checkpoint signatures are checked \
             but not tied to a key you trust"
        );
    }
    let policy = tally_store::audit::AuditPolicy {
        trusted_signers,
        // The writer signs when a batch crosses a multiple; batches hold at most 8192 here.
        checkpoint_gap_max: Some(args.checkpoint_every + 8192),
    };
    let total = store.counts().await?.journal_seq;
    let bar = progress_bar(total.max(0) as u64, "auditing journal");
    let report = store
        .audit(&tally_service::node::verify_checkpoint, &policy, &|seq| {
            bar.set_position(seq.max(0) as u64)
        })
        .await?;
    bar.finish_and_clear();
    let ledger = &report.ledger;
    if args.json {
        let totals: serde_json::Map<String, serde_json::Value> = ledger
            .totals
            .iter()
            .map(|(c, t)| {
                (c.clone(), serde_json::json!({
                    "debits_posted": t.debits_posted.to_string(), "credits_posted": t.credits_posted.to_string(),
                    "debits_pending": t.debits_pending.to_string(), "credits_pending": t.credits_pending.to_string(),
                }))
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": report.ok(), "entries": ledger.entries, "accounts": ledger.accounts,
                "transfers": ledger.transfers, "records": ledger.records, "checkpoints": ledger.checkpoints_matched,
                "signatures_verified": report.signatures_verified, "signers": report.signers,
                "node_key": node_key, "totals": totals, "problems": ledger.problems,
            }))?
        );
    } else {
        println!("journal entries   {}", ledger.entries);
        println!("accounts          {}", ledger.accounts);
        println!("transfers         {}", ledger.transfers);
        println!(
            "other records     {} (API keys and other changes that move no money)",
            ledger.records
        );
        println!(
            "checkpoints       {} matched the chain, {} signatures verified",
            ledger.checkpoints_matched, report.signatures_verified
        );
        for s in &report.signers {
            let mark = if node_key.as_deref() == Some(s.as_str()) {
                " (this node's key)"
            } else {
                ""
            };
            println!("signed by         {s}{mark}");
        }
        for (c, t) in &ledger.totals {
            println!(
                "{c}               posted debits {} = credits {}; pending {} = {}",
                t.debits_posted, t.credits_posted, t.debits_pending, t.credits_pending
            );
        }
        for p in &ledger.problems {
            println!("PROBLEM           {p}");
        }
        println!(
            "{}",
            if report.ok() {
                "audit passed: the ledger balances"
            } else {
                "audit FAILED"
            }
        );
    }
    store.close().await;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress_bar(len: u64, message: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:20} [{bar:40}] {pos}/{len} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// A database URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
