//! Federation through the real binary (issue [7], step 2): two `tally serve` processes, each
//! with its own data directory and database, made peers with `tally federation add-peer`
//! (the key checked against the fingerprint given out of band), exchange sealed messages
//! over loopback HTTP; a peer killed with SIGKILL and restarted gets what was sent while it
//! was down; forged and replayed messages are refused or applied once.

mod common;

use common::{Server, agent_mode_merchant, cli, ok, start_agent, wait_until};
use tally_client::wire::error::ErrorCode;
use tally_kernel::crypto::SigningKey;
use tally_proto::session::envelope::Envelope;
use tally_proto::session::ids::NodeId;

fn id_of(server: &Server) -> String {
    let out = ok(cli(server, &server.admin_key, &["federation", "id"]));
    common::field(&out, "node id").to_string()
}

/// `(pending, sent, failed, received)` of `peer` on `server`.
fn traffic(server: &Server, peer: &str) -> (i64, i64, i64, i64) {
    let out = ok(cli(
        server,
        &server.admin_key,
        &["federation", "show", peer, "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let n = |k: &str| v[k].as_i64().expect(k);
    (n("pending"), n("sent"), n("failed"), n("received"))
}

/// Two operators' nodes in `dirs[0]` and `dirs[1]`, each the other's peer (`bank-b` at A,
/// `bank-a` at B): `(a, b, id_a, id_b)`.
fn two_operators(dirs: &[tempfile::TempDir]) -> (Server, Server, String, String) {
    two_operators_with(dirs, &[])
}

/// [`two_operators`], both nodes started with `extra` arguments.
fn two_operators_with(
    dirs: &[tempfile::TempDir],
    extra: &[&str],
) -> (Server, Server, String, String) {
    let a = Server::start(&dirs[0].path().join("data"), extra);
    let b = Server::start(&dirs[1].path().join("data"), extra);
    let (id_a, id_b) = (id_of(&a), id_of(&b));
    for (on, other, id, name) in [(&a, &b, &id_b, "bank-b"), (&b, &a, &id_a, "bank-a")] {
        ok(cli(
            on,
            &on.admin_key,
            &[
                "federation",
                "add-peer",
                &other.url,
                "--fingerprint",
                id,
                "--name",
                name,
            ],
        ));
    }
    (a, b, id_a, id_b)
}

/// A customer `name` at `server` with `amount` on its account: `(its key, its account)`.
fn funded_customer(server: &Server, name: &str, amount: &str) -> (String, String) {
    let key = common::field(
        &ok(cli(
            server,
            &server.admin_key,
            &["api-key", "create", "--role", "customer", "--owner", name],
        )),
        "key",
    )
    .to_string();
    let admin = &server.admin_key;
    let world = common::open_account(server, admin, &["--kind", "settlement", "--unbounded"]);
    let account = common::open_account(server, admin, &["--kind", "customer", "--owner", name]);
    common::transfer(server, admin, &world, &account, amount, &[]);
    (key, account)
}

/// What `account` at `server` may still spend, minor units.
fn available(server: &Server, account: &str) -> i64 {
    let out = ok(cli(
        server,
        &server.admin_key,
        &["account", "show", account, "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["available_minor"].as_i64().expect("available")
}

#[test]
fn two_nodes_exchange_sealed_messages_and_catch_up_after_a_restart() {
    let (da, db) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let a = Server::start(&da.path().join("data"), &[]);
    let mut b = Server::start(&db.path().join("data"), &[]);
    let (id_a, id_b) = (id_of(&a), id_of(&b));
    assert_ne!(id_a, id_b);

    // A fingerprint that is not the peer's key adds nothing.
    let wrong = "0".repeat(64);
    let (done, _, err) = cli(
        &a,
        &a.admin_key,
        &["federation", "add-peer", &b.url, "--fingerprint", &wrong],
    );
    assert!(!done);
    assert!(
        err.contains("not the") && err.contains("not added"),
        "{err}"
    );
    assert!(ok(cli(&a, &a.admin_key, &["federation", "peers"])).contains("no peers"));

    // Each operator adds the other with the fingerprint it was given.
    let added = ok(cli(
        &a,
        &a.admin_key,
        &[
            "federation",
            "add-peer",
            &b.url,
            "--fingerprint",
            &id_b,
            "--name",
            "bank-b",
        ],
    ));
    assert!(
        added.contains("peer added: bank-b") && added.contains(&id_b),
        "{added}"
    );
    ok(cli(
        &b,
        &b.admin_key,
        &[
            "federation",
            "add-peer",
            &a.url,
            "--fingerprint",
            &id_a,
            "--name",
            "bank-a",
        ],
    ));

    // A pings B; B's pong comes back (both ways over HTTP, sealed by each node's key).
    let pong = ok(cli(
        &a,
        &a.admin_key,
        &["federation", "ping", "bank-b", "--wait", "30"],
    ));
    assert!(pong.starts_with("pong from bank-b"), "{pong}");
    wait_until("B's pong marked sent and A's ping marked sent", || {
        traffic(&a, "bank-b") == (0, 1, 0, 1) && traffic(&b, "bank-a") == (0, 1, 0, 1)
    });

    // Forged, tampered and replayed messages, posted to B as an attacker would.
    let a_key = std::fs::read_to_string(a.data.join("node.key")).expect("A's node.key");
    let a_key = SigningKey::from_pkcs8_pem(&a_key).expect("A's key");
    let (from, to) = (id_a.parse().expect("id"), id_b.parse().expect("id"));
    let envelope = |kind: &str| Envelope {
        id: tally_kernel::Id::new(),
        from,
        to,
        sent_at: tally_kernel::Timestamp::now().as_micros(),
        kind: kind.into(),
        body: serde_json::json!({}),
    };
    let stranger = SigningKey::generate();
    let forged = Envelope {
        from: NodeId::of(&stranger.verifying_key()),
        ..envelope("ping")
    }
    .seal(&stranger)
    .expect("seal");
    let real = envelope("ping").seal(&a_key).expect("seal");
    let mut tampered = String::from_utf8(real.clone()).expect("utf-8");
    let at = tampered.find("\"signature\":\"").expect("signature") + 13;
    let flipped = if &tampered[at..=at] == "0" { "1" } else { "0" };
    tampered.replace_range(at..=at, flipped);
    let unknown = envelope("hello").seal(&a_key).expect("seal");
    let to_b = tally_client::Client::builder(&b.url)
        .build()
        .expect("client");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let reason = |bytes: Vec<u8>| {
        let e = runtime
            .block_on(to_b.peer_message(bytes))
            .expect_err("refused");
        assert_eq!(e.code(), Some(ErrorCode::PeerRefused), "{e}");
        e.refusal()
            .expect("refusal")
            .details
            .as_ref()
            .expect("details")["reason"]
            .as_str()
            .expect("reason")
            .to_string()
    };
    assert_eq!(reason(forged), "unknown_peer");
    assert_eq!(reason(tampered.into_bytes()), "bad_signature");
    assert_eq!(reason(unknown), "unknown_kind");
    let first = runtime
        .block_on(to_b.peer_message(real.clone()))
        .expect("taken");
    let again = runtime.block_on(to_b.peer_message(real)).expect("replay");
    assert!(!first.duplicate && again.duplicate && again.id == first.id);
    wait_until("one pong for the ping taken twice", || {
        traffic(&a, "bank-b") == (0, 1, 0, 2) && traffic(&b, "bank-a") == (0, 2, 0, 2)
    });

    // B goes down hard; A's ping waits in its outbox and is retried.
    let listen = b.url.trim_start_matches("http://").to_string();
    b.kill_hard();
    let queued = ok(cli(&a, &a.admin_key, &["federation", "ping", "bank-b"]));
    assert!(queued.starts_with("ping "), "{queued}");
    wait_until("A's first attempt to fail", || {
        let log = a.log.lock().expect("log");
        log.iter()
            .any(|l| l.contains("delivery failed") && l.contains("peer"))
    });
    assert_eq!(traffic(&a, "bank-b"), (1, 1, 0, 2));
    // B comes back where A knows it and gets the ping; its pong reaches A.
    let b = Server::start_on(&db.path().join("data"), &listen, &[]);
    wait_until("the ping sent while B was down answered", || {
        traffic(&a, "bank-b") == (0, 2, 0, 3)
    });
    wait_until("B's pongs all marked sent", || {
        traffic(&b, "bank-a") == (0, 3, 0, 3)
    });
    common::assert_audit_passes(&a);
    drop(b);
    drop(a);
}

/// A trading session opened through the binary across two operators: the merchant at B in
/// agent mode, the customer at A; the deposit is held at A until B answers, and a session with
/// a merchant B does not know is refused and its deposit released.
#[test]
fn a_customer_opens_trading_sessions_with_a_merchant_at_another_operator() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (a, b, id_a, _) = two_operators(&dirs);

    // B: the merchant `kiosk`, paid to its EUR account, takes sessions at once.
    let kiosk = common::open_account(
        &b,
        &b.admin_key,
        &["--kind", "merchant", "--owner", "kiosk"],
    );
    let out = ok(cli(
        &b,
        &b.admin_key,
        &[
            "session",
            "merchant",
            "kiosk",
            "--account",
            &kiosk,
            "--auto-ack",
        ],
    ));
    assert!(out.contains("agent mode"), "{out}");

    // A: alice with 50.00 EUR.
    let (alice_key, alice) = funded_customer(&a, "alice", "50.00 EUR");
    let available = |who: &str| available(&a, who);

    let wallet_dir = tempfile::tempdir().expect("wallet");
    let wallet = wallet_dir.path().to_str().expect("utf-8");
    let open = |merchant: &str, deposit: &str| {
        cli(
            &a,
            &alice_key,
            &[
                "session",
                "open",
                "--account",
                &alice,
                "--deposit",
                deposit,
                "--merchant",
                merchant,
                "--operator",
                "bank-b",
                "--wait",
                "30",
                "--wallet",
                wallet,
            ],
        )
    };
    let out = ok(open("kiosk", "20.00 EUR"));
    assert_eq!(common::field(&out, "state"), "open", "{out}");
    assert!(out.contains("merchant's  20.00 EUR (rate 1/1"), "{out}");
    let session = common::field(&out, "session").to_string();
    assert!(session.starts_with(&id_a), "{session}");
    assert_eq!(available(&alice), 3000);
    // B's operator sees it, under a pseudonym.
    let at_b = ok(cli(&b, &b.admin_key, &["session", "show", &session]));
    assert_eq!(common::field(&at_b, "role"), "mta");
    assert_eq!(
        common::field(&at_b, "customer"),
        common::field(&out, "customer")
    );
    assert!(!at_b.contains("alice"), "{at_b}");

    // More than alice has left is refused; a merchant B does not know ends the session.
    let (done, _, err) = open("kiosk", "30.01 EUR");
    assert!(!done && err.contains("insufficient_funds"), "{err}");
    let (done, out, _) = open("nobody", "5.00 EUR");
    assert!(!done, "an aborted session exits non-zero");
    assert_eq!(common::field(&out, "state"), "aborted", "{out}");
    assert_eq!(available(&alice), 3000);

    // A merchant at alice's own operator: A plays both roles, through its own inbox.
    let corner = common::open_account(
        &a,
        &a.admin_key,
        &["--kind", "merchant", "--owner", "corner"],
    );
    ok(cli(
        &a,
        &a.admin_key,
        &[
            "session",
            "merchant",
            "corner",
            "--account",
            &corner,
            "--auto-ack",
        ],
    ));
    let out = ok(cli(
        &a,
        &alice_key,
        &[
            "session",
            "open",
            "--account",
            &alice,
            "--deposit",
            "4.00 EUR",
            "--merchant",
            "corner",
            "--operator",
            &id_a,
            "--wait",
            "30",
            "--wallet",
            wallet,
        ],
    ));
    assert_eq!(common::field(&out, "state"), "open", "{out}");
    assert_eq!(common::field(&out, "peer"), id_a);
    assert_eq!(available(&alice), 2600);
    // The wallet keeps a key per session opened, none for the refused one (and its
    // operator's exchange tables).
    let mut files: Vec<String> = std::fs::read_dir(wallet_dir.path())
        .expect("wallet")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| f != "fx.json")
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.starts_with(&id_a) && f.ends_with(".json")),
        "{files:?}"
    );
    common::assert_audit_passes(&a);
    common::assert_audit_passes(&b);
}

/// Purchases inside a session go to the merchant's agent only: each is taken once, in order,
/// within the deposit, kept through a crash of the agent; the customer's list hash and the
/// merchant's agree; neither operator's database holds what was bought.
#[test]
fn a_customer_buys_at_the_merchant_agent_and_the_operators_never_see_it() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (a, b, id_a, id_b) = two_operators(&dirs);
    // B: the merchant `kiosk` with its own key and account, in agent mode.
    let (kiosk_key, kiosk) = agent_mode_merchant(&b, "kiosk");
    let (mut agent, agent_url) = start_agent(dirs[2].path(), &b, &kiosk_key);
    // A: alice with 5.00 EUR opens a session of 1.00 EUR.
    let (alice_key, alice) = funded_customer(&a, "alice", "5.00 EUR");
    let wallet = dirs[3].path().join("wallet");
    let wallet = wallet.to_str().expect("utf-8");
    let out = ok(cli(
        &a,
        &alice_key,
        &[
            "session",
            "open",
            "--account",
            &alice,
            "--deposit",
            "1.00 EUR",
            "--merchant",
            "kiosk",
            "--operator",
            "bank-b",
            "--wait",
            "30",
            "--wallet",
            wallet,
        ],
    ));
    assert_eq!(common::field(&out, "state"), "open", "{out}");
    let session = common::field(&out, "session").to_string();
    // Opening kept A's exchange tables in the wallet (M6); fetching again works too.
    assert!(std::path::Path::new(wallet).join("fx.json").exists());
    let kept = ok(cli(&a, &alice_key, &["fx", "fetch", "--wallet", wallet]));
    assert!(
        kept.starts_with("kept 0 exchange tables of your operator"),
        "{kept}"
    );
    let buy = |price: &str, item: &str| {
        common::outcome(
            common::tally()
                .args([
                    "session", "buy", &session, "--agent", &agent_url, "--price", price, "--item",
                    item, "--wallet", wallet,
                ])
                .output()
                .expect("buy"),
        )
    };
    let first = ok(buy("0.30 EUR", "song-aurora"));
    assert!(
        first.starts_with("purchase 1: song-aurora for 0.30 EUR"),
        "{first}"
    );
    let second = ok(buy("0.30 EUR", "song-borealis"));
    assert!(
        second.contains("spent 0.60 EUR in 2 purchases, 0.40 EUR left"),
        "{second}"
    );
    // The agent dies hard; restarted on its journal it still has both purchases.
    agent.kill().expect("SIGKILL");
    agent.wait().expect("reap");
    let (mut agent, agent_url2) = start_agent(dirs[2].path(), &b, &kiosk_key);
    let buy2 = |price: &str, item: &str| {
        common::outcome(
            common::tally()
                .args([
                    "session",
                    "buy",
                    &session,
                    "--agent",
                    &agent_url2,
                    "--price",
                    price,
                    "--item",
                    item,
                    "--wallet",
                    wallet,
                ])
                .output()
                .expect("buy"),
        )
    };
    let (done, _, err) = buy2("0.50 EUR", "album-cygnus");
    assert!(!done && err.contains("deposit_exhausted"), "{err}");
    let third = ok(buy2("0.40 EUR", "song-draco"));
    assert!(
        third.contains("spent 1.00 EUR in 3 purchases, 0.00 EUR left"),
        "{third}"
    );
    // That purchase used the deposit up: the agent ended the tab and sent its record (the
    // merchant starts the clearing); nothing more is taken.
    assert!(third.contains("the deposit is used up"), "{third}");
    wait_until("the merchant's record at B", || {
        ok(cli(&b, &b.admin_key, &["session", "show", &session])).contains("state       concluding")
    });
    let (done, _, err) = buy2("0.01 EUR", "sticker");
    assert!(!done && err.contains("the merchant ended the tab"), "{err}");
    let list = common::field(&third, "list").to_string();
    assert_eq!(list.len(), 64);

    // Alice ends the session: the agent sends the merchant's record, she sends hers; they
    // agree, so B pays kiosk from what A's operator owes it and A posts what she spent.
    let close = || {
        ok(common::outcome(
            common::tally_for(&a, &alice_key)
                .args([
                    "session", "close", &session, "--wallet", wallet, "--wait", "30",
                ])
                .output()
                .expect("close"),
        ))
    };
    let closed = close();
    assert_eq!(common::field(&closed, "state"), "cleared", "{closed}");
    assert!(
        closed.contains(
            "cleared     3 purchases: 1.00 EUR to the merchant, 1.00 EUR from the customer"
        ),
        "{closed}"
    );
    assert_eq!(available(&a, &alice), 400);
    wait_until("B's side cleared", || {
        ok(cli(&b, &b.admin_key, &["session", "show", &session])).contains("state       cleared")
    });
    assert_eq!(available(&b, &kiosk), 100);
    let at_a = ok(cli(&a, &a.admin_key, &["clearing", "list"]));
    assert!(
        at_a.contains("bank-b  EUR: we owe 1.00 EUR, it owes us 0.00 EUR, net -1.00 EUR"),
        "{at_a}"
    );
    let at_b = ok(cli(&b, &b.admin_key, &["clearing", "list"]));
    assert!(
        at_b.contains("bank-a  EUR: we owe 0.00 EUR, it owes us 1.00 EUR, net 1.00 EUR"),
        "{at_b}"
    );
    let bill_a = ok(cli(&a, &a.admin_key, &["billing", "export"]));
    assert!(
        bill_a.starts_with("id,kind,session,owner,account,amount_minor,currency,peer,at\n"),
        "{bill_a}"
    );
    assert!(
        bill_a.contains(&format!(
            ",withdrawal,{session},alice,{alice},100,EUR,{id_b},"
        )),
        "{bill_a}"
    );
    let bill_b = ok(cli(&b, &b.admin_key, &["billing", "export"]));
    assert!(
        bill_b.contains(&format!(",deposit,{session},kiosk,{kiosk},100,EUR,{id_a},")),
        "{bill_b}"
    );
    // Closing again changes nothing (both sides take the same record once).
    ok(common::outcome(
        common::tally_for(&a, &alice_key)
            .args(["session", "close", &session, "--wallet", wallet])
            .output()
            .expect("close again"),
    ));
    assert_eq!(available(&a, &alice), 400);
    assert_eq!(available(&b, &kiosk), 100);
    // M4: a purchase once the deposit is used up is the first of the session's next
    // transaction (`--next`): 1.00 EUR held again in the same session, the purchase taken
    // there, its own records, clearing and billing records.
    let more = ok(common::outcome(
        common::tally_for(&a, &alice_key)
            .args([
                "session",
                "buy",
                &session,
                "--agent",
                &agent_url2,
                "--price",
                "0.25 EUR",
                "--item",
                "poster",
                "--wallet",
                wallet,
                "--next",
            ])
            .output()
            .expect("buy in the next transaction"),
    ));
    assert!(
        more.starts_with("purchase 1: poster for 0.25 EUR"),
        "{more}"
    );
    assert!(more.contains("0.75 EUR left"), "{more}");
    assert_eq!(available(&a, &alice), 300);
    let second = format!("{session}.2");
    let shown = ok(cli(
        &a,
        &alice_key,
        &["session", "show", &session, "--json"],
    ));
    assert!(
        shown.contains(&format!("\"transaction\": \"{second}\"")),
        "{shown}"
    );
    // The wallet keeps its copy of the first transaction beside the session's.
    assert!(
        std::path::Path::new(wallet)
            .join(format!("{session}.1.json"))
            .exists()
    );
    let closed = close();
    assert!(
        closed.contains(
            "cleared     1 purchases: 0.25 EUR to the merchant, 0.25 EUR from the customer"
        ),
        "{closed}"
    );
    assert_eq!(available(&a, &alice), 375);
    wait_until("B's side of the second transaction cleared", || {
        ok(cli(&b, &b.admin_key, &["session", "show", &session])).contains("state       cleared")
            && available(&b, &kiosk) == 125
    });
    let bill_a = ok(cli(&a, &a.admin_key, &["billing", "export"]));
    assert!(
        bill_a.contains(&format!(
            ",withdrawal,{second},alice,{alice},25,EUR,{id_b},"
        )),
        "{bill_a}"
    );
    // A third without `--next` is refused with the way on.
    let (done, _, err) = buy2("0.80 EUR", "print");
    assert!(!done && err.contains("tally session next"), "{err}");
    // Each transaction's receipt, signed by B, reaches A; it checks offline, against the
    // operator alice trusts and against her wallet's own copy of each transaction.
    let kept = dirs[3].path().join("receipts");
    let kept = kept.to_str().expect("utf-8");
    wait_until("both receipts at A", || {
        ok(cli(&a, &alice_key, &["session", "receipts", &session]))
            .lines()
            .count()
            == 2
    });
    let listed = ok(cli(
        &a,
        &alice_key,
        &["session", "receipts", &session, "--out", kept],
    ));
    assert!(
        listed.contains(&format!(
            "{second}: 1 purchases, 0.25 EUR to the merchant, 0.25 EUR from the customer"
        )),
        "{listed}"
    );
    for (t, purchases) in [
        (format!("{session}.1"), "3 purchases"),
        (second.clone(), "1 purchases"),
    ] {
        let file = format!("{kept}/{t}.receipt.json");
        let checked = ok(common::outcome(
            common::tally()
                .args([
                    "session",
                    "verify-receipt",
                    &file,
                    "--issuer",
                    &id_b,
                    "--wallet",
                    wallet,
                ])
                .output()
                .expect("verify"),
        ));
        assert!(checked.starts_with("valid receipt"), "{checked}");
        assert!(checked.contains(purchases), "{checked}");
        assert!(checked.contains("your wallet agrees"), "{checked}");
    }
    // Signed by another operator than the one named, or changed: refused.
    let file = format!("{kept}/{second}.receipt.json");
    let (done, _, err) = common::outcome(
        common::tally()
            .args(["session", "verify-receipt", &file, "--issuer", &id_a])
            .output()
            .expect("verify"),
    );
    assert!(
        !done && err.contains("not by the operator you named"),
        "{err}"
    );
    let text = std::fs::read_to_string(&file).expect("receipt");
    std::fs::write(
        &file,
        text.replacen("\\\"minor\\\":25", "\\\"minor\\\":26", 1),
    )
    .expect("write");
    let (done, _, err) = common::outcome(
        common::tally()
            .args(["session", "verify-receipt", &file])
            .output()
            .expect("verify"),
    );
    assert!(!done && err.contains("does not check"), "{err}");
    common::assert_audit_passes(&a);
    common::assert_audit_passes(&b);
    agent.kill().expect("SIGKILL");
    agent.wait().expect("reap");
    // Neither operator stored what was bought.
    for (server, dir) in [(&a, &dirs[0]), (&b, &dirs[1])] {
        for file in ["tally.db", "tally.db-wal"] {
            let bytes = std::fs::read(dir.path().join("data").join(file)).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            for item in [
                "song-aurora",
                "song-borealis",
                "song-draco",
                "album-cygnus",
                "poster",
            ] {
                assert!(!text.contains(item), "{item} in {file} of {}", server.url);
            }
        }
    }
    // The merchant's journal has them.
    let journal = std::fs::read(dirs[2].path().join("agent.db")).expect("agent.db");
    let wal = std::fs::read(dirs[2].path().join("agent.db-wal")).unwrap_or_default();
    let text = String::from_utf8_lossy(&journal) + String::from_utf8_lossy(&wal);
    assert!(
        text.contains("song-draco"),
        "the agent journaled the purchases"
    );
}

/// `tally bench sessions` runs end to end (complete sessions across two nodes included) and
/// prints every row with its rate.
#[test]
fn the_sessions_benchmark_prints_its_rows() {
    let out = ok(common::outcome(
        common::tally()
            .args([
                "bench",
                "sessions",
                "--purchases",
                "512",
                "--tabs",
                "8",
                "--http-purchases",
                "64",
                "--sessions",
                "4",
                "--session-clients",
                "2",
            ])
            .output()
            .expect("bench"),
    ));
    for row in [
        "merchant agent, in process",
        "merchant agent, HTTP on loopback (8 clients)",
        "SQLite batched insert of the same rows",
        "sessions of 1 purchase",
        "sessions of 10 purchases",
        "sessions of 100 purchases",
        "transfers over HTTP at the customer's node (2 clients)",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?} in:\n{out}"));
        let rate: f64 = line[row.len()..]
            .split_whitespace()
            .next()
            .expect("a rate")
            .replace(',', "")
            .parse()
            .expect("a number");
        assert!(rate > 0.0, "{line}");
    }
}

/// Either node killed hard in the middle of a session (SIGKILL) and restarted where its peer
/// knows it: what was committed before the kill goes on from there, the session opens and
/// clears, and both audits balance.
#[test]
fn a_session_survives_either_node_killed_mid_way() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (a, mut b, _, _) = two_operators(&dirs);
    let (kiosk_key, kiosk) = agent_mode_merchant(&b, "kiosk");
    let (alice_key, alice) = funded_customer(&a, "alice", "5.00 EUR");
    let wallet = dirs[3].path().join("wallet");
    let wallet = wallet.to_str().expect("utf-8");

    // B is down when alice opens: the initiation waits in A's outbox; B restarts, takes it
    // and answers.
    let b_listen = b.url.trim_start_matches("http://").to_string();
    b.kill_hard();
    let out = ok(cli(
        &a,
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
            "--wallet",
            wallet,
        ],
    ));
    let session = common::field(&out, "session").to_string();
    assert_eq!(common::field(&out, "state"), "held");
    assert_eq!(available(&a, &alice), 300);
    let b = Server::start_on(&dirs[1].path().join("data"), &b_listen, &[]);
    wait_until("the session open at A after B's restart", || {
        ok(cli(&a, &alice_key, &["session", "show", &session])).contains("state       open")
    });
    let (mut agent, agent_url) = start_agent(dirs[2].path(), &b, &kiosk_key);
    let bought = ok(common::outcome(
        common::tally()
            .args([
                "session", "buy", &session, "--agent", &agent_url, "--price", "0.70 EUR", "--item",
                "map", "--wallet", wallet,
            ])
            .output()
            .expect("buy"),
    ));
    assert!(bought.starts_with("purchase 1"), "{bought}");

    // A is killed right after alice's record commits there; restarted, it sends the record on
    // and takes B's clearing.
    let mut a = a;
    let closed = ok(common::outcome(
        common::tally_for(&a, &alice_key)
            .args(["session", "close", &session, "--wallet", wallet])
            .output()
            .expect("close"),
    ));
    assert!(
        closed.contains("state       concluding") || closed.contains("state       cleared"),
        "{closed}"
    );
    let a_listen = a.url.trim_start_matches("http://").to_string();
    a.kill_hard();
    let a = Server::start_on(&dirs[0].path().join("data"), &a_listen, &[]);
    // A may have been killed while sending the record: it is sent again once its lease
    // (15 s) runs out.
    common::wait_within(90, "the session cleared at A after its restart", || {
        ok(cli(&a, &alice_key, &["session", "show", &session])).contains("state       cleared")
    });
    wait_until("and at B", || {
        ok(cli(&b, &b.admin_key, &["session", "show", &session])).contains("state       cleared")
    });
    assert_eq!(available(&a, &alice), 430);
    assert_eq!(available(&b, &kiosk), 70);
    common::assert_audit_passes(&a);
    common::assert_audit_passes(&b);
    agent.kill().expect("SIGKILL");
    agent.wait().expect("reap");
}

/// A session ends on the merchant's word (`tally session terminate`), or by its time: the
/// agent ends the tab at the session's end and sends its record, and the customer's record
/// still clears it within the conclusion window; a session nobody concludes expires at the
/// merchant's operator when that window is over, and the customer's operator releases the
/// deposit.
/// Each billing record also goes to the operators' billing systems as a signed webhook (M8):
/// here one receiver on loopback for both operators.
#[test]
fn sessions_end_on_the_merchants_word_and_by_their_time() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (hook, hooks) = common::webhook_receiver();
    let channels = dirs[3].path().join("channels.json");
    std::fs::write(
        &channels,
        serde_json::to_vec(&serde_json::json!({
            "webhook": {"secret": "billing-secret", "http": {"allow_private_addresses": true}}
        }))
        .expect("json"),
    )
    .expect("channels");
    let channels = channels.to_str().expect("utf-8").to_string();
    let (a, b, _, _) = two_operators_with(
        &dirs,
        &[
            "--session-ack-window",
            "1",
            "--session-conclusion-window",
            "8",
            "--channels",
            &channels,
            "--billing-webhook",
            &hook,
        ],
    );
    let (kiosk_key, kiosk) = agent_mode_merchant(&b, "kiosk");
    let (mut agent, agent_url) = start_agent(dirs[2].path(), &b, &kiosk_key);
    let (alice_key, alice) = funded_customer(&a, "alice", "5.00 EUR");
    let wallet = dirs[3].path().join("wallet");
    let wallet = wallet.to_str().expect("utf-8");
    let open = |deposit: &str, lifetime: &str| {
        let out = ok(cli(
            &a,
            &alice_key,
            &[
                "session",
                "open",
                "--account",
                &alice,
                "--deposit",
                deposit,
                "--merchant",
                "kiosk",
                "--operator",
                "bank-b",
                "--lifetime",
                lifetime,
                "--wait",
                "30",
                "--wallet",
                wallet,
            ],
        ));
        assert_eq!(common::field(&out, "state"), "open", "{out}");
        common::field(&out, "session").to_string()
    };
    let buy = |session: &str, price: &str, item: &str| {
        common::outcome(
            common::tally()
                .args([
                    "session", "buy", session, "--agent", &agent_url, "--price", price, "--item",
                    item, "--wallet", wallet,
                ])
                .output()
                .expect("buy"),
        )
    };
    let close = |session: &str| {
        ok(common::outcome(
            common::tally_for(&a, &alice_key)
                .args([
                    "session", "close", session, "--wallet", wallet, "--wait", "30",
                ])
                .output()
                .expect("close"),
        ))
    };
    let at_b = |session: &str| ok(cli(&b, &b.admin_key, &["session", "show", session]));
    // Two sessions that end by their time (3 s and 2 s), one that lasts.
    let timed = open("1.00 EUR", "3");
    let idle = open("0.50 EUR", "2");
    let ended = open("1.00 EUR", "3600");
    assert_eq!(available(&a, &alice), 250);
    ok(buy(&timed, "0.20 EUR", "map-tile"));
    // `silent` (2 s): one purchase, and the customer never sends its record.
    let silent = open("0.50 EUR", "2");
    ok(buy(&silent, "0.10 EUR", "weather-report"));

    // The merchant ends `ended` after one purchase.
    ok(buy(&ended, "0.30 EUR", "song-aurora"));
    let agent_dir = dirs[2].path().to_str().expect("utf-8");
    let out = ok(common::outcome(
        common::tally()
            .args([
                "session",
                "terminate",
                &ended,
                "--agent",
                &agent_url,
                "--data",
                agent_dir,
            ])
            .output()
            .expect("terminate"),
    ));
    assert!(
        out.contains(
            "1 purchases, 0.30 EUR spent; your record is at your operator (session concluding)"
        ),
        "{out}"
    );
    // Not without the agent's token.
    let (done, _, err) = common::outcome(
        common::tally()
            .args([
                "session",
                "terminate",
                &ended,
                "--agent",
                &agent_url,
                "--data",
                dirs[3].path().to_str().expect("utf-8"),
            ])
            .output()
            .expect("terminate"),
    );
    assert!(!done && err.contains("agent.token"), "{err}");
    let (done, _, err) = buy(&ended, "0.10 EUR", "song-borealis");
    assert!(!done && err.contains("the merchant ended the tab"), "{err}");
    let closed = close(&ended);
    assert_eq!(common::field(&closed, "state"), "cleared", "{closed}");
    // The merchant's word ended the session, not only its transaction: a purchase with
    // `--next` starts the next transaction, which the merchant's operator refuses (`ended`),
    // and Alice's operator voids that hold at once.
    let (done, _, err) = common::outcome(
        common::tally_for(&a, &alice_key)
            .args([
                "session",
                "buy",
                &ended,
                "--agent",
                &agent_url,
                "--price",
                "0.10 EUR",
                "--item",
                "song-borealis",
                "--next",
                "--wallet",
                wallet,
            ])
            .output()
            .expect("buy --next"),
    );
    assert!(
        !done && err.contains("the merchant ended the session; open a new one"),
        "{err}"
    );
    let shown = ok(cli(&a, &alice_key, &["session", "show", &ended]));
    assert!(
        shown.contains("state       aborted") && shown.contains("refused     ended"),
        "{shown}"
    );

    // `timed` is over: the agent ended its tab and sent its record by itself; a purchase now
    // is refused; Alice's record, within the conclusion window, clears it.
    wait_until("the agent's record of the timed session at B", || {
        at_b(&timed).contains("state       concluding")
    });
    let (done, _, err) = buy(&timed, "0.10 EUR", "another-tile");
    assert!(!done && err.contains("the merchant ended the tab"), "{err}");
    let closed = close(&timed);
    assert_eq!(common::field(&closed, "state"), "cleared", "{closed}");

    // `idle` was never used: when the conclusion window is over B expires it and A releases
    // its deposit.
    wait_until("the idle session expired at A", || {
        ok(cli(&a, &alice_key, &["session", "show", &idle])).contains("state       expired")
    });
    assert!(at_b(&idle).contains("state       expired"));
    // `silent`: at the deadline B has the merchant's record alone, claiming 0.10: disputed,
    // nothing paid, the deposit held at A. B's operator settles it at 0.05 (only the
    // operator): A still holds the deposit, so it posts 0.05, releases the rest and says so;
    // then B pays the merchant.
    wait_until("the silent session disputed at A", || {
        ok(cli(&a, &alice_key, &["session", "show", &silent])).contains("state       disputed")
    });
    assert!(at_b(&silent).contains("state       disputed"));
    assert_eq!(available(&a, &alice), 500 - 30 - 20 - 50);
    let resolve = ["clearing", "resolve", silent.as_str(), "--pay", "0.05 EUR"];
    let (done, _, err) = cli(&b, &kiosk_key, &resolve);
    assert!(!done && err.contains("forbidden"), "{err}");
    let settled = ok(cli(&b, &b.admin_key, &resolve));
    assert!(
        settled.contains(&format!(
            "session {silent} clearing: the merchant is paid 0.05 EUR once"
        )),
        "{settled}"
    );
    wait_until("the silent session settled at B", || {
        at_b(&silent).contains("state       cleared")
    });
    assert!(ok(cli(&a, &alice_key, &["session", "show", &silent])).contains("state       cleared"));
    assert_eq!(available(&a, &alice), 500 - 30 - 20 - 5);
    assert_eq!(available(&b, &kiosk), 55);
    // The billing systems heard of the three cleared sessions from both operators, each
    // record once, signed.
    wait_until("six billing webhooks", || {
        hooks.lock().expect("lock").len() >= 6
    });
    let got = hooks.lock().expect("lock").clone();
    let mut seen: Vec<(String, String, i64)> = Vec::new();
    for (signature, body) in &got {
        tally_channels::webhook::verify_webhook_signature(
            b"billing-secret",
            signature,
            body.as_bytes(),
            tally_kernel::Timestamp::now().as_micros() / 1_000_000,
            300,
        )
        .expect("signed with the billing secret");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        let d = &v["data"];
        seen.push((
            d["kind"].as_str().expect("kind").to_string(),
            d["session"].as_str().expect("session").to_string(),
            d["amount_minor"].as_i64().expect("amount"),
        ));
    }
    seen.sort();
    seen.dedup();
    let mut want = vec![
        ("deposit".to_string(), ended.clone(), 30),
        ("deposit".to_string(), timed.clone(), 20),
        ("deposit".to_string(), silent.clone(), 5),
        ("withdrawal".to_string(), ended.clone(), 30),
        ("withdrawal".to_string(), timed.clone(), 20),
        ("withdrawal".to_string(), silent.clone(), 5),
    ];
    want.sort();
    assert_eq!(seen, want);
    common::assert_audit_passes(&a);
    common::assert_audit_passes(&b);
    agent.kill().expect("SIGKILL");
    agent.wait().expect("reap");
}

/// A loopback proxy in front of the merchant's agent that damages the first `damage`
/// deliveries it carries (one hex digit of the sealed product changed): a transfer error on
/// the way, as the customer's check must catch.
fn damaging_proxy(target: &str, damage: usize) -> String {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    fn read_request(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).ok()?;
        buf.extend(body);
        Some(buf)
    }
    fn with_close(message: &[u8]) -> Vec<u8> {
        let end = message
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a start line");
        [
            &message[..end + 2],
            b"connection: close\r\n",
            &message[end + 2..],
        ]
        .concat()
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let target = target.trim_start_matches("http://").to_string();
    let left = Arc::new(AtomicUsize::new(damage));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            let (target, left) = (target.clone(), left.clone());
            std::thread::spawn(move || {
                let Some(request) = read_request(&mut client) else {
                    return;
                };
                let mut upstream = std::net::TcpStream::connect(&target).expect("the agent");
                upstream.write_all(&with_close(&request)).expect("forward");
                let mut response = Vec::new();
                let _ = upstream.read_to_end(&mut response);
                let marker = b"\"sealed_hex\":\"";
                if let Some(i) = response.windows(marker.len()).position(|w| w == marker)
                    && left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    let at = i + marker.len() + 60;
                    response[at] = if response[at] == b'0' { b'1' } else { b'0' };
                }
                let _ = client.write_all(&with_close(&response));
            });
        }
    });
    format!("http://{addr}")
}

/// Acceptance delivery (M9) through the binary: products offered signed by the merchant's
/// agent arrive sealed, are paid on the customer's tab only when accepted, and unlock with K2
/// released under K1 (which went through both operators). A damaged delivery is rejected and
/// sent again; damaged twice, the order is aborted and nothing is paid. A product that is not
/// what its signed description says is settled by the arbiter with K2 from the escrow at the
/// merchant's operator. The session then clears the accepted orders like any purchases.
#[test]
fn products_are_delivered_with_acceptance_resent_once_and_disputed() {
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (a, b, _, _) = two_operators(&dirs);
    let (kiosk_key, kiosk) = agent_mode_merchant(&b, "kiosk");
    let shop = dirs[4].path();
    std::fs::write(shop.join("1984.txt"), b"It was a bright cold day in April.").expect("w");
    std::fs::write(shop.join("album.txt"), b"Track 1. Track 2. Track 3.").expect("w");
    std::fs::write(shop.join("map.txt"), b"A map of the old town.").expect("w");
    std::fs::write(
        shop.join("catalogue.json"),
        serde_json::to_vec(&serde_json::json!([
            {"product": "ebook-1984", "file": "1984.txt", "price": "2.50 EUR", "description": "George Orwell, 1984, chapter 1"},
            {"product": "album", "file": "album.txt", "price": "1.00 EUR", "description": "Three tracks"},
            {"product": "map", "file": "map.txt", "price": "0.50 EUR", "description": "A map of the old town"},
        ]))
        .expect("json"),
    )
    .expect("catalogue");
    // The agent with its catalogue.
    let catalogue = shop.join("catalogue.json");
    let (mut agent, agent_url) = common::start_agent_with(
        dirs[2].path(),
        &b,
        &kiosk_key,
        &["--catalogue", catalogue.to_str().expect("utf-8")],
    );
    let (alice_key, alice) = funded_customer(&a, "alice", "10.00 EUR");
    let wallet = dirs[3].path().join("wallet");
    let wallet = wallet.to_str().expect("utf-8");
    let out = ok(cli(
        &a,
        &alice_key,
        &[
            "session",
            "open",
            "--account",
            &alice,
            "--deposit",
            "5.00 EUR",
            "--merchant",
            "kiosk",
            "--operator",
            "bank-b",
            "--wait",
            "30",
            "--wallet",
            wallet,
        ],
    ));
    let session = common::field(&out, "session").to_string();
    let order = |product: &str, via: &str, out: &std::path::Path| {
        common::outcome(
            common::tally_for(&a, &alice_key)
                .args([
                    "session",
                    "order",
                    &session,
                    "--product",
                    product,
                    "--agent",
                    via,
                    "--wallet",
                    wallet,
                    "--out",
                ])
                .arg(out)
                .output()
                .expect("order"),
        )
    };
    // Accepted: booked on the tab, unlocked, the bytes the offer described.
    let got = dirs[3].path().join("1984.txt");
    let (done, stdout, stderr) = order("ebook-1984", &agent_url, &got);
    assert!(done, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("offer: ebook-1984 for 2.50 EUR: George Orwell, 1984, chapter 1"),
        "{stdout}"
    );
    assert!(stdout.contains("spent 2.50 EUR in 1 purchases"), "{stdout}");
    assert!(
        stdout.contains("accepted: ebook-1984 (34 bytes)"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(&got).expect("product"),
        b"It was a bright cold day in April."
    );
    // Damaged on the way once: rejected, sent again (under a new K2), accepted.
    let got = dirs[3].path().join("album.txt");
    let (done, stdout, stderr) = order("album", &damaging_proxy(&agent_url, 1), &got);
    assert!(done, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "the delivery failed its check (the product arrived damaged): asking for it again"
        ),
        "{stderr}"
    );
    assert!(stdout.contains("spent 3.50 EUR in 2 purchases"), "{stdout}");
    assert_eq!(
        std::fs::read(&got).expect("product"),
        b"Track 1. Track 2. Track 3."
    );
    // Damaged twice: aborted, nothing paid.
    let (done, _, stderr) = order("map", &damaging_proxy(&agent_url, 2), &got);
    assert!(
        !done && stderr.contains("the order is aborted, nothing was paid"),
        "{stderr}"
    );
    // The merchant changed the map after describing it: the customer's check after
    // unlocking finds it, and the arbiter, with K2 from B's escrow, agrees.
    std::fs::write(shop.join("map.txt"), b"A map of another town.").expect("w");
    let got = dirs[3].path().join("map.txt");
    let (done, stdout, stderr) = order("map", &agent_url, &got);
    assert!(!done, "{stdout}\n{stderr}");
    assert!(stdout.contains("spent 4.00 EUR in 3 purchases"), "{stdout}");
    assert!(
        stderr.contains("does not match the merchant's description"),
        "{stderr}"
    );
    let evidence = stderr
        .split("evidence kept in ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .expect("the evidence file")
        .to_string();
    let verdict = ok(cli(&b, &b.admin_key, &["session", "arbitrate", &evidence]));
    assert!(
        verdict.contains("verdict: the product does not match the merchant's signed description"),
        "{verdict}"
    );
    // Only the operator hands out K2.
    let (done, _, err) = cli(&b, &kiosk_key, &["session", "arbitrate", &evidence]);
    assert!(!done && err.contains("forbidden"), "{err}");
    // The orders are purchases on the tab: the session clears what was accepted.
    let closed = ok(common::outcome(
        common::tally_for(&a, &alice_key)
            .args([
                "session", "close", &session, "--wallet", wallet, "--wait", "30",
            ])
            .output()
            .expect("close"),
    ));
    assert!(
        closed.contains("3 purchases: 4.00 EUR to the merchant, 4.00 EUR from the customer"),
        "{closed}"
    );
    assert_eq!(available(&a, &alice), 600);
    wait_until("B's side cleared", || {
        ok(cli(&b, &b.admin_key, &["session", "show", &session])).contains("state       cleared")
    });
    assert_eq!(available(&b, &kiosk), 400);
    common::assert_audit_passes(&a);
    common::assert_audit_passes(&b);
    agent.kill().expect("SIGKILL");
    agent.wait().expect("reap");
}

/// Two currencies through the binary (M6): a customer paying in EUR at A, a merchant paid in
/// USD at B. B converts the deposit at its own table; the customer's client shows each USD
/// price in EUR at A's table (kept when the session opened); at the close B pays the merchant
/// in USD and A posts the EUR total converted back, rounded up; each operator's report and
/// billing export is in its own currency.
#[test]
fn a_session_in_two_currencies_shows_and_clears_each_side_in_its_own() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (a, b, _, _) = two_operators(&dirs);
    for op in [&a, &b] {
        ok(cli(
            op,
            &op.admin_key,
            &[
                "fx",
                "publish",
                "EUR",
                "USD",
                "1.0842",
                "--valid-for",
                "3600",
            ],
        ));
    }
    let kiosk_key = common::field(
        &ok(cli(
            &b,
            &b.admin_key,
            &[
                "api-key", "create", "--role", "merchant", "--owner", "kiosk",
            ],
        )),
        "key",
    )
    .to_string();
    let kiosk = common::field(
        &ok(cli(
            &b,
            &b.admin_key,
            &[
                "account",
                "open",
                "--currency",
                "USD",
                "--kind",
                "merchant",
                "--owner",
                "kiosk",
            ],
        )),
        "account",
    )
    .to_string();
    ok(cli(
        &b,
        &kiosk_key,
        &[
            "session",
            "merchant",
            "kiosk",
            "--account",
            &kiosk,
            "--auto-ack",
        ],
    ));
    let (mut agent, agent_url) = start_agent(dirs[2].path(), &b, &kiosk_key);
    let (alice_key, alice) = funded_customer(&a, "alice", "20.00 EUR");
    let wallet = dirs[3].path().join("wallet");
    let wallet = wallet.to_str().expect("utf-8");
    let out = ok(cli(
        &a,
        &alice_key,
        &[
            "session",
            "open",
            "--account",
            &alice,
            "--deposit",
            "10.00 EUR",
            "--merchant",
            "kiosk",
            "--operator",
            "bank-b",
            "--wait",
            "30",
            "--wallet",
            wallet,
        ],
    ));
    assert_eq!(common::field(&out, "state"), "open", "{out}");
    let session = common::field(&out, "session").to_string();
    let bought = ok(common::outcome(
        common::tally()
            .args([
                "session", "buy", &session, "--agent", &agent_url, "--price", "2.50 USD", "--item",
                "map-tile", "--wallet", wallet,
            ])
            .output()
            .expect("buy"),
    ));
    // 2.50 USD at 1.0842 is 2.3058… EUR, shown rounded up.
    assert!(
        bought.contains("in EUR: about 2.31 EUR at your operator's table EUR→USD 1.0842"),
        "{bought}"
    );
    assert!(
        bought.contains("spent 2.50 USD in 1 purchases, 8.34 USD left"),
        "{bought}"
    );
    let closed = ok(common::outcome(
        common::tally_for(&a, &alice_key)
            .args([
                "session", "close", &session, "--wallet", wallet, "--wait", "30",
            ])
            .output()
            .expect("close"),
    ));
    assert!(
        closed.contains("1 purchases: 2.50 USD to the merchant, 2.31 EUR from the customer"),
        "{closed}"
    );
    assert_eq!(available(&a, &alice), 2000 - 231);
    wait_until("B's side cleared", || {
        ok(cli(&b, &b.admin_key, &["session", "show", &session])).contains("state       cleared")
    });
    assert_eq!(available(&b, &kiosk), 250);
    let at_a = ok(cli(&a, &a.admin_key, &["clearing", "list"]));
    assert!(at_a.contains("bank-b  EUR: we owe 2.31 EUR"), "{at_a}");
    let at_b = ok(cli(&b, &b.admin_key, &["clearing", "list"]));
    assert!(
        at_b.contains("bank-a  USD: we owe 0.00 USD, it owes us 2.50 USD"),
        "{at_b}"
    );
    assert!(ok(cli(&a, &a.admin_key, &["billing", "export"])).contains(",withdrawal,"));
    assert!(ok(cli(&b, &b.admin_key, &["billing", "export"])).contains(",250,USD,"));
    common::assert_audit_passes(&a);
    common::assert_audit_passes(&b);
    agent.kill().expect("SIGKILL");
    agent.wait().expect("reap");
}
