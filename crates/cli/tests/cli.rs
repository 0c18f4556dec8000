//! The `tally` binary end to end: a node on loopback, driven by the CLI as a person would.

mod common;

use common::{
    Server, assert_audit_passes, cli, field, ok, open_account, outcome, tally, transfer, wait_until,
};
use std::time::Duration;

#[test]
fn a_customer_pays_a_merchant_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("node"), &["--dev"]);
    let admin = server.admin_key.clone();

    // The operator makes keys for a customer and a merchant.
    let out = ok(cli(
        &server,
        &admin,
        &[
            "api-key", "create", "--role", "customer", "--owner", "alice",
        ],
    ));
    let alice_key = field(&out, "key").to_string();
    assert!(alice_key.starts_with("tally_customer_"), "{out}");
    let out = ok(cli(
        &server,
        &admin,
        &["api-key", "create", "--role", "merchant", "--owner", "shop"],
    ));
    let shop_key = field(&out, "key").to_string();

    // Accounts: the customer's and the merchant's own, and the operator's settlement account.
    let alice = open_account(&server, &alice_key, &[]);
    let shop = field(
        &ok(cli(
            &server,
            &shop_key,
            &["account", "open", "--currency", "eur"],
        )),
        "account",
    )
    .to_string();
    let world = open_account(&server, &admin, &["--kind", "settlement", "--unbounded"]);

    // Fund Alice; a retry with the same key moves nothing twice.
    let fund = [
        "transfer",
        "--from",
        &world,
        "--to",
        &alice,
        "--amount",
        "50.00 EUR",
        "--idempotency-key",
        "fund-1",
    ];
    let first = ok(cli(&server, &admin, &fund));
    let (_, again, again_err) = cli(&server, &admin, &fund);
    assert_eq!(field(&first, "transfer"), field(&again, "transfer"));
    assert!(again_err.contains("used before"), "{again_err}");
    let shown = ok(cli(&server, &alice_key, &["account", "show", &alice]));
    assert_eq!(field(&shown, "balance"), "50.00 EUR");

    // Alice authorises a hold; the shop captures part of it; the rest is released.
    let hold = ok(cli(
        &server,
        &alice_key,
        &[
            "hold",
            "--from",
            &alice,
            "--to",
            &shop,
            "--amount",
            "20.00 EUR",
            "--timeout",
            "1h",
        ],
    ));
    assert_eq!(field(&hold, "state"), "pending");
    let hold_id = field(&hold, "transfer").to_string();
    let shown = ok(cli(&server, &alice_key, &["account", "show", &alice]));
    assert_eq!(
        field(&shown, "available"),
        "30.00 EUR",
        "the hold reserves 20.00 EUR"
    );
    let (denied, _, err) = cli(&server, &alice_key, &["post", &hold_id]);
    assert!(
        !denied && err.contains("forbidden"),
        "only the beneficiary captures: {err}"
    );
    let post = ok(cli(
        &server,
        &shop_key,
        &["post", &hold_id, "--amount", "12.50 EUR"],
    ));
    assert_eq!(field(&post, "amount"), "12.50 EUR");
    // An amount in another currency is refused, never reinterpreted in the hold's currency
    // (here the hold is already posted, so the currency check must come first).
    let (wrong, _, err) = cli(
        &server,
        &shop_key,
        &["post", &hold_id, "--amount", "1.00 USD"],
    );
    assert!(!wrong && err.contains("currency_mismatch"), "{err}");
    let (again, _, err) = cli(&server, &shop_key, &["void", &hold_id]);
    assert!(!again && err.contains("pending_not_pending"), "{err}");
    assert_eq!(
        field(
            &ok(cli(&server, &alice_key, &["account", "show", &alice])),
            "balance"
        ),
        "37.50 EUR"
    );
    assert_eq!(
        field(
            &ok(cli(&server, &shop_key, &["account", "show", &shop])),
            "balance"
        ),
        "12.50 EUR"
    );

    // Bad input gets a typed error and changes nothing.
    let (failed, _, err) = cli(
        &server,
        &alice_key,
        &[
            "transfer",
            "--from",
            &alice,
            "--to",
            &shop,
            "--amount",
            "100.00 EUR",
        ],
    );
    assert!(!failed && err.contains("422 insufficient_funds"), "{err}");
    let (failed, _, err) = cli(
        &server,
        &alice_key,
        &[
            "transfer", "--from", &shop, "--to", &alice, "--amount", "1.00 EUR",
        ],
    );
    assert!(!failed && err.contains("forbidden"), "{err}");
    let (failed, _, err) = cli(
        &server,
        &alice_key,
        &[
            "transfer",
            "--from",
            &alice,
            "--to",
            &shop,
            "--amount",
            "1.005 EUR",
        ],
    );
    assert!(!failed && err.contains("decimal places"), "{err}");
    let (failed, _, err) = cli(
        &server,
        "tally_customer_wrong",
        &["account", "show", &alice],
    );
    assert!(!failed && err.contains("401"), "{err}");
    assert_eq!(
        field(
            &ok(cli(&server, &alice_key, &["account", "show", &alice])),
            "balance"
        ),
        "37.50 EUR"
    );

    // A notification written with the transfer reaches the dev inbox.
    transfer(
        &server,
        &alice_key,
        &alice,
        &shop,
        "1.00 EUR",
        &["--notify", "dev:shop-desk"],
    );
    wait_until("the dev inbox to receive the notification", || {
        cli(&server, &admin, &["inbox", "shop-desk"])
            .1
            .contains("Transfer of 1.00 EUR")
    });

    // The history and the audit (on the live node's files) agree.
    let history = ok(cli(&server, &alice_key, &["account", "history", &alice]));
    assert_eq!(
        history.lines().count(),
        4,
        "fund, hold, its post, the 1.00 transfer: {history}"
    );
    assert_audit_passes(&server);
}

#[test]
fn serves_https_with_a_certificate_from_the_node_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("node"), &["--tls"]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let ca = server.data.join("ca.pem");
    let out = tally()
        .args(["account", "open", "--currency", "EUR", "--ca-cert"])
        .arg(&ca)
        .env("TALLY_SERVER", &server.url)
        .env("TALLY_API_KEY", &server.admin_key)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without trusting the node CA the connection is refused.
    let (failed, _, err) = cli(&server, &server.admin_key, &["account", "list"]);
    assert!(!failed && err.contains("cannot reach"), "{err}");
}

#[test]
fn a_transfer_notification_goes_out_over_real_smtp() {
    let (port, inbox) = tally_testkit::smtp_sink();
    let dir = tempfile::tempdir().expect("tempdir");
    let channels = dir.path().join("channels.json");
    std::fs::write(
        &channels,
        format!(r#"{{"smtp": {{"host": "127.0.0.1", "port": {port}, "tls": "none", "from": "Tally <noreply@node.test>"}}}}"#),
    )
    .expect("write config");
    let channels = channels.display().to_string();
    let server = Server::start(&dir.path().join("node"), &["--channels", &channels]);
    let admin = server.admin_key.clone();
    let world = open_account(&server, &admin, &["--kind", "settlement", "--unbounded"]);
    let bob = open_account(&server, &admin, &["--kind", "customer", "--owner", "bob"]);
    transfer(
        &server,
        &admin,
        &world,
        &bob,
        "7.25 EUR",
        &["--memo", "refund", "--notify", "email:bob@example.test"],
    );
    let mail = inbox
        .recv_timeout(Duration::from_secs(30))
        .expect("the notification arrives over SMTP");
    assert!(mail.contains("Subject: Transfer of 7.25 EUR"), "{mail}");
    assert!(mail.contains("bob@example.test"), "{mail}");
    assert!(mail.contains("Memo: refund"), "{mail}");
}

#[test]
fn the_operator_cannot_lock_itself_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let admin = server.admin_key.clone();
    let keys = ok(cli(&server, &admin, &["api-key", "list"]));
    let id = keys
        .lines()
        .find(|l| l.contains("admin"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the admin key's id")
        .to_string();
    let (revoked, _, err) = cli(&server, &admin, &["api-key", "revoke", &id]);
    assert!(!revoked, "the last admin key was revoked");
    assert!(err.contains("last_admin_key"), "{err}");
    // Offline, on the node's machine, a new admin key is made in the database directly; with
    // it, the old one can go.
    let made = ok(outcome(
        tally()
            .args([
                "api-key", "create", "--role", "admin", "--owner", "operator", "--data",
            ])
            .arg(&data)
            .env_remove("TALLY_API_KEY")
            .output()
            .expect("run"),
    ));
    let new_key = field(&made, "key").to_string();
    assert!(new_key.starts_with("tally_admin_"), "{made}");
    ok(cli(&server, &new_key, &["api-key", "revoke", &id]));
    let (old_works, _, _) = cli(&server, &admin, &["api-key", "list"]);
    assert!(!old_works, "the revoked key still works");
    // Not a data directory: said plainly.
    let (made, _, err) = outcome(
        tally()
            .args([
                "api-key", "create", "--role", "admin", "--owner", "operator", "--data",
            ])
            .arg(dir.path().join("nothing"))
            .output()
            .expect("run"),
    );
    assert!(
        !made && err.contains("not a node's data directory"),
        "{err}"
    );
}

#[test]
fn money_reads_as_money_and_a_closed_pipe_is_no_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("node"), &[]);
    let admin = server.admin_key.clone();
    let world = open_account(&server, &admin, &["--kind", "settlement", "--unbounded"]);
    let alice = open_account(&server, &admin, &["--kind", "customer", "--owner", "alice"]);
    let bob = open_account(&server, &admin, &["--kind", "customer", "--owner", "bob"]);
    transfer(&server, &admin, &world, &alice, "20.00 EUR", &[]);
    let shown = ok(cli(&server, &admin, &["account", "show", &alice]));
    assert_eq!(field(&shown, "available"), "20.00 EUR", "{shown}");
    assert!(!shown.contains("minor units"), "{shown}");
    let (paid, _, err) = cli(
        &server,
        &admin,
        &[
            "transfer",
            "--from",
            &alice,
            "--to",
            &bob,
            "--amount",
            "30.00 EUR",
        ],
    );
    assert!(!paid);
    assert!(
        err.contains("needs 30.00 EUR, available 20.00 EUR"),
        "the refusal in money: {err}"
    );
    // `tally … | head` that closed the pipe before the answer: no panic, the status a tool
    // killed by SIGPIPE reports.
    let mut child = common::tally_for(&server, &admin)
        .args(["api-key", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

/// `tally transfer --batch FILE.jsonl` through the real binary: a file larger than one batch
/// is sent in two, a linked chain across the 8,189-event boundary is kept whole (it moves its
/// money once, together), refused events are listed with their lines and make the exit status
/// fail, and running the file again moves nothing twice.
#[test]
fn the_operator_sends_a_file_of_transfer_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("node"), &[]);
    let admin = server.admin_key.clone();
    let world = open_account(&server, &admin, &["--kind", "settlement", "--unbounded"]);
    let alice = open_account(&server, &admin, &["--owner", "alice", "--kind", "customer"]);
    let bob = open_account(&server, &admin, &["--owner", "bob", "--kind", "customer"]);
    let event = |n: usize, from: &str, to: &str, amount: i64, linked: bool| {
        let mut e = serde_json::json!({
            "id": format!("00000000-0000-4000-8000-{n:012}"),
            "debit_account": from, "credit_account": to,
            "amount_minor": amount, "currency": "EUR",
        });
        if linked {
            e["flags"] = serde_json::json!({"linked": true});
        }
        e.to_string()
    };
    // 8,186 cents to alice, then a chain of four (events 8,187–8,190) that straddles the
    // 8,189-event limit, then alice's one refused transfer (she holds 8,186 + 4).
    let mut lines: Vec<String> = (1..=8_186)
        .map(|n| event(n, &world, &alice, 1, false))
        .collect();
    for n in 8_187..=8_190 {
        lines.push(event(n, &world, &alice, 1, n < 8_190));
    }
    lines.push(String::new()); // blank lines are skipped
    lines.push(event(8_191, &alice, &bob, 1_000_000, false));
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("write");
    let path = file.to_str().expect("path");

    let (success, out, err) = cli(&server, &admin, &["transfer", "--batch", path]);
    assert!(!success, "a refused event fails the run: {out} {err}");
    assert!(
        out.contains("line 8192: 00000000-0000-4000-8000-000000008191: exceeds_credits"),
        "{out}"
    );
    assert!(
        out.contains("8191 events: 8190 created, 1 exceeds_credits"),
        "{out}"
    );
    let shown = ok(cli(&server, &admin, &["account", "show", &alice]));
    assert_eq!(field(&shown, "balance"), "81.90 EUR", "{shown}");

    // Again: nothing moves. Every single event exists; the chain answers `exists` for its
    // first event, which (TigerBeetle's rule) fails the rest of the chain: it is in the ledger
    // once, from the first run.
    let (_, out, _) = cli(&server, &admin, &["transfer", "--batch", path]);
    assert!(
        out.contains("8191 events: 1 exceeds_credits, 8187 exists, 3 linked_event_failed"),
        "{out}"
    );
    let shown = ok(cli(&server, &admin, &["account", "show", &alice]));
    assert_eq!(field(&shown, "balance"), "81.90 EUR", "{shown}");

    // A malformed line sends nothing; a customer may not send batches.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{{\"id\": \"x\"}}\n",
            event(9_000, &world, &bob, 5, false)
        ),
    )
    .expect("write");
    let (success, _, err) = cli(
        &server,
        &admin,
        &["transfer", "--batch", bad.to_str().expect("path")],
    );
    assert!(!success && err.contains("line 2"), "{err}");
    let shown = ok(cli(&server, &admin, &["account", "show", &bob]));
    assert_eq!(field(&shown, "balance"), "0.00 EUR", "{shown}");
    let out = ok(cli(
        &server,
        &admin,
        &[
            "api-key", "create", "--role", "customer", "--owner", "alice",
        ],
    ));
    let alice_key = field(&out, "key").to_string();
    let (success, _, err) = cli(&server, &alice_key, &["transfer", "--batch", path]);
    assert!(!success && err.contains("operator only"), "{err}");
    assert_audit_passes(&server);
}

/// `tally transfers` finds transfers by account, side and code a page at a time (the printed
/// `next:` continues), and `tally account balances` shows an account opened with `--history`
/// after each transfer.
#[test]
fn transfers_are_found_and_history_is_shown_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("node"), &[]);
    let admin = server.admin_key.clone();
    let world = open_account(&server, &admin, &["--kind", "settlement", "--unbounded"]);
    let kept = open_account(&server, &admin, &["--owner", "kim", "--history"]);
    let lines: Vec<String> = (1..=3)
        .map(|n: u32| {
            serde_json::json!({"id": format!("00000000-0000-4000-8000-{n:012}"),
                "debit_account": world, "credit_account": kept, "amount_minor": n * 100,
                "currency": "EUR", "code": n})
            .to_string()
        })
        .collect();
    let file = dir.path().join("three.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("write");
    ok(cli(
        &server,
        &admin,
        &["transfer", "--batch", file.to_str().expect("path")],
    ));

    let page = ok(cli(
        &server,
        &admin,
        &[
            "transfers",
            "--account",
            &kept,
            "--side",
            "credit",
            "--limit",
            "2",
        ],
    ));
    assert_eq!(
        page.lines().filter(|l| l.contains("single")).count(),
        2,
        "{page}"
    );
    let next = field(&page, "next:").to_string();
    let rest = ok(cli(
        &server,
        &admin,
        &[
            "transfers",
            "--account",
            &kept,
            "--limit",
            "2",
            "--after",
            &next,
        ],
    ));
    assert!(
        rest.contains("00000000-0000-4000-8000-000000000003") && !rest.contains("next:"),
        "{rest}"
    );
    let coded = ok(cli(
        &server,
        &admin,
        &["transfers", "--code", "2", "--json"],
    ));
    let coded: serde_json::Value = serde_json::from_str(&coded).expect("json");
    assert_eq!(
        coded["transfers"][0]["id"],
        "00000000-0000-4000-8000-000000000002"
    );
    assert_eq!(coded["transfers"].as_array().map(Vec::len), Some(1));

    let balances = ok(cli(&server, &admin, &["account", "balances", &kept]));
    let shown: Vec<&str> = balances
        .lines()
        .filter_map(|l| l.split("balance").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(shown, ["100", "300", "600"], "{balances}");
}
