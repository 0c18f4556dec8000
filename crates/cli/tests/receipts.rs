//! Two-party signed receipts end to end through the `tally` binary: the operator issues
//! tokens to a customer (alice) and a manager (bob), bob warrants the node to sign with alice,
//! offers records, alice signs them with her token file; the packages verify offline and
//! every tampered variant is refused with its reason. The fair exchange signs with BLS keys
//! and settles at the arbiter; a write whose acknowledgement was lost is stored and acked by
//! `tally token sync`.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use common::{Server, cli, field, ok, outcome, tally_for};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tally_kernel::Timestamp;
use tally_kernel::crypto::bls::{self, ArbiterPublicKey, BlsSecretKey};
use tally_kernel::crypto::{CertificateAuthority, SigningKey};
use tally_proto::receipt::token::{SecureWrite, Stored, Token};
use tally_proto::receipt::{Fields, PARTY_DOMAIN};
use tally_service::receipt::{ReceiptNodeView, ReceiptView};

/// A node with alice (customer) and bob (manager, merchant key), both holding token files,
/// and bob's warrant for the node to sign with alice.
struct Setup {
    work: PathBuf,
    server: Server,
    alice: String,
    bob: String,
    /// The arbiter node, when the receipt node asks one (kept running; dropped last).
    arbiter: Option<Server>,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup::starting(|_, _| (Vec::new(), None))
    }

    /// `prepare` sees the temporary and the data directory before the node starts, and
    /// returns the node's extra arguments and an arbiter node to keep running.
    fn starting(prepare: impl FnOnce(&Path, &Path) -> (Vec<String>, Option<Server>)) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let data = dir.path().join("data");
        let (extra, arbiter) = prepare(dir.path(), &data);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let server = Server::start(&data, &extra);
        let admin = server.admin_key.clone();
        let key = |role: &str, owner: &str| {
            let out = ok(cli(
                &server,
                &admin,
                &["api-key", "create", "--role", role, "--owner", owner],
            ));
            field(&out, "key").to_string()
        };
        let (alice, bob) = (key("customer", "alice"), key("merchant", "bob"));
        let s = Setup {
            work,
            server,
            alice,
            bob,
            arbiter,
            _dir: dir,
        };
        for (holder, role) in [("alice", "customer"), ("bob", "manager")] {
            let file = s.path(&format!("{holder}.token"));
            let out = ok(s.run(
                &admin,
                &[
                    "token", "init", "--holder", holder, "--role", role, "--slots", "2", "--file",
                    &file,
                ],
            ));
            assert_eq!(field(&out, "holder"), format!("{holder} ({role})"), "{out}");
            assert!(
                !out.contains("app_key") && !out.contains("PRIVATE"),
                "{out}"
            );
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(s.work.join("alice.token"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A token file is never replaced.
        let again = s.run(
            &admin,
            &[
                "token",
                "init",
                "--holder",
                "alice",
                "--file",
                &s.path("alice.token"),
            ],
        );
        assert!(!again.0 && again.2.contains("exists"), "{again:?}");
        let out = ok(s.run(
            &s.bob.clone(),
            &[
                "warrant",
                "issue",
                "--token",
                &s.path("bob.token"),
                "--counterparty",
                "alice",
            ],
        ));
        assert_eq!(field(&out, "counterparties"), "alice", "{out}");
        s
    }

    fn path(&self, name: &str) -> String {
        self.work.join(name).to_str().expect("UTF-8").to_string()
    }

    /// Runs the CLI in the work directory with `key`.
    fn run(&self, key: &str, args: &[&str]) -> (bool, String, String) {
        outcome(
            tally_for(&self.server, key)
                .current_dir(&self.work)
                .args(args)
                .output()
                .expect("run tally"),
        )
    }

    /// bob offers `text` to alice; the transaction id.
    fn offer(&self, text: &str, extra: &[&str]) -> u64 {
        let mut args = vec!["receipt", "offer", "--party-a", "bob", "--party-b", "alice"];
        args.extend_from_slice(&["--text", text]);
        args.extend_from_slice(extra);
        let out = ok(self.run(&self.bob, &args));
        assert_eq!(field(&out, "state"), "offered", "{out}");
        field(&out, "transaction").parse().unwrap()
    }

    /// alice signs `tx` with `--yes`; stdout.
    fn sign(&self, tx: u64, extra: &[&str]) -> String {
        let tx = tx.to_string();
        let mut args = vec!["receipt", "sign", &tx, "--token", "alice.token", "--yes"];
        args.extend_from_slice(extra);
        ok(self.run(&self.alice, &args))
    }

    fn ca(&self) -> String {
        self.server
            .data
            .join("ca.pem")
            .to_str()
            .unwrap()
            .to_string()
    }

    /// `tally receipt verify FILE EXTRA…` (no server involved).
    fn verify(&self, file: &Path, extra: &[&str]) -> (bool, String, String) {
        let mut command = common::tally();
        command
            .current_dir(&self.work)
            .args(["receipt", "verify"])
            .arg(file);
        outcome(command.args(extra).output().expect("run tally"))
    }

    /// The node's HTTP API, called directly (what a client that crashed half way did).
    fn api(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let url = format!("{}{}", self.server.url, path);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = reqwest::Client::new();
            let mut req = client
                .request(method.parse().unwrap(), &url)
                .bearer_auth(key);
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let v: Value = resp.json().await.unwrap();
            assert!(status.is_success(), "{method} {path}: {status} {v}");
            v
        })
    }
}

fn fields_of(v: &ReceiptView) -> Fields {
    let h = |t: &str| -> [u8; 32] { hex::decode(t).unwrap().try_into().unwrap() };
    Fields {
        version: v.version,
        server_id: h(&v.server_id),
        transaction: v.transaction,
        time: v.time,
        content_hash: h(&v.content_hash),
        party_a: h(&v.party_a_fingerprint),
        party_b: h(&v.party_b_fingerprint),
    }
}

/// The token file as JSON and its token state.
fn read_token(path: &Path) -> (Value, Token) {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let token = serde_json::from_value(v["token"].clone()).unwrap();
    (v, token)
}

fn write_token(path: &Path, mut file: Value, token: &Token) {
    file["token"] = serde_json::to_value(token).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
}

/// A copy of `file` with byte `at` flipped.
fn flipped(file: &Path, at: usize, name: &str) -> PathBuf {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= 0x01;
    let out = file.with_file_name(name);
    std::fs::write(&out, bytes).unwrap();
    out
}

/// Package layout: magic (8), core length (2), fields 1–7 (145), A's, B's (64 each in
/// version 1) and the server's signature (64), then the record section (tag 1, length 4).
const CORE: usize = 10;
const SIG_A: usize = CORE + 145;
const SIG_B: usize = SIG_A + 64;
const SIG_SERVER: usize = SIG_B + 64;
const RECORD_TEXT: usize = SIG_SERVER + 64 + 5;

/// Alice escrows her signature to `arbiter` (block 305) and stops; then resolves at the
/// arbiter with her signature and gets A's (block 310).
fn escrow_then_resolve(s: &Setup, tx: u64, arbiter: &ArbiterPublicKey) {
    let (file, _) = read_token(&s.work.join("alice.token"));
    let bls_key =
        BlsSecretKey::from_bytes(&hex::decode(file["bls_key"].as_str().unwrap()).unwrap()).unwrap();
    let view: ReceiptView =
        serde_json::from_value(s.api(&s.alice, "GET", &format!("/v1/receipts/{tx}"), None))
            .unwrap();
    let fields = fields_of(&view);
    let ves = bls::encrypt_signature(&bls_key, arbiter, PARTY_DOMAIN, &fields.party_part());
    s.api(
        &s.alice,
        "POST",
        &format!("/v1/receipts/{tx}/escrow"),
        Some(json!({"ves": ves.to_hex()})),
    );
    let out = ok(s.run(
        &s.alice,
        &[
            "arbiter",
            "resolve",
            &tx.to_string(),
            "--token",
            "alice.token",
        ],
    ));
    assert_eq!(field(&out, "decision"), "resolved", "{out}");
    assert!(out.contains("party A's signature verified"), "{out}");
}

#[test]
fn plain_receipt_signs_verifies_and_tampering_is_refused_with_the_reason() {
    let s = Setup::new();
    let record = "Order 1001\n2 x widget @ 9.90 EUR\nTotal 19.80 EUR\n";
    let tx = s.offer(record, &[]);

    // Declining signs nothing.
    let mut child = tally_for(&s.server, &s.alice)
        .current_dir(&s.work)
        .args(["receipt", "sign", &tx.to_string(), "--token", "alice.token"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"n\n").unwrap();
    let (good, out, err) = outcome(child.wait_with_output().unwrap());
    assert!(!good && err.contains("not signed"), "{out}\n{err}");
    assert!(
        out.contains(record) && out.contains("----- end of record -----"),
        "{out}"
    );
    let shown = ok(s.run(&s.alice, &["receipt", "show", &tx.to_string()]));
    assert_eq!(field(&shown, "state"), "offered", "{shown}");

    let out = s.sign(tx, &[]);
    assert_eq!(field(&out, "slot"), "0", "{out}");
    let number = field(&out, "receipt no.").to_string();
    assert!(out.contains("receipt verified"), "{out}");
    let file = s.work.join(format!("receipt-{tx}.tally"));
    assert_eq!(
        field(&out, "package"),
        format!("receipt-{tx}.tally"),
        "{out}"
    );
    let listed = ok(s.run(&s.alice, &["token", "list", "--file", "alice.token"]));
    assert!(
        listed.contains(&number) && listed.contains(&tx.to_string()),
        "{listed}"
    );
    let shown = ok(s.run(&s.bob, &["receipt", "show", &tx.to_string()]));
    assert_eq!(field(&shown, "state"), "acked", "{shown}");

    // Genuine: against the operator's CA, and against the package's own (said so).
    let out = ok(s.verify(&file, &["--ca", &s.ca(), "--show-record"]));
    assert!(
        out.contains("receipt verified") && out.contains(record),
        "{out}"
    );
    assert_eq!(field(&out, "transaction"), tx.to_string());
    assert!(field(&out, "party A").starts_with("bob"), "{out}");
    assert!(field(&out, "party A").contains("under warrant"), "{out}");
    assert!(field(&out, "party B").starts_with("alice"), "{out}");
    // Without --ca: what verified is shown, but the package's own CA vouches for nothing.
    let mut command = common::tally();
    let untrusted = command
        .current_dir(&s.work)
        .args(["receipt", "verify"])
        .arg(&file)
        .output()
        .expect("run tally");
    let out = String::from_utf8_lossy(&untrusted.stdout);
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(2), "{out}{err}");
    assert!(out.contains("from the package itself"), "{out}");
    assert!(!out.contains("receipt verified"), "{out}");
    assert!(err.contains("receipt NOT verified"), "{err}");

    // Tampered: each refused, exit 1, with what is wrong.
    let other_ca = CertificateAuthority::generate("Tally node CA", Timestamp::now(), 30).unwrap();
    let other_ca_pem = s.work.join("other-ca.pem");
    std::fs::write(&other_ca_pem, other_ca.certificate().to_pem()).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let truncated = s.work.join("truncated.tally");
    std::fs::write(&truncated, &bytes[..bytes.len() - 9]).unwrap();
    let cases: Vec<(PathBuf, &str, &str)> = vec![
        (
            flipped(&file, RECORD_TEXT + 3, "record.tally"),
            "",
            "record altered",
        ),
        (
            flipped(&file, SIG_A + 7, "sig-a.tally"),
            "",
            "signature of party A does not verify",
        ),
        (
            flipped(&file, SIG_B + 7, "sig-b.tally"),
            "",
            "signature of party B does not verify",
        ),
        (
            flipped(&file, SIG_SERVER + 7, "sig-server.tally"),
            "",
            "signature of the server does not verify",
        ),
        (
            flipped(&file, CORE + 49, "content-hash.tally"),
            "",
            "record altered",
        ),
        (
            flipped(&file, CORE + 40, "transaction.tally"),
            "",
            "signature of the server does not verify",
        ),
        (file.clone(), "other", "certificate of the server"),
        (truncated, "", "truncated"),
    ];
    for (path, ca, reason) in cases {
        let ca = if ca == "other" {
            other_ca_pem.to_str().unwrap().to_string()
        } else {
            s.ca()
        };
        let (good, out, err) = s.verify(&path, &["--ca", &ca]);
        assert!(!good, "{} verified:\n{out}", path.display());
        assert!(
            err.contains("receipt NOT valid:") && err.contains(reason),
            "{}: expected {reason:?} in:\n{err}",
            path.display()
        );
        assert!(!out.contains("receipt verified"), "{out}");
    }

    // The export is the same package.
    let out = ok(s.run(
        &s.bob,
        &[
            "receipt",
            "export",
            &tx.to_string(),
            "--out",
            "bob-copy.tally",
        ],
    ));
    assert!(
        field(&out, "package").starts_with("bob-copy.tally"),
        "{out}"
    );
    assert_eq!(std::fs::read(s.work.join("bob-copy.tally")).unwrap(), bytes);
    let list = ok(s.run(&s.bob, &["receipt", "list"]));
    assert!(
        list.contains(&tx.to_string()) && list.contains("acked"),
        "{list}"
    );
}

#[test]
fn a_full_token_exports_the_receipt_it_replaces() {
    let s = Setup::new();
    let first = s.offer("Order A\n", &[]);
    s.sign(first, &["--priority", "1"]);
    s.sign(s.offer("Order B\n", &[]), &["--priority", "200"]);
    let third = s.offer("Order C\n", &[]);
    let out = s.sign(third, &[]);
    // Two slots: the lowest priority (Order A, slot 0) goes.
    assert_eq!(field(&out, "slot"), "0", "{out}");
    let exported: Vec<_> = std::fs::read_dir(s.work.join("alice.token.receipts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(exported.len(), 1, "{exported:?}");
    assert!(
        exported[0].starts_with(&format!("receipt-{first}-"))
            && exported[0].ends_with(".token.json"),
        "{exported:?}"
    );
}

#[test]
fn fair_exchange_signs_with_bls_and_the_arbiter_settles_a_broken_one() {
    let s = Setup::new();
    let tx = s.offer("Fair order 2002\nTotal 5.00 EUR", &["--fair"]);
    let out = s.sign(tx, &["--out", "fair.tally"]);
    assert!(out.contains("receipt verified"), "{out}");
    let out = ok(s.verify(&s.work.join("fair.tally"), &["--ca", &s.ca()]));
    assert!(field(&out, "version").starts_with("2 "), "{out}");
    // A completed exchange has nothing to resolve.
    let r = s.run(
        &s.alice,
        &[
            "arbiter",
            "resolve",
            &tx.to_string(),
            "--token",
            "alice.token",
        ],
    );
    assert!(!r.0 && r.2.contains("nothing to resolve"), "{r:?}");

    // Aborted by the originator: alice's sign stops before her signature leaves, and says
    // how to go on.
    let tx = s.offer("Fair order 3003", &["--fair"]);
    let out = ok(s.run(&s.bob, &["arbiter", "abort", &tx.to_string()]));
    assert_eq!(field(&out, "decision"), "aborted", "{out}");
    let r = s.run(
        &s.alice,
        &[
            "receipt",
            "sign",
            &tx.to_string(),
            "--token",
            "alice.token",
            "--yes",
        ],
    );
    assert!(!r.0 && r.2.contains("aborted"), "{r:?}");

    // Alice escrowed (block 305) and her client stopped: she resolves at the arbiter with
    // her signature and gets A's (block 310).
    let tx = s.offer("Fair order 4004", &["--fair"]);
    let (file, _) = read_token(&s.work.join("alice.token"));
    let node: ReceiptNodeView = serde_json::from_value(file["node"].clone()).unwrap();
    escrow_then_resolve(
        &s,
        tx,
        &ArbiterPublicKey::from_hex(&node.arbiter_key).unwrap(),
    );
    let out = ok(s.verify(
        &s.work.join(format!("receipt-{tx}.tally")),
        &["--ca", &s.ca()],
    ));
    assert!(out.contains("receipt verified"), "{out}");
}

#[test]
fn token_sync_stores_and_acks_a_write_whose_ack_was_lost() {
    let s = Setup::new();
    let token_path = s.work.join("alice.token");
    // What `receipt sign` does up to the node's answer, which never arrives: a challenge
    // saved in the token file, then the signature and write request.
    let sign_without_ack = |tx: u64| -> ReceiptView {
        let view: ReceiptView =
            serde_json::from_value(s.api(&s.alice, "GET", &format!("/v1/receipts/{tx}"), None))
                .unwrap();
        let fields = fields_of(&view);
        let (file, mut token) = read_token(&token_path);
        let key = SigningKey::from_pkcs8_pem(file["signing_key"].as_str().unwrap()).unwrap();
        let mut challenge = [0u8; 32];
        getrandom::fill(&mut challenge).unwrap();
        let (slot, _) = token.begin(challenge, tx, fields.content_hash, 10);
        let serial = hex::encode(token.serial);
        write_token(&token_path, file, &token);
        let signature = key.sign(PARTY_DOMAIN, &fields.party_part());
        let signed = s.api(
            &s.alice,
            "POST",
            &format!("/v1/receipts/{tx}/sign"),
            Some(json!({
                "signature_b": signature.to_hex(),
                "token": {"serial": serial, "challenge": hex::encode(challenge), "slot": slot},
            })),
        );
        serde_json::from_value(signed).unwrap()
    };

    // Lost before the token stored it.
    let tx = s.offer("Order 5005\n", &[]);
    let signed = sign_without_ack(tx);
    assert_eq!(signed.state.as_str(), "signed");
    let listed = ok(s.run(&s.alice, &["token", "list"]));
    assert!(listed.contains("1 unacknowledged"), "{listed}");
    let out = ok(s.run(&s.alice, &["token", "sync", "--file", "alice.token"]));
    assert!(
        out.contains(&format!("transaction {tx}")) && out.contains("  stored"),
        "{out}"
    );
    let (_, token) = read_token(&token_path);
    assert!(token.pending.is_empty());
    assert!(
        token
            .slots
            .iter()
            .flatten()
            .any(|x| Some(x.receipt_number) == signed.receipt_number)
    );
    let shown = ok(s.run(&s.alice, &["receipt", "show", &tx.to_string()]));
    assert_eq!(field(&shown, "state"), "acked", "{shown}");
    let out = ok(s.run(&s.alice, &["token", "sync", "--file", "alice.token"]));
    assert!(out.contains("0 write(s) waiting"), "{out}");

    // Lost after the token stored it: sync acks again.
    let tx = s.offer("Order 6006\n", &[]);
    let signed = sign_without_ack(tx);
    let (file, mut token) = read_token(&token_path);
    let node: ReceiptNodeView = serde_json::from_value(file["node"].clone()).unwrap();
    let server_key = tally_kernel::crypto::VerifyingKey::from_hex(&node.server_key).unwrap();
    let write = SecureWrite::from_bytes(&hex::decode(signed.write.unwrap()).unwrap()).unwrap();
    assert!(matches!(
        token.store(&write, &server_key),
        Ok(Stored::New(_))
    ));
    write_token(&token_path, file, &token);
    let out = ok(s.run(&s.alice, &["token", "sync", "--file", "alice.token"]));
    assert!(out.contains("already held"), "{out}");
    let shown = ok(s.run(&s.alice, &["receipt", "show", &tx.to_string()]));
    assert_eq!(field(&shown, "state"), "acked", "{shown}");
    // And `receipt sign` on a finished receipt just fetches the verified package.
    let out = s.sign(tx, &[]);
    assert!(out.contains("receipt verified"), "{out}");
}

#[test]
fn a_receipt_is_found_in_the_exported_log_up_to_its_signed_checkpoint() {
    let s = Setup::new();
    let tx = s.offer("Order 2002\nTotal 5.00 EUR\n", &[]);
    s.sign(tx, &[]);
    // Later entries, so the chain from the receipt to the checkpoint has links to check.
    let tx2 = s.offer("Order 2003\nTotal 6.00 EUR\n", &[]);
    s.sign(tx2, &[]);
    let file = s.work.join(format!("receipt-{tx}.tally"));
    let data = s.server.data.to_str().unwrap().to_string();
    let log = s.path("log.jsonl");
    let out = ok(outcome(
        common::tally()
            .current_dir(&s.work)
            .args(["ledger", "export", "--data", &data, "--out", &log])
            .output()
            .unwrap(),
    ));
    let node_key = field(&out, "checkpoint")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let out = ok(s.verify(
        &file,
        &["--ca", &s.ca(), "--log", &log, "--node-key", &node_key],
    ));
    assert!(
        field(&out, "log").contains("chained to the checkpoint"),
        "{out}"
    );
    assert!(!field(&out, "log").contains("compare it"), "{out}");
    // Another node key, a log with a later entry changed, a log from after the receipt.
    let other = tally_kernel::crypto::SigningKey::generate()
        .verifying_key()
        .to_hex();
    let (good, _, err) = s.verify(
        &file,
        &["--ca", &s.ca(), "--log", &log, "--node-key", &other],
    );
    assert!(
        !good && err.contains("not signed by the given node key"),
        "{err}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len();
    let mut v: Value = serde_json::from_str(&lines[n - 2]).unwrap();
    v["body"] = Value::String(hex::encode(b"{\"forged\":1}"));
    lines[n - 2] = v.to_string();
    let bad = s.path("bad.jsonl");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let (good, _, err) = s.verify(
        &file,
        &["--ca", &s.ca(), "--log", &bad, "--node-key", &node_key],
    );
    assert!(!good && err.contains("does not hash"), "{err}");
    let late = s.path("late.jsonl");
    let (good, _, err) = outcome(
        common::tally()
            .current_dir(&s.work)
            .args([
                "ledger", "export", "--data", &data, "--out", &late, "--from", "1000",
            ])
            .output()
            .unwrap(),
    );
    assert!(!good && err.contains("no entry at or after 1000"), "{err}");
}

#[test]
fn party_b_checks_a_s_warrant_before_its_signature_leaves() {
    let s = Setup::new();
    let tx = s.offer("Order 77\n", &[]);
    // bob revokes the warrant after the offer: alice's CLI checks it before signing and stops.
    let listed = ok(s.run(&s.bob, &["warrant", "list"]));
    let serial = listed
        .split_whitespace()
        .find(|w| w.len() >= 32 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("a serial in:\n{listed}"))
        .to_string();
    ok(s.run(&s.bob, &["warrant", "revoke", &serial]));
    let tx_text = tx.to_string();
    let (signed, out, err) = s.run(
        &s.alice,
        &[
            "receipt",
            "sign",
            &tx_text,
            "--token",
            "alice.token",
            "--yes",
        ],
    );
    assert!(!signed, "{out}");
    assert!(
        err.contains("refusing to sign") && err.contains("revoked"),
        "{err}"
    );
    let shown = ok(s.run(&s.alice, &["receipt", "show", &tx_text]));
    assert_eq!(
        field(&shown, "state"),
        "offered",
        "B's signature never left: {shown}"
    );
}

/// The operator revokes alice's certificate with `tally party revoke`: her next signature is
/// refused, and `tally receipt verify --online` shows the receipt she signed before still
/// valid with the revocation printed beside it.
#[test]
fn a_revoked_party_signs_nothing_more_and_online_verification_reports_it() {
    let s = Setup::new();
    let tx = s.offer("Order 7\n", &[]);
    s.sign(tx, &[]);
    let file = s.work.join(format!("receipt-{tx}.tally"));
    let out = ok(s.verify(&file, &["--ca", &s.ca(), "--online", &s.server.url]));
    assert!(out.contains("valid") && !out.contains("revoked "), "{out}");
    let pending = s.offer("Order 8\n", &[]);

    // Only the operator revokes.
    let refused = s.run(&s.alice, &["party", "revoke", "alice"]);
    assert!(!refused.0 && refused.2.contains("forbidden"), "{refused:?}");
    let out = ok(s.run(&s.server.admin_key, &["party", "revoke", "alice"]));
    assert!(out.contains("revoked at"), "{out}");

    let tx_s = pending.to_string();
    let signed = s.run(
        &s.alice,
        &["receipt", "sign", &tx_s, "--token", "alice.token", "--yes"],
    );
    assert!(!signed.0 && signed.2.contains("revoked"), "{signed:?}");
    let out = ok(s.verify(&file, &["--ca", &s.ca(), "--online", &s.server.url]));
    assert!(
        out.contains("revoked       party B") && out.contains("after the receipt"),
        "{out}"
    );
    assert!(out.contains("receipt verified"), "{out}");
}

/// The arbiter as its own node (`tally serve --role arbiter`): the receipt node holds no
/// arbiter secret — it publishes the arbiter node's key, escrows A's signature to it — and
/// every abort and resolve is decided there; the arbiter node stores the decision in its
/// own database and answers a repeat from it, also after a restart of the receipt node.
#[test]
fn the_arbiter_runs_as_its_own_node_and_decides_the_exchange() {
    let s = Setup::starting(|tmp, data| {
        // The receipt node's CA, made by a first start; the arbiter trusts it.
        drop(Server::start(data, &[]));
        let ca = data.join("ca.pem");
        let arbiter = Server::start(
            &tmp.join("arbiter-data"),
            &["--role", "arbiter", "--trust-ca", ca.to_str().unwrap()],
        );
        let url = arbiter.url.clone();
        let key = arbiter.admin_key.clone();
        (
            vec!["--arbiter".into(), url, "--arbiter-api-key".into(), key],
            Some(arbiter),
        )
    });
    let arbiter = s.arbiter.as_ref().expect("arbiter node");
    let fetch = |url: String| -> (u16, Value) {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let resp = reqwest::get(&url).await.expect("GET");
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        })
    };
    let get = |url: &str| fetch(url.to_string()).1;
    // The receipt node publishes the arbiter node's key, not one of its own.
    let published = s.api(&s.alice, "GET", "/v1/receipts/node", None);
    let arbiter_key = get(&format!("{}/v1/arbiter/key", arbiter.url));
    assert_eq!(published["arbiter_key"], arbiter_key["arbiter_key"]);
    // …and publishes no arbiter key of its own.
    assert_eq!(fetch(format!("{}/v1/arbiter/key", s.server.url)).0, 404);
    // The arbiter node serves nothing else.
    assert_eq!(fetch(format!("{}/v1/receipts/node", arbiter.url)).0, 404);

    // A holder pins the arbiter it trusts when its token is made: the arbiter node's own key
    // must be the one the receipt node names.
    let admin = s.server.admin_key.clone();
    let pinned = |file: &str, at: &str| {
        s.run(
            &admin,
            &[
                "token",
                "init",
                "--holder",
                "dave",
                "--file",
                file,
                "--arbiter",
                at,
            ],
        )
    };
    ok(pinned("dave.token", &arbiter.url));
    let r = pinned("dave2.token", &s.server.url);
    assert!(!r.0 && !s.work.join("dave2.token").exists(), "{r:?}");

    // A complete fair exchange needs no arbiter; the receipt verifies.
    let tx = s.offer("Fair order 1\nTotal 5.00 EUR", &["--fair"]);
    let out = s.sign(tx, &["--out", "fair.tally"]);
    assert!(out.contains("receipt verified"), "{out}");

    // B escrowed to the arbiter node's key and stopped; B resolves: the arbiter node opens
    // A's escrow and hands A's signature over.
    let tx = s.offer("Fair order 2", &["--fair"]);
    let key = ArbiterPublicKey::from_hex(arbiter_key["arbiter_key"].as_str().unwrap()).unwrap();
    escrow_then_resolve(&s, tx, &key);

    // The receipt node never hears B's escrow (here B never sends it there): B resolves at
    // the arbiter node itself, with no key, and gets A's signature, checked under the node's
    // proxy key; asked again, the same.
    let tx = s.offer("Fair order 2b", &["--fair"]);
    let direct = [
        "arbiter",
        "resolve",
        &tx.to_string(),
        "--token",
        "alice.token",
        "--at",
        &arbiter.url,
    ]
    .map(String::from);
    let direct: Vec<&str> = direct.iter().map(String::as_str).collect();
    for _ in 0..2 {
        let out = ok(s.run(&s.alice, &direct));
        assert_eq!(
            field(&out, "decision"),
            "resolved (the arbiter node at ".to_string() + &arbiter.url + ")",
            "{out}"
        );
        assert!(out.contains("party A's signature verified"), "{out}");
    }
    // At a node that is not the arbiter B escrowed to, nothing is asked.
    let mut elsewhere = direct.clone();
    elsewhere[6] = &s.server.url;
    let r = s.run(&s.alice, &elsewhere);
    assert!(!r.0, "{r:?}");

    // Aborted at the arbiter node: B's later resolve is refused, by the arbiter node's
    // stored decision.
    let tx = s.offer("Fair order 3", &["--fair"]);
    let out = ok(s.run(&s.bob, &["arbiter", "abort", &tx.to_string()]));
    assert_eq!(field(&out, "decision"), "aborted", "{out}");
    let r = s.run(
        &s.alice,
        &[
            "receipt",
            "sign",
            &tx.to_string(),
            "--token",
            "alice.token",
            "--yes",
        ],
    );
    assert!(!r.0 && r.2.contains("aborted"), "{r:?}");
    // The decisions are the arbiter node's: its own journal holds them.
    let audit = ok(cli(
        arbiter,
        &arbiter.admin_key,
        &["ledger", "audit", "--data", arbiter.data.to_str().unwrap()],
    ));
    // Its journal: the admin key and the three decisions (resolved twice, aborted).
    assert!(audit.contains("audit passed"), "{audit}");
    assert_eq!(field(&audit, "journal entries"), "4", "{audit}");

    // With the arbiter node down nothing is decided: the abort is refused as unavailable and
    // the exchange stays open (the receipt node cannot decide it alone).
    let tx = s.offer("Fair order 4", &["--fair"]);
    let mut s = s;
    s.arbiter.as_mut().expect("arbiter node").kill_hard();
    let r = s.run(&s.bob, &["arbiter", "abort", &tx.to_string()]);
    assert!(!r.0 && r.2.contains("unavailable"), "{r:?}");
    let shown = ok(s.run(&s.bob, &["receipt", "show", &tx.to_string()]));
    assert_eq!(field(&shown, "state"), "offered", "{shown}");
}

/// Keys that never leave the holder: carol makes her keys and a signed request with no node
/// and no key, the operator issues it (twice: the same token), carol accepts the answer
/// into her token file, and signs a receipt with it. A request whose proof does not match is
/// certified nothing.
#[test]
fn a_holder_brings_its_own_keys_and_the_operator_certifies_the_request() {
    let s = Setup::new();
    let admin = s.server.admin_key.clone();
    let carol_key = field(
        &ok(cli(
            &s.server,
            &admin,
            &[
                "api-key", "create", "--role", "customer", "--owner", "carol",
            ],
        )),
        "key",
    )
    .to_string();
    // The holder, offline.
    let out = ok(outcome(
        common::tally()
            .current_dir(&s.work)
            .args([
                "token",
                "request",
                "--holder",
                "carol",
                "--keys",
                "carol.keys",
                "--out",
                "carol.req",
            ])
            .output()
            .expect("run tally"),
    ));
    assert!(
        out.contains("carol.keys") && out.contains("carol.req"),
        "{out}"
    );
    let request = std::fs::read_to_string(s.work.join("carol.req")).unwrap();
    assert!(
        !request.contains("PRIVATE") && request.contains("\"proof\""),
        "{request}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(s.work.join("carol.keys"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // A tampered request (another holder under the same proof) is refused.
    let mut forged: Value = serde_json::from_str(&request).unwrap();
    forged["holder"] = json!("mallory");
    std::fs::write(s.work.join("forged.req"), forged.to_string()).unwrap();
    let r = s.run(
        &admin,
        &["token", "issue", "forged.req", "--out", "forged.issued"],
    );
    assert!(!r.0 && r.2.contains("proof"), "{r:?}");

    // The operator; run twice, one token.
    let out = ok(s.run(
        &admin,
        &["token", "issue", "carol.req", "--out", "carol.issued"],
    ));
    let serial = field(&out, "token")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    std::fs::remove_file(s.work.join("carol.issued")).unwrap();
    let again = ok(s.run(
        &admin,
        &["token", "issue", "carol.req", "--out", "carol.issued"],
    ));
    assert!(again.contains(&serial), "{again}");

    // The holder completes its token file and signs with it.
    let out = ok(s.run(
        &carol_key,
        &[
            "token",
            "accept",
            "--keys",
            "carol.keys",
            "--issued",
            "carol.issued",
            "--file",
            "carol.token",
        ],
    ));
    assert_eq!(field(&out, "token"), serial, "{out}");
    ok(s.run(
        &s.bob,
        &[
            "warrant",
            "issue",
            "--token",
            &s.path("bob.token"),
            "--counterparty",
            "carol",
        ],
    ));
    let out = ok(s.run(
        &s.bob,
        &[
            "receipt",
            "offer",
            "--party-a",
            "bob",
            "--party-b",
            "carol",
            "--text",
            "Order 9\n",
        ],
    ));
    let tx = field(&out, "transaction").to_string();
    let out = ok(s.run(
        &carol_key,
        &["receipt", "sign", &tx, "--token", "carol.token", "--yes"],
    ));
    assert!(out.contains("receipt verified"), "{out}");
}
