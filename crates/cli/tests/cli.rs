//! The `tally` binary end to end: a node on loopback, driven by the CLI as a person would.

mod common;

use common::{Server, cli, tally, wait_until};
use std::io;
use std::net::{IpAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
        .unwrap_or_else(|| panic!("no `{name}` in:\n{out}"))
}

fn ok(r: (bool, String, String)) -> String {
    assert!(r.0, "command failed:\nstdout: {}\nstderr: {}", r.1, r.2);
    r.1
}

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
    let alice = field(
        &ok(cli(
            &server,
            &alice_key,
            &["account", "open", "--currency", "EUR"],
        )),
        "account",
    )
    .to_string();
    let shop = field(
        &ok(cli(
            &server,
            &shop_key,
            &["account", "open", "--currency", "eur"],
        )),
        "account",
    )
    .to_string();
    let world = field(
        &ok(cli(
            &server,
            &admin,
            &[
                "account",
                "open",
                "--currency",
                "EUR",
                "--kind",
                "settlement",
                "--unbounded",
            ],
        )),
        "account",
    )
    .to_string();

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
        "3000 minor units",
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
    ok(cli(
        &server,
        &alice_key,
        &[
            "transfer",
            "--from",
            &alice,
            "--to",
            &shop,
            "--amount",
            "1.00 EUR",
            "--notify",
            "dev:shop-desk",
        ],
    ));
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
    let audit = tally()
        .args(["ledger", "audit", "--data"])
        .arg(&server.data)
        .output()
        .expect("audit");
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success() && text.contains("audit passed"),
        "{text}"
    );
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

/// A real SMTP server on loopback (mailin-embedded) that hands each message to the test.
fn smtp_sink() -> (u16, mpsc::Receiver<String>) {
    #[derive(Clone)]
    struct Sink(mpsc::Sender<String>, Vec<u8>);
    impl mailin_embedded::Handler for Sink {
        fn helo(&mut self, _ip: IpAddr, _domain: &str) -> mailin_embedded::Response {
            mailin_embedded::response::OK
        }
        fn data(&mut self, buf: &[u8]) -> io::Result<()> {
            self.1.extend_from_slice(buf);
            Ok(())
        }
        fn data_end(&mut self) -> mailin_embedded::Response {
            let _ = self
                .0
                .send(String::from_utf8_lossy(&std::mem::take(&mut self.1)).into_owned());
            mailin_embedded::response::OK
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    let mut server = mailin_embedded::Server::new(Sink(tx, Vec::new()));
    server.with_name("sink.test").with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve().map_err(|e| e.to_string());
    });
    (port, rx)
}

#[test]
fn a_transfer_notification_goes_out_over_real_smtp() {
    let (port, inbox) = smtp_sink();
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
    let open = |extra: &[&str]| {
        let mut args = vec!["account", "open", "--currency", "EUR"];
        args.extend_from_slice(extra);
        field(&ok(cli(&server, &admin, &args)), "account").to_string()
    };
    let world = open(&["--kind", "settlement", "--unbounded"]);
    let bob = open(&["--kind", "customer", "--owner", "bob"]);
    ok(cli(
        &server,
        &admin,
        &[
            "transfer",
            "--from",
            &world,
            "--to",
            &bob,
            "--amount",
            "7.25 EUR",
            "--memo",
            "refund",
            "--notify",
            "email:bob@example.test",
        ],
    ));
    let mail = inbox
        .recv_timeout(Duration::from_secs(30))
        .expect("the notification arrives over SMTP");
    assert!(mail.contains("Subject: Transfer of 7.25 EUR"), "{mail}");
    assert!(mail.contains("bob@example.test"), "{mail}");
    assert!(mail.contains("Memo: refund"), "{mail}");
}
