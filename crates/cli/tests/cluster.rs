//! Two `tally serve` processes with separate data directories on one PostgreSQL database: the
//! scale-out a real operator runs. Every protocol's flow runs with its steps alternating
//! between the two nodes, and with one node restarted in the middle:
//!
//! * a second data directory made fresh is refused (its identity differs) with the files to
//!   copy; once copied, it starts and is the same node to the outside;
//! * out-of-band: a code sent by one node is checked by the other; a payment opened on one is
//!   confirmed on the other after the first restarted; a certificate issued by one node
//!   opens a session on the other;
//! * locked delivery: a product added on one is sold on the other (the product files on
//!   shared storage), paid on the first, unlocked with the key from the second;
//! * receipts: tokens issued on one, the warrant stored on the other, the offer on one, the
//!   signature on the other; after a restart the receipt (made before it) is exported from
//!   each node and verifies offline against the CA;
//! * trading sessions: the cluster is the customer's operator, peered once with another
//!   operator's node; a session opened on one node is answered through the other, the first
//!   killed mid-session, the session closed and cleared through the second.

mod common;

use common::{Server, field, ok, outcome, tally};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tally_service::identity::SHARED_FILES;

/// Two nodes on one database, both in dev mode (the dev inbox is a table: either node reads
/// it).
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
    nodes: [Server; 2],
    admin: String,
}

fn serve_args(url: &str) -> Vec<String> {
    vec!["--dev".into(), "--database-url".into(), url.into()]
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let url = tally_testkit::shared_test_database_url()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let extra = serve_args(&url);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let a = Server::start(&dir.path().join("a"), &extra);

        // A fresh second data directory has its own keys: refused, with what to copy.
        let b_dir = dir.path().join("b");
        let (started, _, err) = serve_refused(&b_dir, &extra);
        assert!(!started, "a node with another identity started: {err}");
        for file in SHARED_FILES {
            assert!(err.contains(file), "the refusal names {file}: {err}");
        }
        // As an operator does: copy the identity, share the product storage.
        for file in SHARED_FILES.iter().copied().chain(["admin.key"]) {
            std::fs::copy(a.data.join(file), b_dir.join(file)).expect("copy identity");
        }
        std::fs::create_dir_all(a.data.join("products")).expect("products");
        std::os::unix::fs::symlink(a.data.join("products"), b_dir.join("products"))
            .expect("shared product storage");
        let b = Server::start(&b_dir, &extra);
        let admin = a.admin_key.clone();
        Some(Cluster {
            dir,
            url,
            nodes: [a, b],
            admin,
        })
    }

    fn node(&self, i: usize) -> &Server {
        &self.nodes[i % 2]
    }

    /// Stops node `i` hard (SIGKILL) and starts it again on the same data directory.
    fn restart(&mut self, i: usize) {
        let data = self.nodes[i].data.clone();
        self.nodes[i].kill_hard();
        let extra = serve_args(&self.url);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.nodes[i] = Server::start(&data, &extra);
    }

    fn work(&self) -> PathBuf {
        let work = self.dir.path().join("work");
        std::fs::create_dir_all(&work).expect("work");
        work
    }

    /// `tally ARGS` against node `i` with `key`, in the work directory.
    fn run(&self, i: usize, key: &str, args: &[&str]) -> (bool, String, String) {
        let server = self.node(i);
        outcome(
            tally()
                .env("TALLY_SERVER", &server.url)
                .env("TALLY_API_KEY", key)
                .env_remove("TALLY_DATA")
                .current_dir(self.work())
                .args(args)
                .output()
                .expect("run tally"),
        )
    }

    fn ok(&self, i: usize, key: &str, args: &[&str]) -> String {
        ok(self.run(i, key, args))
    }

    fn key(&self, i: usize, role: &str, owner: &str) -> String {
        let out = self.ok(
            i,
            &self.admin,
            &["api-key", "create", "--role", role, "--owner", owner],
        );
        field(&out, "key").to_string()
    }

    fn account(&self, i: usize, extra: &[&str]) -> String {
        let mut args = vec!["account", "open", "--currency", "EUR"];
        args.extend_from_slice(extra);
        field(&self.ok(i, &self.admin, &args), "account").to_string()
    }

    /// The operator moves `amount` from `from` to `to` through node `i`.
    fn fund(&self, i: usize, from: &str, to: &str, amount: &str) {
        let args = ["transfer", "--from", from, "--to", to, "--amount", amount];
        self.ok(i, &self.admin, &args);
    }

    /// The code of `session` in the dev inbox `address`, read through node `i`.
    fn code(&self, i: usize, address: &str, session: &str) -> String {
        let out = self.ok(i, &self.admin, &["inbox", address, "--json"]);
        let messages: serde_json::Value = serde_json::from_str(&out).expect("inbox JSON");
        let body = messages
            .as_array()
            .expect("a list")
            .iter()
            .find(|m| m["data"]["session"] == session)
            .and_then(|m| m["body"].as_str())
            .unwrap_or_else(|| panic!("no message for {session}: {out}"))
            .to_string();
        let at = body.find("code").expect("a code") + 4;
        body[at..]
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect()
    }

    fn audit_passes(&self) {
        for node in &self.nodes {
            let out = Command::new(env!("CARGO_BIN_EXE_tally"))
                .args(["ledger", "audit", "--data"])
                .arg(&node.data)
                .args(["--database-url", &self.url])
                .output()
                .expect("audit");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("audit passed"),
                "{text}"
            );
        }
    }
}

/// `tally serve` on `data` that must exit by itself (refused) within a bounded wait.
fn serve_refused(data: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut child = tally()
        .args(["serve", "--data"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("TALLY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tally serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tally serve neither started nor refused within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    outcome(child.wait_with_output().expect("output"))
}

#[test]
fn out_of_band_codes_payments_and_certificates_across_two_nodes() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let alice_key = c.key(0, "customer", "alice");
    let shop_key = c.key(1, "merchant", "shop");
    let world = c.account(0, &["--kind", "settlement", "--unbounded"]);
    let alice = c.account(1, &["--kind", "customer", "--owner", "alice"]);
    let shop = c.account(0, &["--kind", "merchant", "--owner", "shop"]);
    c.fund(1, &world, &alice, "50.00 EUR");

    // The address is added on A; its code, sent by A, is read and confirmed on B.
    let out = c.ok(
        0,
        &alice_key,
        &[
            "subscriber",
            "address",
            "add",
            "alice",
            "--channel",
            "dev",
            "--address",
            "alice-phone",
        ],
    );
    let session = field(&out, "session").to_string();
    let code = c.code(1, "alice-phone", &session);
    let out = c.ok(
        1,
        &alice_key,
        &["auth", "confirm", &session, "--code", &code],
    );
    assert!(out.contains("address verified"), "{out}");

    // A payment opened on B (the hold placed), A restarted, confirmed on A.
    let out = c.ok(
        1,
        &shop_key,
        &[
            "auth",
            "pay",
            "--user",
            "alice",
            "--merchant-account",
            &shop,
            "--amount",
            "12.50 EUR",
            "--description",
            "Blue mug",
            "--payer-account",
            &alice,
        ],
    );
    let session = field(&out, "session").to_string();
    c.restart(0);
    let code = c.code(0, "alice-phone", &session);
    let out = c.ok(
        0,
        &alice_key,
        &["auth", "confirm", &session, "--code", &code],
    );
    assert!(out.contains("\nauthorized\n"), "{out}");
    let balance = |i: usize, account: &str| {
        field(&c.ok(i, &c.admin, &["account", "show", account]), "balance").to_string()
    };
    assert_eq!(balance(1, &alice), "37.50 EUR");
    assert_eq!(balance(0, &shop), "12.50 EUR");
    // Confirmed once: the other node refuses the same code.
    let (again, _, err) = c.run(
        1,
        &alice_key,
        &["auth", "confirm", &session, "--code", &code],
    );
    assert!(!again && err.contains("session_closed"), "{err}");

    // A certificate issued by B names channel B; a login on A reaches alice through it.
    let prefix = c.work().join("alice-cert");
    c.ok(
        1,
        &c.admin,
        &[
            "subscriber",
            "certificate",
            "alice",
            "--channel",
            "dev",
            "--address",
            "alice-phone",
            "--out",
            prefix.to_str().expect("UTF-8"),
        ],
    );
    let pem = format!("{}.pem", prefix.display());
    let out = c.ok(
        0,
        &alice_key,
        &["auth", "login", "alice", "--certificate", &pem],
    );
    let session = field(&out, "session").to_string();
    let code = c.code(0, "alice-phone", &session);
    let out = c.ok(
        1,
        &alice_key,
        &["auth", "confirm", &session, "--code", &code],
    );
    assert!(out.contains("\nauthorized\n"), "{out}");
    c.audit_passes();
}

#[test]
fn a_product_added_on_one_node_is_sold_paid_and_unlocked_across_both() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let shop_key = c.key(0, "merchant", "shop");
    let alice_key = c.key(1, "customer", "alice");
    let world = c.account(1, &["--kind", "settlement", "--unbounded"]);
    let shop = c.account(0, &["--kind", "merchant", "--owner", "shop"]);
    let alice = c.account(1, &["--kind", "customer", "--owner", "alice"]);
    c.fund(0, &world, &alice, "20.00 EUR");
    let work = c.work();
    let song = work.join("song.bin");
    let bytes: Vec<u8> = (0..(1 << 20) + 77).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&song, &bytes).expect("song");

    // Added and published on A.
    let out = c.ok(
        0,
        &shop_key,
        &[
            "product",
            "add",
            "--title",
            "Night Songs",
            "--price",
            "9.90 EUR",
            "--pay-to",
            &shop,
            "--file",
            song.to_str().expect("UTF-8"),
            "--licence",
            "Personal use only.",
        ],
    );
    let product = field(&out, "product").to_string();
    // Bought on B (its package built from the shared product files).
    let out = c.ok(
        1,
        &alice_key,
        &[
            "buy",
            &product,
            "--channel",
            "dev",
            "--address",
            "alice-inbox",
            "--name",
            "Alice",
        ],
    );
    let reference = field(&out, "reference").to_string();
    let package = work.join(format!("{reference}.tallypkg"));
    assert!(package.is_file(), "{out}");
    c.restart(1);
    // Paid on A, unlocked with the key fetched from B (restarted).
    c.ok(
        0,
        &alice_key,
        &[
            "pay",
            "--reference",
            &reference,
            "--from",
            &alice,
            "--amount",
            "9.90 EUR",
        ],
    );
    let out = c.ok(
        1,
        &alice_key,
        &[
            "package",
            "unlock",
            package.to_str().expect("UTF-8"),
            "--fetch",
        ],
    );
    let unlocked = work.join(&reference).join("song.bin");
    assert_eq!(std::fs::read(&unlocked).expect("unlocked"), bytes, "{out}");
    let shown = c.ok(0, &c.admin, &["account", "show", &shop]);
    assert_eq!(field(&shown, "balance"), "9.90 EUR");
    c.audit_passes();
}

#[test]
fn a_receipt_made_on_two_nodes_verifies_from_either_after_a_restart() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let alice_key = c.key(0, "customer", "alice");
    let bob_key = c.key(1, "merchant", "bob");
    // Tokens issued on A (their certificates from the shared CA).
    for (holder, role) in [("alice", "customer"), ("bob", "manager")] {
        let file = format!("{holder}.token");
        c.ok(
            0,
            &c.admin,
            &[
                "token", "init", "--holder", holder, "--role", role, "--file", &file,
            ],
        );
    }
    // Bob's warrant stored through B; the offer on A; alice signs on B.
    c.ok(
        1,
        &bob_key,
        &[
            "warrant",
            "issue",
            "--token",
            "bob.token",
            "--counterparty",
            "alice",
        ],
    );
    let out = c.ok(
        0,
        &bob_key,
        &[
            "receipt",
            "offer",
            "--party-a",
            "bob",
            "--party-b",
            "alice",
            "--text",
            "Order 7001\n1 x lamp\n",
        ],
    );
    let tx = field(&out, "transaction").to_string();
    let out = c.ok(
        1,
        &alice_key,
        &["receipt", "sign", &tx, "--token", "alice.token", "--yes"],
    );
    assert!(out.contains("receipt verified"), "{out}");

    // Both nodes restarted; the receipt made before verifies as exported from either.
    c.restart(0);
    c.restart(1);
    let ca = c.node(0).data.join("ca.pem");
    let mut exported = Vec::new();
    for i in 0..2 {
        let file = format!("from-{i}.tally");
        c.ok(i, &alice_key, &["receipt", "export", &tx, "--out", &file]);
        let (valid, out, err) = outcome(
            tally()
                .current_dir(c.work())
                .args(["receipt", "verify", &file, "--ca"])
                .arg(&ca)
                .output()
                .expect("verify"),
        );
        assert!(valid && out.contains("receipt verified"), "{out}{err}");
        exported.push(std::fs::read(c.work().join(&file)).expect("package"));
    }
    assert_eq!(
        exported[0], exported[1],
        "both nodes serve the same package"
    );
    c.audit_passes();
}

/// Trading sessions (issue [7]) with the customer's operator scaled out: the cluster is one
/// operator (one node id, one database), peered once with the merchant's operator (a node of
/// its own on SQLite), which sends to the second node's address. The session is opened on the
/// first node, answered through the second, bought in at the merchant's agent; the first node
/// is killed (SIGKILL) and restarted; the session is closed and cleared through the second,
/// and both nodes of the cluster show the same session and books.
#[test]
fn a_trading_session_opened_on_one_node_clears_through_the_other() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let other = tempfile::tempdir().expect("tempdir");
    let b = Server::start(&other.path().join("data"), &[]);
    let id_of = |out: String| field(&out, "node id").to_string();
    let id_a = id_of(c.ok(0, &c.admin, &["federation", "id"]));
    assert_eq!(
        id_of(c.ok(1, &c.admin, &["federation", "id"])),
        id_a,
        "one node id"
    );
    let id_b = id_of(ok(common::cli(&b, &b.admin_key, &["federation", "id"])));
    c.ok(
        0,
        &c.admin,
        &[
            "federation",
            "add-peer",
            &b.url,
            "--fingerprint",
            &id_b,
            "--name",
            "bank-b",
        ],
    );
    let peer_a = c.node(1).url.clone();
    ok(common::cli(
        &b,
        &b.admin_key,
        &[
            "federation",
            "add-peer",
            &peer_a,
            "--fingerprint",
            &id_a,
            "--name",
            "bank-a",
        ],
    ));
    // The peer added through node 0 is in the database: node 1 knows it too.
    assert!(
        c.ok(1, &c.admin, &["federation", "peers"])
            .contains("bank-b")
    );
    let (kiosk_key, kiosk) = common::agent_mode_merchant(&b, "kiosk");
    let (mut agent, agent_url) = common::start_agent(&other.path().join("agent"), &b, &kiosk_key);
    let alice_key = c.key(0, "customer", "alice");
    let world = c.account(0, &["--kind", "settlement", "--unbounded"]);
    let alice = c.account(1, &["--kind", "customer", "--owner", "alice"]);
    c.fund(1, &world, &alice, "5.00 EUR");
    let out = c.ok(
        0,
        &alice_key,
        &[
            "session",
            "open",
            "--account",
            &alice,
            "--deposit",
            "2.00 EUR",
            "--merchant",
            "kiosk",
            "--operator",
            "bank-b",
            "--wait",
            "30",
        ],
    );
    assert_eq!(field(&out, "state"), "open", "{out}");
    let session = field(&out, "session").to_string();
    let buy = |price: &str, item: &str| {
        ok(outcome(
            tally()
                .current_dir(c.work())
                .args([
                    "session", "buy", &session, "--agent", &agent_url, "--price", price, "--item",
                    item,
                ])
                .output()
                .expect("buy"),
        ))
    };
    buy("0.40 EUR", "song-1");
    buy("0.35 EUR", "song-2");
    // Node 0, where the session was opened, dies hard mid-session and comes back.
    c.restart(0);
    let closed = c.ok(
        1,
        &alice_key,
        &["session", "close", &session, "--wait", "30"],
    );
    assert_eq!(field(&closed, "state"), "cleared", "{closed}");
    for i in 0..2 {
        let shown = c.ok(i, &alice_key, &["session", "show", &session]);
        assert!(shown.contains("state       cleared"), "node {i}: {shown}");
        let owed = c.ok(i, &c.admin, &["clearing", "list"]);
        assert!(
            owed.contains("bank-b  EUR: we owe 0.75 EUR, it owes us 0.00 EUR, net -0.75 EUR"),
            "node {i}: {owed}"
        );
    }
    let acc = c.ok(0, &c.admin, &["account", "show", &alice, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&acc).expect("json");
    assert_eq!(v["available_minor"].as_i64(), Some(500 - 75));
    common::wait_until("B's side cleared", || {
        ok(common::cli(
            &b,
            &b.admin_key,
            &["session", "show", &session],
        ))
        .contains("state       cleared")
    });
    let at_b = ok(common::cli(
        &b,
        &b.admin_key,
        &["account", "show", &kiosk, "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&at_b).expect("json");
    assert_eq!(v["available_minor"].as_i64(), Some(75));
    c.audit_passes();
    common::assert_audit_passes(&b);
    agent.kill().expect("SIGKILL");
    agent.wait().expect("reap");
}

/// Pads (issue [8]): one pad, frames to both nodes. The same frame sent to both at once is
/// taken once (both answer the same reply, one of them as a replay); two different frames at
/// one offset sent to both at once: one is taken, the other refused, so no pad byte is handed
/// out twice; successive frames alternate between the nodes, one of which is restarted in the
/// middle; both nodes then show the holder's cursors and records.
#[test]
fn one_pad_served_by_two_nodes_never_uses_a_byte_twice() {
    use common::holder::{Holder, post_frame};
    use tally_proto::pad::plain::{ReplyBody, Request};
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let till = c.account(0, &["--kind", "settlement", "--unbounded"]);
    let out = c.ok(
        1,
        &c.admin.clone(),
        &[
            "pad", "buy", "--from", &till, "--value", "3.00 EUR", "--size", "65536", "--wallet",
            "pads",
        ],
    );
    let pad = field(&out, "pad").to_string();
    let file = std::fs::read(c.work().join("pads").join(format!("{pad}.pad"))).expect("pad file");
    let mut holder =
        Holder::from_file(tally_proto::pad::file::PadFile::decode(&file).expect("decodes"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let http = reqwest::Client::new();
    let urls = [c.node(0).url.clone(), c.node(1).url.clone()];

    // The same frame to both at once: taken once, the same answer from both.
    let frame = holder.seal(&Request::Show);
    let (a, b) = rt.block_on(async {
        tokio::join!(
            post_frame(&http, &urls[0], frame.clone()),
            post_frame(&http, &urls[1], frame.clone())
        )
    });
    let (a, b) = (a.expect("node 0"), b.expect("node 1"));
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(a.2, b.2, "one reply");
    assert!(
        a.1 != b.1 || (a.1 && b.1),
        "at most one of them took it fresh"
    );
    holder.answered(&frame, &a.2);

    // Two different frames at one offset, one to each node at once: one taken, one refused.
    for round in 0..5 {
        let show = holder.seal(&Request::Show);
        let noop = holder.seal(&Request::Noop);
        let (a, b) = rt.block_on(async {
            tokio::join!(
                post_frame(&http, &urls[round % 2], show.clone()),
                post_frame(&http, &urls[(round + 1) % 2], noop.clone())
            )
        });
        let (a, b) = (a.expect("a node"), b.expect("the other"));
        let taken: Vec<_> = [(a, &show), (b, &noop)]
            .into_iter()
            .filter(|((status, _, _), _)| *status == 200)
            .collect();
        assert_eq!(
            taken.len(),
            1,
            "round {round}: exactly one frame of the offset is taken"
        );
        let ((_, _, body), frame) = &taken[0];
        holder.answered(frame, body);
    }

    // Successive frames alternating between the nodes, node 0 restarted in the middle.
    for i in 0..10 {
        if i == 5 {
            c.restart(0);
        }
        let url = c.node(i).url.clone();
        let frame = holder.seal(&Request::Show);
        let (status, _, body) = rt
            .block_on(post_frame(&http, &url, frame.clone()))
            .expect("post");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let reply = holder.answered(&frame, &body);
        let ReplyBody::Show(s) = reply.body else {
            panic!("show")
        };
        assert_eq!(
            (s.records, s.record_hash),
            (holder.chain().count, holder.chain().hash)
        );
    }
    for i in 0..2 {
        let out = c.ok(i, &c.admin.clone(), &["pad", "inspect", &pad, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v["up_next"], holder.up_next(), "node {i}");
        assert_eq!(v["down_low"], holder.down_low(), "node {i}");
        assert_eq!(v["records"], holder.chain().count, "node {i}");
        assert_eq!(v["available_minor"], 300, "show and noop are free");
    }
}

/// Providers on two nodes of one database: a holder's requests to a provider go alternately to
/// both nodes; both nodes then settle the clearing at the same moment, and between them pay
/// each share once: the provider gets its prices less the commission, the operator the rest,
/// and settling again on either pays nothing.
#[test]
fn two_nodes_settling_at_once_pay_each_share_once() {
    use common::holder::{Holder, post_frame};
    use tally_proto::pad::plain::{ProviderName, ReplyBody, Request};
    let Some(c) = Cluster::start() else {
        return;
    };
    let admin = c.admin.clone();
    c.ok(
        0,
        &admin,
        &[
            "pad",
            "tariff",
            "EUR",
            "--byte-price",
            "2",
            "--commission-bps",
            "1000",
        ],
    );
    let till = c.account(0, &["--kind", "settlement", "--unbounded"]);
    let echo = c.key(1, "merchant", "echo-co");
    let earnings = field(
        &c.ok(1, &echo, &["account", "open", "--currency", "EUR"]),
        "account",
    )
    .to_string();
    c.ok(
        1,
        &echo,
        &[
            "provider",
            "register",
            "echo",
            "--account",
            &earnings,
            "--price",
            "0.50 EUR",
            "--webhook",
            "http://127.0.0.1:9/echo",
        ],
    );
    let out = c.ok(
        0,
        &admin,
        &[
            "pad",
            "buy",
            "--from",
            &till,
            "--value",
            "10.00 EUR",
            "--size",
            "65536",
            "--wallet",
            "provider-pads",
        ],
    );
    let pad = field(&out, "pad").to_string();
    let file =
        std::fs::read(c.work().join("provider-pads").join(format!("{pad}.pad"))).expect("pad file");
    let mut holder =
        Holder::from_file(tally_proto::pad::file::PadFile::decode(&file).expect("decodes"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let http = reqwest::Client::new();
    for i in 0..6 {
        let frame = holder.seal(&Request::Forward {
            provider: ProviderName::new("echo").expect("name"),
            escrow: false,
            body: format!("request {i}").into_bytes(),
        });
        let (status, _, body) = rt
            .block_on(post_frame(&http, &c.node(i).url, frame.clone()))
            .expect("post");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(matches!(
            holder.answered(&frame, &body).body,
            ReplyBody::Forward { .. }
        ));
    }
    // Both nodes settle at once.
    let settle = |i: usize| {
        let (admin, url, work) = (admin.clone(), c.node(i).url.clone(), c.work());
        std::thread::spawn(move || {
            ok(outcome(
                tally()
                    .env("TALLY_SERVER", &url)
                    .env("TALLY_API_KEY", &admin)
                    .env_remove("TALLY_DATA")
                    .current_dir(work)
                    .args(["provider", "settle", "--json"])
                    .output()
                    .expect("run tally"),
            ))
        })
    };
    let (a, b) = (settle(0), settle(1));
    let (a, b) = (a.join().expect("node 0"), b.join().expect("node 1"));
    let mut echo_lines = 0;
    let mut echo_paid = 0;
    for out in [&a, &b] {
        let v: serde_json::Value = serde_json::from_str(out).expect("JSON");
        for p in v["payouts"].as_array().expect("payouts") {
            if p["provider"] == "echo" {
                echo_lines += p["lines"].as_u64().expect("lines");
                echo_paid += p["amount_minor"].as_i64().expect("amount");
            }
        }
    }
    assert_eq!((echo_lines, echo_paid), (6, 6 * 45), "{a}\n{b}");
    for i in 0..2 {
        let again = c.ok(i, &admin, &["provider", "settle"]);
        assert_eq!(again.trim(), "nothing to settle", "node {i}");
    }
    let shown = c.ok(0, &echo, &["account", "show", &earnings]);
    assert!(shown.contains("balance   2.70 EUR"), "{shown}");
    c.audit_passes();
}

/// Reads server-sent `transfer` events from `response` until `n` arrived (bounded wait); their
/// transfers' ids.
async fn streamed(response: &mut reqwest::Response, n: usize) -> Vec<String> {
    let mut text = String::new();
    let mut ids = Vec::new();
    let read = async {
        while ids.len() < n {
            let chunk = response.chunk().await.expect("stream").expect("open");
            text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                    let t: serde_json::Value = serde_json::from_str(data.trim()).expect("json");
                    ids.push(t["id"].as_str().expect("id").to_string());
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("events arrive");
    ids
}

/// Batches of transfer events (issue [10]) on two nodes of one database: a file sent through
/// A is in the ledger once when sent again through B after A restarted (the event ids are
/// decided in the database); either node finds the transfers and the history; B's change
/// stream carries what A committed, both what was there and what A commits while B streams.
#[test]
fn batches_through_either_node_make_one_ledger_and_one_stream() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let world = c.account(0, &["--kind", "settlement", "--unbounded"]);
    let kim = c.account(1, &["--owner", "kim", "--history"]);
    let event = |n: u32, linked: bool| {
        let mut e = serde_json::json!({"id": format!("00000000-0000-4000-8000-{n:012}"),
            "debit_account": world, "credit_account": kim, "amount_minor": n * 100,
            "currency": "EUR"});
        if linked {
            e["flags"] = serde_json::json!({"linked": true});
        }
        e.to_string()
    };
    let lines = [
        event(1, false),
        event(2, false),
        event(3, false),
        event(4, true),
        event(5, false),
    ];
    std::fs::write(c.work().join("five.jsonl"), lines.join("\n")).expect("write");
    let out = c.ok(0, &c.admin, &["transfer", "--batch", "five.jsonl"]);
    assert!(out.contains("5 events: 5 created"), "{out}");
    c.restart(0);
    let (_, out, _) = c.run(1, &c.admin, &["transfer", "--batch", "five.jsonl"]);
    assert!(
        out.contains("5 events: 4 exists, 1 linked_event_failed"),
        "sent again through B, nothing is made twice: {out}"
    );
    let found = c.ok(0, &c.admin, &["transfers", "--account", &kim, "--json"]);
    let found: serde_json::Value = serde_json::from_str(&found).expect("json");
    assert_eq!(found["transfers"].as_array().map(Vec::len), Some(5));
    let history = c.ok(1, &c.admin, &["account", "balances", &kim, "--json"]);
    let history: serde_json::Value = serde_json::from_str(&history).expect("json");
    let last = &history["balances"][4]["balance_minor"];
    assert_eq!(last, 1_500, "{history}");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut response = reqwest::Client::new()
            .get(format!("{}/v1/transfers/changes", c.node(1).url))
            .bearer_auth(&c.admin)
            .send()
            .await
            .expect("stream");
        assert_eq!(response.status(), 200);
        let ids = streamed(&mut response, 5).await;
        let want: Vec<String> = (1..=5)
            .map(|n| format!("00000000-0000-4000-8000-{n:012}"))
            .collect();
        assert_eq!(ids, want);
        // Committed through A while B streams: B re-reads the shared journal and sends it.
        std::fs::write(c.work().join("sixth.jsonl"), event(6, false)).expect("write");
        let out = c.ok(0, &c.admin, &["transfer", "--batch", "sixth.jsonl"]);
        assert!(out.contains("1 event: 1 created"), "{out}");
        assert_eq!(
            streamed(&mut response, 1).await,
            ["00000000-0000-4000-8000-000000000006"]
        );
    });
    c.audit_passes();
}
