//! Locked delivery end to end through the `tally` binary: a merchant adds a product, a buyer
//! buys it four times, the package downloads (and resumes), verifies offline, is refused when
//! truncated, is paid by each of the three paths (ledger payment by reference code, a signed
//! receiver notification, acknowledgement with debit), unlocks to the original bytes, and the
//! report and the ledger agree. A wrong amount releases nothing and is refunded.

mod common;

use common::{
    Server, assert_audit_passes, cli, field, ok, open_account, outcome, tally, tally_for, transfer,
    wait_until,
};
use rand::Rng as _;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tally_kernel::crypto::SigningKey;
use tally_kernel::crypto::kdf::{hmac_sha256, sha256};

const PRICE: &str = "9.90 EUR";
const TITLE: &str = "Night Songs";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> String {
    hex(&sha256(&std::fs::read(path).unwrap_or_else(|e| {
        panic!("reading {}: {e}", path.display())
    })))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Runs the CLI against `server` with `key` in the directory `cwd`.
fn cli_in(server: &Server, key: &str, cwd: &Path, args: &[&str]) -> (bool, String, String) {
    outcome(
        tally_for(server, key)
            .current_dir(cwd)
            .args(args)
            .output()
            .expect("run tally"),
    )
}

/// A sale bought with `tally buy` in `work`: its id, reference code and package file.
struct Bought {
    sale: String,
    reference: String,
    file: PathBuf,
}

fn buy(server: &Server, key: &str, work: &Path, product: &str) -> Bought {
    let out = ok(cli_in(
        server,
        key,
        work,
        &[
            "buy",
            product,
            "--channel",
            "dev",
            "--address",
            "alice-inbox",
            "--name",
            "Alice",
        ],
    ));
    let sale = field(&out, "sale").to_string();
    let reference = field(&out, "reference").to_string();
    let name = format!("{reference}.tallypkg");
    assert!(field(&out, "file").starts_with(&name), "{out}");
    assert_eq!(field(&out, "price"), PRICE, "{out}");
    let file = work.join(name);
    assert!(file.is_file(), "{} missing", file.display());
    assert!(!work.join(format!("{reference}.tallypkg.part")).exists());
    Bought {
        sale,
        reference,
        file,
    }
}

/// A reference code with its first character changed (a typo the check character catches).
fn typo(reference: &str) -> String {
    let mut chars: Vec<char> = reference.chars().collect();
    chars[0] = if chars[0] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

/// POSTs a notification signed with `secret` (HMAC-SHA256, docs/protocols/delivery.md) to the
/// receiver `name`; the status and the JSON answer.
fn notify(server: &Server, name: &str, secret: &[u8], body: &str) -> (u16, Value) {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    let signed = [
        tally_proto::delivery::notification::DOMAIN,
        now_s.as_bytes(),
        b".",
        body.as_bytes(),
    ]
    .concat();
    let signature = format!("hmac-sha256={}", hex(&hmac_sha256(secret, &signed)));
    let url = format!("{}/v1/receivers/{name}/notifications", server.url);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let resp = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .header("Tally-Timestamp", &now_s)
            .header("Tally-Signature", &signature)
            .body(body.to_string())
            .send()
            .await
            .expect("POST notification");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    })
}

#[test]
fn a_product_is_sold_as_a_locked_package_paid_three_ways_and_unlocked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("node"), &["--dev"]);
    let admin = server.admin_key.clone();
    let key_for = |role: &str, owner: &str| {
        field(
            &ok(cli(
                &server,
                &admin,
                &["api-key", "create", "--role", role, "--owner", owner],
            )),
            "key",
        )
        .to_string()
    };
    let shop_key = key_for("merchant", "shop");
    let alice_key = key_for("customer", "alice");
    let node_key = SigningKey::from_pkcs8_pem(
        &std::fs::read_to_string(server.data.join("node.key")).expect("node.key"),
    )
    .expect("node key PEM")
    .verifying_key()
    .to_hex();

    // Accounts: the operator's settlement accounts (one funds Alice, one stands for the bank
    // that notifies payments), the shop's, and Alice's with 100.00 EUR.
    let open = |extra: &[&str]| open_account(&server, &admin, extra);
    let world = open(&["--kind", "settlement", "--unbounded"]);
    let bank = open(&["--kind", "settlement", "--unbounded"]);
    let shop = open(&["--kind", "merchant", "--owner", "shop"]);
    let alice = open(&["--kind", "customer", "--owner", "alice"]);
    transfer(&server, &admin, &world, &alice, "100.00 EUR", &[]);
    let balance = |key: &str, account: &str| {
        field(
            &ok(cli(&server, key, &["account", "show", account])),
            "balance",
        )
        .to_string()
    };

    // The product: 3 MiB (and a bit, so the last stream chunk is partial) of random bytes,
    // and a document.
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("work dir");
    let files = dir.path().join("files");
    std::fs::create_dir(&files).expect("files dir");
    let song = files.join("song.bin");
    let mut bytes = vec![0_u8; 3 * 1024 * 1024 + 12_345];
    rand::rng().fill_bytes(&mut bytes);
    std::fs::write(&song, &bytes).expect("write song");
    let readme = files.join("readme.txt");
    std::fs::write(&readme, "Play loud.\n").expect("write readme");
    let song_sha = sha256_file(&song);

    let out = ok(cli(
        &server,
        &shop_key,
        &[
            "product",
            "add",
            "--title",
            TITLE,
            "--price",
            PRICE,
            "--pay-to",
            &shop,
            "--file",
            path_str(&song),
            "--doc",
            path_str(&readme),
            "--licence",
            "Personal use only.",
            "--instructions",
            "Pay by the reference code, then unlock.",
        ],
    ));
    let product = field(&out, "product").to_string();
    assert_eq!(field(&out, "state"), "active", "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("song.bin") && l.contains("product") && l.contains(&song_sha)),
        "{out}"
    );
    assert!(out.contains("readme.txt"), "{out}");
    let listed = ok(cli(&server, &alice_key, &["product", "list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&product) && l.contains("active") && l.contains(TITLE)),
        "{listed}"
    );

    // A sale: the package lands as REFERENCE.tallypkg in the current directory.
    let first = buy(&server, &alice_key, &work, &product);
    let package = std::fs::read(&first.file).expect("package");

    // An interrupted download resumes where it stopped and ends with the same bytes.
    let again = work.join("again.tallypkg");
    let half = package.len() / 2;
    std::fs::write(work.join("again.tallypkg.part"), &package[..half]).expect("write part");
    let (done, out, err) = cli(
        &server,
        &alice_key,
        &[
            "package",
            "download",
            &first.sale,
            "--out",
            path_str(&again),
        ],
    );
    assert!(done, "stdout: {out}\nstderr: {err}");
    assert!(err.contains(&format!("resuming at {half} bytes")), "{err}");
    assert!(
        !err.contains("starting over"),
        "the node sent the rest only: {err}"
    );
    assert_eq!(std::fs::read(&again).expect("again"), package);
    assert!(!work.join("again.tallypkg.part").exists());

    // Inspect, offline: the instruction file of a package that verified.
    let out = ok(cli(
        &server,
        &alice_key,
        &[
            "package",
            "inspect",
            path_str(&first.file),
            "--trust",
            &node_key,
        ],
    ));
    assert_eq!(field(&out, "title"), TITLE, "{out}");
    assert_eq!(field(&out, "amount"), PRICE, "{out}");
    assert_eq!(field(&out, "reference"), first.reference, "{out}");
    assert!(
        out.contains("song.bin") && out.contains("readme.txt"),
        "{out}"
    );
    assert!(out.contains("the key you trust"), "{out}");

    // A truncated copy is refused, and nothing from its instruction file is shown.
    let cut = work.join("cut.tallypkg");
    std::fs::write(&cut, &package[..package.len() - 1000]).expect("write cut");
    let (accepted, out, err) = cli(&server, &alice_key, &["package", "inspect", path_str(&cut)]);
    let all = format!("{out}{err}");
    assert!(!accepted, "{all}");
    assert!(
        all.contains("package refused:") && all.contains("truncated"),
        "{all}"
    );
    for shown in [TITLE, "9.90", &first.reference, "Personal use", "Pay by"] {
        assert!(
            !all.contains(shown),
            "{shown:?} shown for a refused package: {all}"
        );
    }
    // Signed by another key than the one trusted: refused too.
    let other = SigningKey::generate().verifying_key().to_hex();
    let (accepted, out, err) = cli(
        &server,
        &alice_key,
        &[
            "package",
            "inspect",
            path_str(&first.file),
            "--trust",
            &other,
        ],
    );
    assert!(!accepted && err.contains("package refused:"), "{out}{err}");
    assert!(!out.contains(TITLE) && !err.contains(TITLE), "{out}{err}");

    // Without --trust the signer is checked against the key the selling node publishes
    // (GET /v1/node); another node's key, or no node to ask, is never a plain success.
    let out = ok(cli(
        &server,
        &alice_key,
        &["package", "inspect", path_str(&first.file)],
    ));
    assert!(
        field(&out, "signed by").contains(&format!("the key the node at {} publishes", server.url)),
        "{out}"
    );
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let other_node = Server::start(&elsewhere.path().join("data"), &[]);
    let (accepted, _, err) = cli(
        &other_node,
        &other_node.admin_key,
        &["package", "inspect", path_str(&first.file)],
    );
    assert!(!accepted && err.contains("package NOT trusted"), "{err}");
    drop(other_node);
    let unreachable = common::outcome(
        common::tally()
            .args(["package", "inspect", path_str(&first.file)])
            .env("TALLY_SERVER", "http://127.0.0.1:9")
            .env_remove("TALLY_API_KEY")
            .output()
            .expect("run"),
    );
    let (accepted, out, err) = unreachable;
    assert!(
        !accepted && err.contains("signer NOT verified"),
        "{out}{err}"
    );
    assert!(field(&out, "pay to").contains("UNVERIFIED"), "{out}");

    // Not paid yet: no key; a made-up key does not open the package.
    let (unlocked, out, err) = cli(
        &server,
        &alice_key,
        &["package", "unlock", path_str(&first.file), "--fetch"],
    );
    assert!(!unlocked && err.contains("not paid"), "{out}{err}");
    let (unlocked, out, err) = cli(
        &server,
        &alice_key,
        &[
            "package",
            "unlock",
            path_str(&first.file),
            "--key",
            &"00".repeat(32),
        ],
    );
    assert!(!unlocked, "{out}{err}");
    assert!(
        err.contains("this unlock key does not belong to this package"),
        "{err}"
    );
    assert!(!work.join(&first.reference).exists());

    // A typo in the reference is refused before any request (no node listens on port 9).
    let (paid, out, err) = outcome(
        tally()
            .env("TALLY_SERVER", "http://127.0.0.1:9")
            .env("TALLY_API_KEY", &alice_key)
            .args([
                "pay",
                "--reference",
                &typo(&first.reference),
                "--from",
                &alice,
            ])
            .output()
            .expect("run tally"),
    );
    assert!(!paid, "{out}{err}");
    assert!(
        err.contains("reference code: the check character does not match"),
        "{err}"
    );
    assert!(!err.contains("cannot reach"), "{err}");

    // Path (a): a ledger payment quoting the reference code (the price by default).
    let out = ok(cli(
        &server,
        &alice_key,
        &["pay", "--reference", &first.reference, "--from", &alice],
    ));
    assert!(field(&out, "status").starts_with("matched"), "{out}");
    assert_eq!(field(&out, "amount"), PRICE, "{out}");
    assert!(field(&out, "sale").ends_with("released"), "{out}");

    // Path (b): the bank notifies a payment quoting the second sale's code, signed.
    let second = buy(&server, &alice_key, &work, &product);
    let secret = b"secret shared with the bank";
    let secret_file = dir.path().join("bank.secret");
    std::fs::write(&secret_file, secret).expect("write secret");
    let out = ok(cli(
        &server,
        &admin,
        &[
            "receiver",
            "set",
            "bank",
            "--account",
            &bank,
            "--hmac-secret-file",
            path_str(&secret_file),
        ],
    ));
    assert!(
        field(&out, "posts to").ends_with("/v1/receivers/bank/notifications"),
        "{out}"
    );
    let paid_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let body = serde_json::json!({"id": "bank-tx-1", "reference": second.reference,
                                  "amount": PRICE, "paid_at": paid_at, "payer": "Alice"})
    .to_string();
    let (status, payment) = notify(&server, "bank", secret, &body);
    assert_eq!(status, 200, "{payment}");
    assert_eq!(payment["status"], "matched", "{payment}");
    // A replay changes nothing and gets the same answer.
    let (status, replay) = notify(&server, "bank", secret, &body);
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["id"], payment["id"], "{replay}");
    // Signed with another secret: refused.
    let (status, _) = notify(&server, "bank", b"not the secret", &body);
    assert!((400..500).contains(&status), "{status}");

    // Path (c): the acknowledgement of the third package, signed with alice's own key, with
    // an immediate debit.
    let third = buy(&server, &alice_key, &work, &product);
    let alice_pem = work.join("alice.pem");
    let alice_signing = tally_kernel::crypto::SigningKey::generate();
    std::fs::write(
        &alice_pem,
        alice_signing.to_pkcs8_pem().expect("pem").expose(),
    )
    .expect("write pem");
    let out = ok(cli(
        &server,
        &alice_key,
        &[
            "package",
            "inspect",
            path_str(&third.file),
            "--trust",
            &node_key,
            "--ack",
            "--debit-account",
            &alice,
            "--sign-key",
            path_str(&alice_pem),
        ],
    ));
    assert_eq!(field(&out, "title"), TITLE, "{out}");
    assert!(out.contains("acknowledged: delivered 20"), "{out}");
    assert_eq!(field(&out, "state"), "released", "{out}");

    // Each paid package unlocks to the original bytes.
    for sale in [&first, &second, &third] {
        let out = ok(cli(
            &server,
            &alice_key,
            &["package", "unlock", path_str(&sale.file), "--fetch"],
        ));
        let unpacked = work.join(&sale.reference);
        assert_eq!(sha256_file(&unpacked.join("song.bin")), song_sha, "{out}");
        assert_eq!(
            std::fs::read(unpacked.join("readme.txt")).expect("readme"),
            b"Play loud.\n"
        );
        assert!(
            out.lines().any(|l| l.contains("song.bin")
                && l.contains(&song_sha)
                && l.ends_with("verified")),
            "{out}"
        );
    }

    // A wrong amount is kept as a mismatch, releases nothing, and is refunded.
    let fourth = buy(&server, &alice_key, &work, &product);
    let (paid, out, err) = cli(
        &server,
        &alice_key,
        &[
            "pay",
            "--reference",
            &fourth.reference,
            "--from",
            &alice,
            "--amount",
            "1.00 EUR",
        ],
    );
    assert!(!paid, "a mismatch exits non-zero: {out}{err}");
    assert!(field(&out, "status").starts_with("mismatch"), "{out}{err}");
    let mismatch = field(&out, "payment").to_string();
    let (unlocked, out, err) = cli(
        &server,
        &alice_key,
        &["package", "unlock", path_str(&fourth.file), "--fetch"],
    );
    assert!(!unlocked && err.contains("not paid"), "{out}{err}");
    let out = ok(cli(&server, &shop_key, &["payment", "refund", &mismatch]));
    assert!(field(&out, "status").starts_with("refunded"), "{out}");

    // The report lists the four sales: three paid at the price, one open.
    let out = ok(cli(
        &server,
        &shop_key,
        &["report", "sales", "--product", &product, "--format", "json"],
    ));
    let rows: Vec<Value> = serde_json::from_str(&out).expect("report JSON");
    assert_eq!(rows.len(), 4, "{out}");
    for sale in [&first, &second, &third] {
        let row = rows
            .iter()
            .find(|r| r["reference"] == sale.reference.as_str())
            .unwrap_or_else(|| panic!("no row for {} in {out}", sale.reference));
        assert_eq!(row["paid"], PRICE, "{row}");
        assert_eq!(row["state"], "released", "{row}");
    }
    let open_row = rows
        .iter()
        .find(|r| r["reference"] == fourth.reference.as_str())
        .unwrap_or_else(|| panic!("no row for {} in {out}", fourth.reference));
    assert_eq!(open_row["state"], "open", "{open_row}");
    let table = ok(cli(
        &server,
        &shop_key,
        &["report", "sales", "--product", &product],
    ));
    assert!(
        table.contains(&first.reference) && table.contains("4 sales"),
        "{table}"
    );

    // The money: the shop got three prices; Alice paid two (the bank paid one) and got the
    // wrong amount back.
    assert_eq!(balance(&shop_key, &shop), "29.70 EUR");
    assert_eq!(balance(&alice_key, &alice), "80.20 EUR");

    // A lost key: the complaint is answered.
    let out = ok(cli(
        &server,
        &alice_key,
        &["complaint", "key-lost", "--reference", &first.reference],
    ));
    assert_eq!(field(&out, "complaint"), "key_lost", "{out}");

    // Withdrawn: no new sales, but sold packages stay downloadable.
    let out = ok(cli(&server, &shop_key, &["product", "withdraw", &product]));
    assert_eq!(field(&out, "state"), "withdrawn", "{out}");
    let (bought, out, err) = cli_in(
        &server,
        &alice_key,
        &work,
        &[
            "buy",
            &product,
            "--channel",
            "dev",
            "--address",
            "alice-inbox",
        ],
    );
    assert!(!bought, "{out}{err}");
    let later = work.join("later.tallypkg");
    ok(cli(
        &server,
        &alice_key,
        &[
            "package",
            "download",
            &first.sale,
            "--out",
            path_str(&later),
        ],
    ));
    assert_eq!(std::fs::read(&later).expect("later"), package);

    assert_audit_passes(&server);
}

/// `tally serve --demo` (the README's first command) seeds a shop a browser can buy from, says
/// where in its start-up lines, and seeding again on restart changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_node_opens_a_shop_for_the_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut product = String::new();
    for start in 0..2 {
        let server = Server::start(&data, &["--demo"]);
        let mut line = String::new();
        wait_until("the demo line", || {
            let log = server.log.lock().expect("log");
            match log.iter().find(|l| l.starts_with("demo: ")) {
                Some(l) => {
                    line = l.clone();
                    true
                }
                None => false,
            }
        });
        assert!(
            line.contains("\"The Tally field guide\" (4.90 EUR)") && line.contains("`ana`"),
            "{line}"
        );
        let http = reqwest::Client::new();
        let home = http
            .get(format!("{}/", server.url))
            .send()
            .await
            .expect("GET /")
            .text()
            .await
            .expect("html");
        let links: Vec<&str> = home.matches("href=\"/p/").collect();
        assert_eq!(
            links.len(),
            1,
            "one product on sale after start {start}: {home}"
        );
        let id: String = home[home.find("href=\"/p/").expect("link") + 9..]
            .chars()
            .take_while(|c| *c != '"')
            .collect();
        if start == 0 {
            product = id.clone();
        }
        assert_eq!(id, product, "the same product after a restart");
        assert!(line.contains(&format!("/p/{product}")), "{line}");
        let page = http
            .get(format!("{}/p/{product}", server.url))
            .send()
            .await
            .expect("GET /p/…");
        assert_eq!(page.status(), reqwest::StatusCode::OK);
        let page = page.text().await.expect("html");
        assert!(
            page.contains("tally-press") && page.contains("dev inbox"),
            "{page}"
        );
        // ana's 50.00 EUR, credited once whatever the number of starts.
        let accounts = cli(
            &server,
            &server.admin_key,
            &["account", "list", "--owner", "ana"],
        );
        let out = ok(accounts);
        assert!(out.contains("50.00 EUR"), "{out}");
        assert_audit_passes(&server);
    }
}
