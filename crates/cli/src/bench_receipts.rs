//! `tally bench receipts`: complete two-party receipts per second on SQLite, next to
//! `openssl speed ed25519` measured in the same run.
//!
//! What is measured: an in-process node (`Node::open`, as `tally serve` runs it, without
//! HTTP) on SQLite in a temporary directory. Set-up, not counted: a manager `bob` with a
//! token and a warrant for the node naming any counterparty, and one customer per client,
//! each with a token (an Ed25519 and a BLS key certified by the node CA). Load: each client
//! loops offer (as bob's merchant key) → the customer checks the record hash and signs
//! fields 1–7 → the node verifies that signature under the customer's certificate, makes A's
//! proxy signature under bob's warrant and its own over fields 1–5, and stores the receipt →
//! the customer verifies A's and the server's signatures from the returned core. A receipt
//! counts when all four signatures were made and verified and both its journal entries (the
//! offer and the signed receipt) committed before the call returned (`synchronous=FULL`).
//! The fair-exchange line runs the same loop with BLS signatures, the customer's verifiably
//! encrypted signature checked by the node, and A's released signature checked by the
//! customer. The run ends with a full audit of the journal.

use crate::bench_kit::{fmt_rate, fmt_ratio, load, print_rows};
use anyhow::Context as _;
use clap::Args;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tally_kernel::crypto::bls::{self, ArbiterPublicKey, BlsPublicKey, BlsSecretKey};
use tally_kernel::crypto::warrant::{Counterparties, WarrantTerms, issue_warrant};
use tally_kernel::crypto::{Certificate, Signature, SigningKey, VerifyingKey};
use tally_proto::receipt::{self, PartySignature, Receipt};
use tally_service::receipt::{NewReceipt, NewToken, SignReceipt};
use tally_service::{Node, NodeConfig, Principal, Role};

/// `tally bench receipts`.
#[derive(Args)]
pub struct ReceiptsBench {
    /// Seconds of load for plain (Ed25519) receipts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of load for fair-exchange (BLS) receipts.
    #[arg(long, default_value_t = 5)]
    fair_seconds: u64,
    /// Concurrent clients, each a customer running one receipt after another.
    #[arg(long, default_value_t = 128)]
    clients: usize,
    /// Seconds of `openssl speed ed25519` (0 skips the reference).
    #[arg(long, default_value_t = 3)]
    openssl_seconds: u32,
}

struct Customer {
    principal: Principal,
    key: SigningKey,
    bls: BlsSecretKey,
}

struct Shared {
    node: Node,
    bob: Principal,
    customers: Vec<Customer>,
    server_key: VerifyingKey,
    proxy_bls: BlsPublicKey,
    arbiter: ArbiterPublicKey,
}

/// `openssl speed -seconds N ed25519`: (signs/s, verifies/s) of one core.
fn openssl_ed25519(seconds: u32) -> Option<(f64, f64)> {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), "ed25519"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("Ed25519"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok())
        .collect();
    // "253 bits EdDSA (Ed25519)   0.0000s   0.0001s  21785.9   8419.8"
    match nums.as_slice() {
        [.., sign, verify] => Some((*sign, *verify)),
        _ => None,
    }
}

pub async fn run(args: ReceiptsBench) -> anyhow::Result<ExitCode> {
    if args.clients == 0 {
        anyhow::bail!("--clients must be at least 1");
    }
    println!(
        "tally bench receipts: {} clients, {} s plain, {} s fair exchange, SQLite",
        args.clients, args.seconds, args.fair_seconds
    );
    let reference = if args.openssl_seconds > 0 {
        println!("openssl speed -seconds {} ed25519 …", args.openssl_seconds);
        let r = tokio::task::spawn_blocking(move || openssl_ed25519(args.openssl_seconds)).await?;
        if r.is_none() {
            println!("openssl speed did not run; no reference");
        }
        r
    } else {
        None
    };

    let dir = tempfile::tempdir()?;
    let config = NodeConfig::new(dir.path().join("node"));
    let (node, admin_key) = Node::open(&config)
        .await
        .context("opening a node on SQLite")?;
    let admin = node
        .authenticate(
            admin_key
                .context("a fresh data directory gets an admin key")?
                .expose(),
        )
        .await?;
    let shared = Arc::new(set_up(&node, &admin, args.clients).await?);

    let plain = measure(&shared, args.clients, args.seconds, false).await?;
    let fair = measure(&shared, args.clients, args.fair_seconds, true).await?;

    let store = node.store().clone();
    let policy = tally_store::audit::AuditPolicy {
        trusted_signers: vec![
            VerifyingKey::from_hex(&node.node_public_key())
                .map_err(|e| anyhow::anyhow!("node key: {e}"))?
                .to_bytes(),
        ],
        checkpoint_gap_max: Some(config.checkpoint_every + config.batch_max as i64),
    };
    let report = store
        .audit(&tally_service::node::verify_checkpoint, &policy, &|_| {})
        .await?;
    println!(
        "audit {} ({} journal entries)",
        if report.ok() { "passed" } else { "FAILED" },
        report.ledger.entries
    );

    // A receipt needs three Ed25519 signatures (A by proxy, B, the server) and four
    // verifications (B by the node; A and the server by the customer; the core is checked
    // whole): the per-core ceiling from openssl's own rates, times two cores.
    let ceiling = reference.map(|(s, v)| 2.0 / (3.0 / s + 3.0 / v));
    let verify_ref = reference.map(|(_, v)| v);
    let mut rows = Vec::new();
    if let Some((s, v)) = reference {
        rows.push([
            "openssl ed25519 signs/s (1 core)".into(),
            fmt_rate(s),
            "-".into(),
        ]);
        rows.push([
            "openssl ed25519 verifies/s (1 core)".into(),
            fmt_rate(v),
            "1.0x".into(),
        ]);
    }
    if let Some(c) = ceiling {
        rows.push([
            "openssl-rate ceiling, receipts/s (2 cores)".into(),
            fmt_rate(c),
            fmt_ratio(c, verify_ref, 2),
        ]);
    }
    rows.push([
        "Tally plain receipts/s (SQLite, durable)".into(),
        fmt_rate(plain),
        fmt_ratio(plain, verify_ref, 2),
    ]);
    rows.push([
        "Tally fair-exchange receipts/s (BLS)".into(),
        fmt_rate(fair),
        fmt_ratio(fair, verify_ref, 3),
    ]);
    print_rows(["measurement", "per second", "vs openssl verify"], &rows);
    println!("target: >= 10,000 plain receipts/s on 2 cores");
    store.close().await;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn set_up(node: &Node, admin: &Principal, clients: usize) -> anyhow::Result<Shared> {
    let view = node.receipts().node_view();
    let server_key =
        VerifyingKey::from_hex(&view.server_key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let proxy_bls =
        BlsPublicKey::from_hex(&view.proxy_bls_key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let arbiter =
        ArbiterPublicKey::from_hex(&view.arbiter_key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let token = async |name: &str, role: &str, key: &SigningKey, bls: &BlsSecretKey| {
        node.receipts()
            .token_issue(
                admin,
                &format!("bench-token-{name}"),
                NewToken::signed(name, role, key, Some(bls), Some(1), Some(30)),
            )
            .await
    };
    let (bob_key, bob_bls) = (SigningKey::generate(), BlsSecretKey::generate());
    let issued = token("bob", "manager", &bob_key, &bob_bls).await?.0;
    let bob_cert =
        Certificate::from_pem(&issued.certificate).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_, bob_api) = node
        .issue_api_key(admin, Role::Merchant, "bob", "bench")
        .await?;
    let bob = node.authenticate(bob_api.expose()).await?;
    let now = node.now();
    let warrant = issue_warrant(
        &bob_cert,
        &bob_key,
        &server_key,
        "tally receipt service",
        &WarrantTerms {
            counterparties: Counterparties::Any,
            bls_key: Some(proxy_bls.to_bytes()),
        },
        now,
        now.plus_seconds(86_400),
    )
    .map_err(|e| anyhow::anyhow!("warrant: {e}"))?;
    node.receipts().warrant_add(&bob, &warrant.to_pem()).await?;
    let bar = crate::progress_bar(clients as u64, "issuing tokens");
    let mut customers = Vec::with_capacity(clients);
    for i in 0..clients {
        let name = format!("c{i}");
        let (key, bls) = (SigningKey::generate(), BlsSecretKey::generate());
        token(&name, "customer", &key, &bls).await?;
        let (_, api) = node
            .issue_api_key(admin, Role::Customer, &name, "bench")
            .await?;
        customers.push(Customer {
            principal: node.authenticate(api.expose()).await?,
            key,
            bls,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Shared {
        node: node.clone(),
        bob,
        customers,
        server_key,
        proxy_bls,
        arbiter,
    })
}

/// One complete receipt by customer `c`.
async fn one(s: &Shared, c: &Customer, n: u64, fair: bool) -> anyhow::Result<()> {
    let record = format!("Order {n} for {}\nTotal 1.00 EUR\n", c.principal.owner);
    let (offer, _) = s
        .node
        .receipts()
        .offer(
            &s.bob,
            &format!("bench-{}-{n}-{fair}", c.principal.owner),
            NewReceipt {
                record: record.clone(),
                party_a: "bob".into(),
                party_b: c.principal.owner.clone(),
                fair,
                proxy_b: false,
            },
        )
        .await?;
    let f = crate::receipt::fields_of(&offer)?;
    anyhow::ensure!(
        receipt::content_hash(&record) == f.content_hash,
        "record hash"
    );
    let msg = f.party_part();
    // A's signature as verified at the escrow step (fair exchange).
    let mut verified_a = None;
    let signature_b = if fair {
        let ves = bls::encrypt_signature(&c.bls, &s.arbiter, receipt::PARTY_DOMAIN, &msg);
        let escrowed = s
            .node
            .receipts()
            .escrow(&c.principal, f.transaction, &ves.to_hex())
            .await?;
        let sig_a = bls::BlsSignature::from_hex(
            escrowed
                .signature_a
                .as_deref()
                .context("A's signature released")?,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        s.proxy_bls
            .verify(receipt::PARTY_DOMAIN, &msg, &sig_a)
            .map_err(|e| anyhow::anyhow!("A's signature: {e}"))?;
        verified_a = Some(sig_a);
        c.bls.sign(receipt::PARTY_DOMAIN, &msg).to_hex()
    } else {
        c.key.sign(receipt::PARTY_DOMAIN, &msg).to_hex()
    };
    let signed = s
        .node
        .receipts()
        .sign(
            &c.principal,
            f.transaction,
            SignReceipt {
                signature_b,
                token: None,
            },
        )
        .await?;
    let core = hex::decode(signed.core.as_deref().context("a complete core")?)?;
    let r = Receipt::from_bytes(&core).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(r.fields == f, "the core's fields are the offer's");
    s.server_key
        .verify(
            receipt::SERVER_DOMAIN,
            &f.server_part(),
            &r.signature_server,
        )
        .map_err(|e| anyhow::anyhow!("server signature: {e}"))?;
    match r.signature_a {
        PartySignature::Ed25519(sig) => check_proxy_ed(s, &msg, &sig)?,
        // The same bytes B verified before releasing its own signature: compared, not
        // verified twice (BLS signatures are unique, so equal bytes are the same check).
        PartySignature::Bls(sig) if verified_a == Some(sig) => {}
        PartySignature::Bls(sig) => s
            .proxy_bls
            .verify(receipt::PARTY_DOMAIN, &msg, &sig)
            .map_err(|e| anyhow::anyhow!("A's signature: {e}"))?,
    }
    Ok(())
}

fn check_proxy_ed(s: &Shared, msg: &[u8], sig: &Signature) -> anyhow::Result<()> {
    // A's proxy signature is made with the receipt server's key under bob's warrant.
    s.server_key
        .verify(receipt::PARTY_DOMAIN, msg, sig)
        .map_err(|e| anyhow::anyhow!("A's signature: {e}"))
}

async fn measure(
    shared: &Arc<Shared>,
    clients: usize,
    seconds: u64,
    fair: bool,
) -> anyhow::Result<f64> {
    let label = if fair { "fair exchange" } else { "plain" };
    let done = Arc::new(AtomicU64::new(0));
    let elapsed = load(clients, seconds, |client, stop: Arc<AtomicBool>| {
        let (shared, done) = (shared.clone(), done.clone());
        async move {
            let c = &shared.customers[client];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                one(&shared, c, n, fair).await?;
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }
    })
    .await?;
    let count = done.load(Ordering::Relaxed);
    let rate = count as f64 / elapsed;
    println!("{label}: {count} complete receipts in {elapsed:.1} s");
    Ok(rate)
}
