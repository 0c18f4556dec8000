//! The PKCS#11 backend of a receipt token, through the `tally` binary against a real SoftHSM2:
//! the customer's Ed25519 key is made inside the token, the token file records only where it
//! is, `receipt sign` signs in the token and the package verifies offline; a wrong or missing
//! PIN is refused clearly, and a warrant (which needs a software key) says so.
//!
//! Skipped with a note when SoftHSM2 is not installed (`apt-get install softhsm2`);
//! `TALLY_REQUIRE_SOFTHSM=1` (CI) makes it fail instead.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use common::{Server, cli, field, ok, outcome, tally_for};
use std::path::{Path, PathBuf};
use std::process::Command;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "7nq4-user";

/// SoftHSM2 and its tool are there, or the test is skipped (failed under CI).
fn softhsm_available() -> bool {
    let util = Command::new("softhsm2-util").arg("--version").output();
    if Path::new(MODULE).exists() && util.is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(
        std::env::var("TALLY_REQUIRE_SOFTHSM").as_deref() != Ok("1"),
        "TALLY_REQUIRE_SOFTHSM=1 but SoftHSM2 is missing ({MODULE}, softhsm2-util; apt-get install softhsm2)"
    );
    eprintln!("skipped: SoftHSM2 missing ({MODULE}; apt-get install softhsm2)");
    false
}

/// A private SoftHSM2 configuration (its own token directory) with one token, "tally".
fn softhsm(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", "tally"])
        .args(["--pin", PIN, "--so-pin", "5678-so"])
        .output()
        .unwrap();
    let (good, out, err) = outcome(out);
    assert!(good, "softhsm2-util --init-token:\n{out}\n{err}");
    conf
}

#[test]
fn a_customer_key_in_softhsm_signs_receipts_that_verify() {
    if !softhsm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let conf = softhsm(dir.path());
    let server = Server::start(&dir.path().join("data"), &[]);
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
    std::fs::write(work.join("pin"), format!("{PIN}\n")).unwrap();
    std::fs::write(work.join("wrong-pin"), "0000-nope\n").unwrap();
    let run = |key: &str, args: &[&str], pin_env: Option<&str>| {
        let mut c = tally_for(&server, key);
        c.current_dir(&work)
            .env("SOFTHSM2_CONF", &conf)
            .env_remove("TALLY_PKCS11_PIN");
        if let Some(pin) = pin_env {
            c.env("TALLY_PKCS11_PIN", pin);
        }
        outcome(c.args(args).output().unwrap())
    };

    // bob (manager) has a software token; alice's signing key is made inside SoftHSM.
    ok(run(
        &admin,
        &[
            "token",
            "init",
            "--holder",
            "bob",
            "--role",
            "manager",
            "--file",
            "bob.token",
        ],
        None,
    ));
    let out = ok(run(
        &admin,
        &[
            "token",
            "init",
            "--holder",
            "alice",
            "--file",
            "alice.token",
            "--pkcs11-module",
            MODULE,
            "--pkcs11-token-label",
            "tally",
            "--pkcs11-pin-file",
            "pin",
        ],
        None,
    ));
    assert!(field(&out, "file").contains("PKCS#11 token"), "{out}");
    let key_fingerprint = field(&out, "key").to_string();

    // The token file holds no Ed25519 private key and no PIN, only where the key is.
    let text = std::fs::read_to_string(work.join("alice.token")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(file.get("signing_key").is_none(), "{text}");
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains(PIN),
        "{text}"
    );
    let p = &file["pkcs11"];
    assert_eq!(p["module"], MODULE, "{text}");
    assert_eq!(p["token_label"], "tally", "{text}");
    assert!(
        p["key_label"].as_str().unwrap().starts_with("tally-token-"),
        "{text}"
    );

    ok(run(
        &bob,
        &[
            "warrant",
            "issue",
            "--token",
            "bob.token",
            "--counterparty",
            "alice",
        ],
        None,
    ));
    let offer = |text: &str, extra: &[&str]| -> String {
        let mut args = vec!["receipt", "offer", "--party-a", "bob", "--party-b", "alice"];
        args.extend_from_slice(&["--text", text]);
        args.extend_from_slice(extra);
        let out = ok(run(&bob, &args, None));
        field(&out, "transaction").to_string()
    };

    // A wrong PIN, and no PIN, are refused clearly; nothing is signed.
    let tx = offer("Order 7007\nTotal 3.00 EUR\n", &[]);
    let sign = ["receipt", "sign", &tx, "--token", "alice.token", "--yes"];
    let (good, _, err) = run(
        &alice,
        &[&sign[..], &["--pkcs11-pin-file", "wrong-pin"]].concat(),
        None,
    );
    assert!(!good && err.contains("wrong PIN"), "{err}");
    let (good, _, err) = run(&alice, &sign, None);
    assert!(
        !good && err.contains("--pkcs11-pin-file") && err.contains("TALLY_PKCS11_PIN"),
        "{err}"
    );
    let shown = ok(run(&alice, &["receipt", "show", &tx], None));
    assert_eq!(field(&shown, "state"), "offered", "{shown}");

    // The right PIN (file): the token signs, the node writes, the package verifies offline.
    let out = ok(run(
        &alice,
        &[&sign[..], &["--pkcs11-pin-file", "pin"]].concat(),
        None,
    ));
    assert!(out.contains("receipt verified"), "{out}");
    let ca = server.data.join("ca.pem");
    let verify = |file: &str| {
        let mut c = common::tally();
        c.current_dir(&work)
            .args(["receipt", "verify", file, "--ca"])
            .arg(&ca);
        ok(outcome(c.output().unwrap()))
    };
    let out = verify(&format!("receipt-{tx}.tally"));
    assert!(out.contains("receipt verified"), "{out}");
    assert!(field(&out, "party B").starts_with("alice"), "{out}");
    assert!(
        field(&out, "party B").contains("signed by the party"),
        "{out}"
    );
    let fingerprint = field(&out, "party B").split_whitespace().nth(2).unwrap();
    assert_eq!(fingerprint, key_fingerprint, "{out}");

    // The PIN from TALLY_PKCS11_PIN; and a fair exchange, whose BLS key stays in the file.
    let tx = offer("Order 8008\n", &[]);
    let out = ok(run(
        &alice,
        &["receipt", "sign", &tx, "--token", "alice.token", "--yes"],
        Some(PIN),
    ));
    assert!(out.contains("receipt verified"), "{out}");
    let tx = offer("Fair order 9009\n", &["--fair"]);
    let out = ok(run(
        &alice,
        &["receipt", "sign", &tx, "--token", "alice.token", "--yes"],
        None,
    ));
    assert!(out.contains("receipt verified"), "{out}");
    let out = verify(&format!("receipt-{tx}.tally"));
    assert!(field(&out, "version").starts_with("2 "), "{out}");

    // In the token the private key is sensitive and was never extractable (checked in a
    // child process: SoftHSM2 reads SOFTHSM2_CONF from its own environment).
    let label = p["key_label"].as_str().unwrap();
    let probe = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "key_attributes_probe",
            "--ignored",
            "--nocapture",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .env("TALLY_PROBE_KEY_LABEL", label)
        .output()
        .unwrap();
    let (good, out, err) = outcome(probe);
    assert!(good && out.contains("1 passed"), "{out}\n{err}");

    // A warrant needs a software key: said plainly.
    let (good, _, err) = run(
        &alice,
        &[
            "warrant",
            "issue",
            "--token",
            "alice.token",
            "--counterparty",
            "bob",
        ],
        Some(PIN),
    );
    assert!(!good && err.contains("needs a software token key"), "{err}");
}

/// Run by the test above in a child process: the private key labelled
/// `TALLY_PROBE_KEY_LABEL` is a token object, sensitive, never extractable, and its value
/// cannot be read.
#[test]
#[ignore = "run by a_customer_key_in_softhsm_signs_receipts_that_verify"]
fn key_attributes_probe() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    let Ok(label) = std::env::var("TALLY_PROBE_KEY_LABEL") else {
        eprintln!("skipped: run only by a_customer_key_in_softhsm_signs_receipts_that_verify");
        return;
    };
    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx.get_slots_with_initialized_token().unwrap()[0];
    let session = ctx.open_ro_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.into_bytes()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let attrs = session
        .get_attributes(
            keys[0],
            &[
                AttributeType::Token,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Sign,
                AttributeType::Value,
            ],
        )
        .unwrap();
    for want in [
        Attribute::Token(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::NeverExtractable(true),
        Attribute::Sign(true),
    ] {
        assert!(attrs.contains(&want), "{want:?} not in {attrs:?}");
    }
    assert!(
        !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
        "{attrs:?}"
    );
}
