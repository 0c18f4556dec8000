//! Out-of-band authentication end to end: a node on loopback in dev mode, driven only by the
//! `tally` binary, with codes read from the dev inbox as a person would read their phone.

mod common;

use common::{
    Server, assert_audit_passes, cli, code_for, field, ok, open_account, outcome, tally_for,
    transfer,
};
use std::io::Write;
use std::process::Stdio;

/// `tally auth confirm SESSION` with the code typed on stdin, as at the prompt.
fn confirm_typed(server: &Server, key: &str, session: &str, code: &str) -> (bool, String, String) {
    let mut child = tally_for(server, key)
        .args(["auth", "confirm", session])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tally");
    writeln!(child.stdin.take().expect("stdin"), "{code}").expect("type the code");
    outcome(child.wait_with_output().expect("wait"))
}

/// Alice's customer key, and accounts for Alice (funded with 100.00 EUR from the operator's
/// settlement account) and Bob: (key, alice's account, bob's account).
fn alice_and_bob(server: &Server) -> (String, String, String) {
    let admin = server.admin_key.clone();
    let alice_key = field(
        &ok(cli(
            server,
            &admin,
            &[
                "api-key", "create", "--role", "customer", "--owner", "alice",
            ],
        )),
        "key",
    )
    .to_string();
    let open = |extra: &[&str]| open_account(server, &admin, extra);
    let world = open(&["--kind", "settlement", "--unbounded"]);
    let alice = open(&["--kind", "customer", "--owner", "alice"]);
    let bob = open(&["--kind", "customer", "--owner", "bob"]);
    transfer(server, &admin, &world, &alice, "100.00 EUR", &[]);
    (alice_key, alice, bob)
}

#[test]
fn a_user_verifies_an_address_and_certifies_a_transfer_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("node"), &["--dev"]);
    let admin = server.admin_key.clone();
    let (alice_key, alice, bob) = alice_and_bob(&server);

    // Alice joins the directory and adds her phone (a dev inbox) as second channel.
    let out = ok(cli(&server, &alice_key, &["subscriber", "add", "alice"]));
    assert_eq!(out.trim(), "subscriber alice");
    let out = ok(cli(
        &server,
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
    ));
    let session = field(&out, "session").to_string();
    assert_eq!(session.len(), 32, "{out}");
    assert!(
        out.contains(&format!("confirm with `tally auth confirm {session}`")),
        "{out}"
    );
    assert!(
        field(&out, "authorises").starts_with("Add this dev address to Tally user alice"),
        "{out}"
    );
    let addresses = || {
        ok(cli(
            &server,
            &alice_key,
            &["subscriber", "address", "list", "alice"],
        ))
    };
    let listed = addresses();
    assert!(
        listed.contains("alice-phone") && listed.contains("not verified"),
        "{listed}"
    );
    let code = code_for(&server, &admin, "alice-phone", &session);
    let out = ok(cli(
        &server,
        &alice_key,
        &["auth", "confirm", &session, "--code", &code],
    ));
    assert!(out.contains("\nauthorized\n"), "{out}");
    assert!(out.contains("address verified"), "{out}");
    assert!(!out.contains(&code), "the code is never printed: {out}");
    let listed = addresses();
    assert!(
        listed.contains("alice-phone") && listed.contains("verified 20"),
        "{listed}"
    );

    // Alice certifies a transfer to Bob: the code is bound to it, nothing moves yet.
    let out = ok(cli(
        &server,
        &alice_key,
        &[
            "auth",
            "transfer",
            "--user",
            "alice",
            "--from",
            &alice,
            "--to",
            &bob,
            "--amount",
            "12.50 EUR",
            "--memo",
            "rent",
            "--channel",
            "dev",
        ],
    ));
    let session = field(&out, "session").to_string();
    assert_eq!(field(&out, "application"), "transfer");
    assert_eq!(
        field(&out, "authorises"),
        format!("12.50 EUR to bob (account {bob})")
    );
    assert!(out.contains(&format!("from account {alice}")), "{out}");
    assert!(out.contains("for: rent"), "{out}");
    assert_eq!(
        field(&out, "code sent to"),
        "dev alice-phone (delivery sent)"
    );
    assert!(field(&out, "expires").starts_with("20"), "{out}");
    let balance = |key: &str, account: &str| {
        field(
            &ok(cli(&server, key, &["account", "show", account])),
            "balance",
        )
        .to_string()
    };
    assert_eq!(balance(&alice_key, &alice), "100.00 EUR");

    // A wrong code is refused with its cause, executes nothing, and exits 1.
    let code = code_for(&server, &admin, "alice-phone", &session);
    let wrong = if code.starts_with('0') { "1" } else { "0" }.repeat(code.len());
    let (failed, _, err) = cli(
        &server,
        &alice_key,
        &["auth", "confirm", &session, "--code", &wrong],
    );
    assert!(!failed, "a wrong code must fail");
    assert!(err.contains("not authorized: wrong_code"), "{err}");
    assert!(err.contains("attempts left"), "{err}");
    assert_eq!(balance(&alice_key, &alice), "100.00 EUR");

    // The right code, typed at the prompt: the transfer posts and a certificate comes back.
    let (confirmed, out, err) = confirm_typed(&server, &alice_key, &session, &code);
    assert!(confirmed, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("authorises   12.50 EUR to bob"), "{out}");
    assert!(out.contains("\nauthorized\n"), "{out}");
    assert!(
        field(&out, "certificate").starts_with("transfer for session"),
        "{out}"
    );
    assert!(
        !out.contains(&code) && !err.contains(&code),
        "the code is never printed"
    );
    assert_eq!(balance(&alice_key, &alice), "87.50 EUR");
    assert_eq!(balance(&admin, &bob), "12.50 EUR");

    // The code is single use.
    let (again, _, err) = cli(
        &server,
        &alice_key,
        &["auth", "confirm", &session, "--code", &code],
    );
    assert!(!again && err.contains("session_closed"), "{err}");
    assert_eq!(balance(&alice_key, &alice), "87.50 EUR");

    // Below Bob's threshold a transfer is "normal": executed at once, no code.
    ok(cli(
        &server,
        &admin,
        &["rule", "set", "bob", "--secured-above", "5.00 EUR"],
    ));
    let out = ok(cli(
        &server,
        &alice_key,
        &[
            "auth", "transfer", "--user", "alice", "--from", &alice, "--to", &bob, "--amount",
            "2.00 EUR", "--memo", "coffee",
        ],
    ));
    assert!(out.contains("executed at once"), "{out}");
    assert_eq!(field(&out, "state"), "posted");
    assert_eq!(field(&out, "amount"), "2.00 EUR");
    assert_eq!(balance(&alice_key, &alice), "85.50 EUR");

    // The statement shows the certified transfer (the normal one is not billed) and totals.
    let out = ok(cli(&server, &alice_key, &["statement", "alice"]));
    let line = out
        .lines()
        .find(|l| l.contains(" transfer "))
        .unwrap_or_else(|| panic!("no transfer line in:\n{out}"));
    assert!(
        line.contains("12.50 EUR") && line.contains("to bob") && line.contains("rent"),
        "{line}"
    );
    assert!(!out.contains("coffee"), "{out}");
    assert_eq!(field(&out, "total"), "12.50 EUR");
    assert!(
        field(&out, "session time").ends_with(" s") || out.contains(" s ("),
        "{out}"
    );
    let sessions = ok(cli(&server, &alice_key, &["auth", "sessions", "alice"]));
    assert!(
        sessions
            .lines()
            .any(|l| l.starts_with(&session) && l.contains("verified")),
        "{sessions}"
    );
    let certificates = ok(cli(&server, &alice_key, &["certificates", "alice"]));
    assert!(
        certificates.contains(&format!("transfer            session {session}")),
        "{certificates}"
    );

    // The journal still balances.
    assert_audit_passes(&server);
}

#[test]
fn a_transfer_above_the_threshold_asks_for_the_code_and_runs_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("node"), &["--dev"]);
    let admin = server.admin_key.clone();
    let (alice_key, alice, bob) = alice_and_bob(&server);
    ok(cli(&server, &alice_key, &["subscriber", "add", "alice"]));
    let out = ok(cli(
        &server,
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
    ));
    let verification = field(&out, "session").to_string();
    let code = code_for(&server, &admin, "alice-phone", &verification);
    assert!(confirm_typed(&server, &alice_key, &verification, &code).0);
    // Payments to bob above 5.00 EUR need a code.
    ok(cli(
        &server,
        &admin,
        &["rule", "set", "bob", "--secured-above", "5.00 EUR"],
    ));

    // The CLI shows what is being paid, asks for the code (typed on stdin), and runs it once.
    let mut child = tally_for(&server, &alice_key)
        .args([
            "transfer",
            "--from",
            &alice,
            "--to",
            &bob,
            "--amount",
            "6.00 EUR",
            "--idempotency-key",
            "above",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tally");
    let mut confirm_session = String::new();
    common::wait_until("the confirmation code", || {
        let out = ok(cli(&server, &admin, &["inbox", "alice-phone", "--json"]));
        let messages: serde_json::Value = serde_json::from_str(&out).expect("inbox JSON");
        match messages.as_array().expect("a list").iter().find_map(|m| {
            m.pointer("/data/session")
                .and_then(|s| s.as_str())
                .filter(|s| *s != verification)
                .map(str::to_string)
        }) {
            Some(s) => {
                confirm_session = s;
                true
            }
            None => false,
        }
    });
    let code = code_for(&server, &admin, "alice-phone", &confirm_session);
    writeln!(child.stdin.take().expect("stdin"), "{code}").expect("type the code");
    let (paid, stdout, stderr) = outcome(child.wait_with_output().expect("wait"));
    assert!(paid, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("confirmation required") && stderr.contains("6.00 EUR"),
        "what is paid is shown before the code: {stderr}"
    );
    assert_eq!(field(&stdout, "amount"), "6.00 EUR", "{stdout}");
    let shown = ok(cli(&server, &admin, &["account", "show", &bob]));
    assert_eq!(field(&shown, "balance"), "6.00 EUR", "{shown}");
    // The same command again is its replay: nothing moves twice, no second code.
    let again = ok(cli(
        &server,
        &alice_key,
        &[
            "transfer",
            "--from",
            &alice,
            "--to",
            &bob,
            "--amount",
            "6.00 EUR",
            "--idempotency-key",
            "above",
        ],
    ));
    assert_eq!(field(&again, "amount"), "6.00 EUR");
    let shown = ok(cli(&server, &admin, &["account", "show", &bob]));
    assert_eq!(field(&shown, "balance"), "6.00 EUR", "{shown}");
    assert_audit_passes(&server);
}
